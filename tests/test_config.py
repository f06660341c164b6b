import dataclasses
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ssl_inpaint.cli import app
from ssl_inpaint.config import load_recipe, resolve_config
from ssl_inpaint.options.pretrain import PretrainConfig
from ssl_inpaint.errors import UserError

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_flags_override_recipe_which_overrides_defaults():
    config = resolve_config(PretrainConfig, {"lr_g": 0.1, "batch_size": 8}, {"batch_size": 4, "seed": None})
    assert config.lr_g == 0.1 and config.batch_size == 4 and config.seed == 0


def test_unknown_or_mistyped_recipe_keys_are_refused():
    with pytest.raises(UserError, match="unknown recipe key"):
        resolve_config(PretrainConfig, {"learning_rate": 1.0}, {})
    with pytest.raises(UserError, match="must be of type int"):
        resolve_config(PretrainConfig, {"batch_size": "many"}, {})


@pytest.mark.parametrize("recipe", sorted(RECIPES.glob("pretrain_*.yaml")), ids=lambda p: p.stem)
def test_every_pretrain_recipe_resolves(recipe):
    values = load_recipe(recipe)
    config = resolve_config(PretrainConfig, values, {})
    assert values and {key: getattr(config, key) for key in values} == values  # every key took effect


def test_incompatible_options_are_clear_errors():
    with pytest.raises(UserError, match="--predict hole"):
        resolve_config(PretrainConfig, {"predict": "hole", "mask": "rect", "skips": "none"}, {})
    with pytest.raises(UserError, match="coco_object"):
        resolve_config(PretrainConfig, {"mask": "coco_object", "dataset": "folder"}, {})
    with pytest.raises(UserError, match="image-size"):
        resolve_config(PretrainConfig, {"image_size": 100}, {})


def test_help_documents_every_option():
    result = CliRunner().invoke(app, ["pretrain", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for field in dataclasses.fields(PretrainConfig):
        assert "--" + field.name.replace("_", "-") in result.output


def test_one_resume_policy_names_each_changed_setting(tmp_path):
    from ssl_inpaint.options.finetune import FinetuneConfig
    from ssl_inpaint.runs import changed_settings, refuse_changes

    saved = dataclasses.asdict(FinetuneConfig())
    config = dataclasses.replace(FinetuneConfig(), lr=0.1, epochs=3)
    changes = changed_settings(saved, config)
    assert changes == {"epochs": (14, 3), "lr": (0.005, 0.1)}
    with pytest.raises(UserError, match=r"cannot resume .*--epochs 14 -> 3, --lr 0.005 -> 0.1\)"):
        refuse_changes(tmp_path, changes)
    with pytest.raises(UserError, match=r"--epochs 14 -> 3\)"):
        refuse_changes(tmp_path, changes, may_change={"lr"})
    refuse_changes(tmp_path, changes, may_change={"lr", "epochs"})  # accepted
    del saved["bn_images"]  # a key an older version did not save counts as its default
    assert changed_settings(saved, config) == changes


def test_every_saved_config_records_the_software_each_start_ran_on(tmp_path):
    import torch
    import yaml

    from ssl_inpaint.config import save_config

    config = resolve_config(PretrainConfig, {}, {})
    save_config(config, tmp_path / "config.yaml")
    save_config(config, tmp_path / "config.yaml")  # a resume appends, keeping the first start
    starts = yaml.safe_load((tmp_path / "environment.yaml").read_text())
    assert len(starts) == 2 and torch.__version__.startswith(starts[0]["torch"])
    assert {"python", "ssl_inpaint", "timm", "numpy", "started", "commit"} <= set(starts[1])
    (tmp_path / "environment.yaml").write_text("not: a list\n")
    save_config(config, tmp_path / "config.yaml")  # hand-edited into something else: kept aside, not lost
    assert (tmp_path / "environment.yaml.unreadable").read_text() == "not: a list\n"
    assert len(yaml.safe_load((tmp_path / "environment.yaml").read_text())) == 1
