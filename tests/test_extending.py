"""The extension points of docs/extending.md: each template in templates/ is imported the way a user
would (``SSL_INPAINT_PLUGINS``) and run, and each kind owns what the toolkit needs to know about it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ssl_inpaint.completion import _max_hole
from ssl_inpaint.errors import UserError
from ssl_inpaint.masks import MASKS, MaskOptions
from ssl_inpaint.plugins import PLUGINS_VARIABLE, load_plugin, load_plugins

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"


def custom_mask_module():
    return load_plugin(str(TEMPLATES / "custom_mask.py"))


def test_the_mask_template_registers_a_family_built_from_the_mask_flags():
    module = custom_mask_module()
    assert load_plugin(str(TEMPLATES / "custom_mask.py")) is module  # a second load registers nothing twice
    family = MaskOptions(mask="stripes", rect_min=0.1, rect_max=0.2, rect_count=2).mask_generator()
    assert isinstance(family, module.Stripes) and (family.min_size, family.max_size, family.count) == (0.1, 0.2, 2)
    assert family.largest_hole() == 0.2 and "stripes" in MASKS


def test_the_mask_template_draws_seeded_stripes_within_its_sizes():
    family = custom_mask_module().Stripes(min_size=0.1, max_size=0.25, count=1)
    for seed in range(20):
        mask = family(40, 60, np.random.default_rng(seed))
        assert mask.shape == (1, 40, 60) and set(mask.unique().tolist()) <= {0.0, 1.0}
        rows, cols = mask[0].any(dim=1), mask[0].any(dim=0)
        horizontal = bool(cols.all())
        thickness = int(rows.sum()) if horizontal else int(cols.sum())
        side = 40 if horizontal else 60
        assert round(0.1 * side) <= thickness <= round(0.25 * side)
        assert (mask == family(40, 60, np.random.default_rng(seed))).all()


def test_the_mask_template_refuses_its_bad_pairs_in_one_line():
    custom_mask_module()
    with pytest.raises(UserError, match="--rect-min .* must not exceed --rect-max"):
        MaskOptions(mask="stripes", rect_min=0.3, rect_max=0.2).mask_generator()


@pytest.mark.parametrize("options", [
    dict(mask="centre", centre_size=0.3), dict(mask="rect", rect_min=0.2, rect_max=0.4),
    dict(mask="gaussian_rect", gauss_min=0.1, gauss_max=0.3),
])
def test_each_family_draws_no_hole_above_its_largest_hole(options):
    family = MaskOptions(**options).mask_generator()
    for seed in range(30):
        mask = family(64, 64, np.random.default_rng(seed))[0]
        side = max(int(mask.any(dim=0).sum()), int(mask.any(dim=1).sum())) / 64
        assert side <= family.largest_hole() + 1 / 64


def test_inpaint_sizes_windows_by_the_saved_family():
    assert _max_hole({"mask": "rect", "rect_min": 0.1, "rect_max": 0.3}) == 0.3
    assert _max_hole({"mask": "centre", "centre_size": 0.25}) == 0.25
    assert _max_hole({"mask": "patches", "patch_size": 4}) == 0.5
    assert _max_hole({"mask": "a_family_this_installation_lacks"}) == 0.5
    assert _max_hole({"mask": "centre", "centre_size": 0.25, "predict": "hole"}) == 0.5


def test_a_plugin_that_is_missing_or_fails_is_one_line(tmp_path):
    with pytest.raises(UserError, match="not a file"):
        load_plugins(str(tmp_path / "absent.py"))
    broken = tmp_path / "broken.py"
    broken.write_text("raise ValueError('the plugin has a bug')\n")
    with pytest.raises(UserError, match="cannot load plugin .*broken.py .*ValueError: the plugin has a bug"):
        load_plugins(str(broken))
    with pytest.raises(UserError, match="ModuleNotFoundError"):
        load_plugins("no_such_module_anywhere")


def test_the_ssl_command_names_a_broken_plugin_in_one_line(tmp_path):
    env = {**os.environ, PLUGINS_VARIABLE: str(tmp_path / "absent.py")}
    done = subprocess.run([sys.executable, "-m", "ssl_inpaint", "pretrain", "--help"], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "absent.py" in done.stderr


@pytest.mark.slow
def test_a_pretext_runs_with_the_template_mask_through_the_ssl_command(tiny_data, tmp_path):
    env = {**os.environ, PLUGINS_VARIABLE: str(TEMPLATES / "custom_mask.py")}
    subprocess.run([
        sys.executable, "-m", "ssl_inpaint", "pretrain", "--dataset", "folder", "--data", str(tiny_data / "images"),
        "--output-dir", str(tmp_path), "--name", "stripes", "--image-size", "32", "--bottleneck-channels", "16",
        "--batch-size", "2", "--val-images", "2", "--max-steps", "2", "--no-global-d", "--no-local-d",
        "--num-workers", "0", "--mask", "stripes", "--rect-min", "0.2", "--rect-max", "0.4",
    ], env=env, check=True, capture_output=True)
    assert yaml.safe_load((tmp_path / "stripes" / "config.yaml").read_text())["mask"] == "stripes"
    assert (tmp_path / "stripes" / "encoder.pt").exists()
