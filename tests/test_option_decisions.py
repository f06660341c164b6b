"""Behaviour that depends on a config field is decided on the field itself (issue 23): whether a
resumed run may change it (``option(..., resume=...)``) and whether it is part of what a transfer run
measures (``option(..., protocol=...)``). A field added without saying so fails here, instead of
silently being refused on resume or, worse, silently stopping ``ssl compare`` from pairing runs."""

from __future__ import annotations

import dataclasses

import pytest

from ssl_inpaint.config import fields_deciding, option, undecided_fields
from ssl_inpaint.options.finetune import FinetuneConfig, protocol_settings
from ssl_inpaint.options.pixelcnn import PixelCNNConfig
from ssl_inpaint.options.pixelcnn import RESUMABLE as PIXELCNN_RESUMABLE
from ssl_inpaint.options.pretrain import PretrainConfig
from ssl_inpaint.options.pretrain import RESUMABLE as PRETRAIN_RESUMABLE


@pytest.mark.parametrize("config", [PretrainConfig, PixelCNNConfig], ids=lambda c: c.__name__)
def test_every_field_of_a_resumable_command_decides_whether_a_resume_may_change_it(config):
    assert undecided_fields(config, "resume") == (), "give these option(...) a resume=True/False decision"


def test_every_transfer_field_decides_whether_it_is_part_of_the_protocol():
    assert undecided_fields(FinetuneConfig, "protocol") == (), "give these option(...) a protocol=True/False decision"


def test_an_undecided_field_is_found():
    @dataclasses.dataclass
    class Later(PretrainConfig):
        new_lever: float = option(0.5, "a lever someone adds later")

    assert undecided_fields(Later, "resume") == ("new_lever",)
    assert "new_lever" not in fields_deciding(Later, "resume") and "new_lever" not in fields_deciding(Later, "resume", False)


def test_a_resume_may_change_how_long_and_how_fast_never_what_is_learnt():
    for key in ("max_steps", "epochs", "device", "num_workers", "log_every", "save_every_steps", "probe_every", "precision"):
        assert key in PRETRAIN_RESUMABLE
    for key in ("mask_ratio", "patch_size", "widths", "lr_g", "weight_decay", "dataset", "data", "seed", "crop_scale", "w_hole"):
        assert key not in PRETRAIN_RESUMABLE
    assert {"max_steps", "epochs", "device"} <= set(PIXELCNN_RESUMABLE)
    assert not {"lr", "batch_size", "filters", "seed"} & set(PIXELCNN_RESUMABLE)  # no global-batch check there


def test_the_protocol_is_what_a_transfer_measures_not_where_or_which_init():
    protocol = protocol_settings(FinetuneConfig())
    for key in ("mode", "labels_per_class", "data_seed", "epochs", "lr", "features", "weight_scale", "image_size", "dataset"):
        assert key in protocol
    for key in ("init", "checkpoint", "seed", "seeds", "data", "output_dir", "name", "device", "num_workers", "eval_every"):
        assert key not in protocol
    changed = dataclasses.replace(FinetuneConfig(), lr=0.5, seed=7, data="elsewhere")
    assert protocol_settings(changed) == {**protocol, "lr": 0.5}
