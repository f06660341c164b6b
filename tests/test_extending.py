"""The extension points of docs/extending.md: each template in templates/ is imported the way a user
would (``SSL_INPAINT_PLUGINS``) and run, and each kind owns what the toolkit needs to know about it."""

from __future__ import annotations

import os
import re
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


def test_the_generator_template_keeps_the_encoder_interface():
    import torch

    module = load_plugin(str(TEMPLATES / "custom_generator.py"))
    generator = module.ResidualGenerator(image_channels=3, image_size=32, base_channels=8)
    holed = torch.zeros(2, 4, 32, 32)
    assert generator(holed).shape == (2, 3, 32, 32)
    maps = generator.encoder(holed)
    assert [m.shape[1] for m in maps] == generator.encoder.out_channels
    from ssl_inpaint.models import build_encoder

    rebuilt = build_encoder(generator.encoder.arch)
    assert rebuilt.load_state_dict(generator.encoder.state_dict()) is not None  # every tensor has its place
    with pytest.raises(UserError, match="multiple of 8"):
        module.ResidualGenerator(image_channels=3, image_size=36)


def test_the_discriminator_template_judges_whole_images_and_crops():
    import torch

    from ssl_inpaint.models import ModelOptions

    load_plugin(str(TEMPLATES / "custom_discriminator.py"))
    options = ModelOptions(image_size=32, discriminator="spectral", global_d=True, local_d=True, base_channels=8)
    from ssl_inpaint.models import make_discriminators

    whole, local = make_discriminators(options, 3)
    assert whole(torch.zeros(2, 3, 32, 32)).shape == (2, 1) and local(torch.zeros(2, 3, 16, 16)).shape == (2, 1)
    assert make_discriminators(ModelOptions(image_size=32, discriminator="spectral", local_d=False), 3)[1] is None
    with pytest.raises(UserError, match="--discriminator spectral needs --image-size 8"):
        ModelOptions(image_size=4, widths="4", discriminator="spectral", local_d=False).check_model()  # its @refuses check


@pytest.mark.parametrize("options,message", [
    (dict(discriminator="glcic_fused", local_d=False), "glcic_fused is one global + local discriminator"),
    (dict(discriminator="pixel"), "--discriminator pixel judges the whole image"),
    (dict(discriminator="vgg16", local_d=False, global_d=False), "--discriminator vgg16 judges the whole image"),
    (dict(discriminator="patchgan", local_d=False, image_size=16, widths="8,16"), "patchgan needs --image-size 24"),
    (dict(discriminator="table2", image_size=96, widths="8,16"), "defaults to half of --image-size 96 (48 px)"),
    (dict(discriminator="table2", local_size=48), "--local-size must be a multiple of 32, got 48"),
])
def test_each_built_in_discriminator_refuses_the_options_it_cannot_honour(options, message):
    from ssl_inpaint.models import ModelOptions

    with pytest.raises(UserError, match=re.escape(message)):
        ModelOptions(**options).check_model()


@pytest.mark.slow
def test_a_template_generator_and_discriminator_pretrain_and_transfer_through_the_ssl_command(tiny_data, tmp_path):
    plugins = os.pathsep.join(str(TEMPLATES / name) for name in ("custom_generator.py", "custom_discriminator.py"))
    env = {**os.environ, PLUGINS_VARIABLE: plugins}
    common = ["--output-dir", str(tmp_path), "--image-size", "32", "--num-workers", "0"]
    subprocess.run([
        sys.executable, "-m", "ssl_inpaint", "pretrain", "--dataset", "fashion_mnist", "--data", str(tiny_data / "fashion-mnist"),
        "--split", "train", "--name", "residual", "--generator", "residual", "--base-channels", "8", "--discriminator", "spectral",
        "--global-d", "--no-local-d", "--batch-size", "2", "--val-images", "2", "--max-steps", "2", *common,
    ], env=env, check=True, capture_output=True)
    done = subprocess.run([
        sys.executable, "-m", "ssl_inpaint", "finetune", "--dataset", "fashion_mnist", "--data", str(tiny_data / "fashion-mnist"),
        "--train-split", "train", "--test-split", "test", "--labels-per-class", "2", "--init", "pretrained", "--checkpoint", str(tmp_path / "residual"),
        "--features", "pooled", "--epochs", "1", "--batch-size", "4", "--name", "ft", *common,
    ], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ft_pretrained_s0" / "metrics.json").exists()


def write_csv_dataset(folder: Path, per_split: dict[str, int]) -> Path:
    """Two classes of small RGB images (dark and bright) and a CSV listing them by split."""
    from PIL import Image

    rows = ["path,label,split"]
    for split, count in per_split.items():
        for i in range(count):
            label = "bright" if i % 2 else "dark"
            path = folder / "images" / f"{split}_{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((20, 24, 3), 200 if i % 2 else 40, np.uint8)).save(path)
            rows.append(f"images/{path.name},{label},{split}")
    table = folder / "photos.csv"
    table.write_text("\n".join(rows) + "\n")
    return table


def test_the_dataset_template_reads_images_and_labels_by_split(tmp_path):
    from ssl_inpaint.data import create_classification_dataset, create_source, labelled_kinds

    load_plugin(str(TEMPLATES / "custom_dataset.py"))
    table = write_csv_dataset(tmp_path, {"train": 6, "test": 4})
    assert len(create_source("csv", table, "train")) == 6
    test = create_classification_dataset("csv", table, "test")
    assert test.classes == ("bright", "dark") and test.targets.tolist() == [1, 0, 1, 0]
    assert test.source.load(1).size == (24, 20) and "csv" in labelled_kinds()
    with pytest.raises(UserError, match="no rows of split 'val'"):
        create_source("csv", table, "val")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nx.png,a\n")
    with pytest.raises(UserError, match="no column path, split"):
        create_source("csv", bad, "train")


@pytest.mark.slow
def test_a_template_dataset_pretrains_and_fine_tunes_through_the_ssl_command(tmp_path):
    table = write_csv_dataset(tmp_path, {"train": 12, "test": 6})
    env = {**os.environ, PLUGINS_VARIABLE: str(TEMPLATES / "custom_dataset.py")}
    common = ["--dataset", "csv", "--data", str(table), "--output-dir", str(tmp_path / "runs"), "--image-size", "16", "--num-workers", "0"]
    subprocess.run([
        sys.executable, "-m", "ssl_inpaint", "pretrain", *common, "--split", "train", "--name", "pre", "--widths", "16,32",
        "--bottleneck-channels", "8", "--batch-size", "2", "--val-images", "2", "--max-steps", "2", "--no-global-d", "--no-local-d",
        "--mask", "patches", "--patch-size", "4", "--probe-every", "1", "--probe-images", "4",
    ], env=env, check=True, capture_output=True)
    done = subprocess.run([
        sys.executable, "-m", "ssl_inpaint", "finetune", *common, "--train-split", "train", "--test-split", "test",
        "--init", "pretrained", "--checkpoint", str(tmp_path / "runs" / "pre"), "--features", "pooled", "--epochs", "1",
        "--batch-size", "4", "--name", "ft",
    ], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs" / "ft_pretrained_s0" / "metrics.json").exists()
