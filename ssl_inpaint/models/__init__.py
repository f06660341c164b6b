"""Models by name: generators (with a transferable ``encoder``), discriminators, the classifier."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ssl_inpaint.errors import UserError
from ssl_inpaint.models.classifier import EncoderClassifier, encoder_from_arch, load_pretrained_encoder
from ssl_inpaint.models.discriminators import (
    Discriminator,
    crop_boxes,
    global_discriminator,
    hole_boxes,
    local_discriminator,
)
from ssl_inpaint.models.timm_unet import TimmClassifier, TimmEncoder, TimmUNetGenerator, create_timm, timm_state_dict
from ssl_inpaint.models.unet import UNetEncoder, UNetGenerator, build_encoder

GENERATORS: dict[str, Callable[..., nn.Module]] = {"unet": UNetGenerator}


def create_generator(name: str, encoder: str = "unet", **kwargs: Any) -> nn.Module:
    """Build a generator by registry name; every generator exposes ``.encoder`` for transfer.

    ``encoder='timm:<name>'`` puts a timm backbone under a U-Net decoder instead of the seed-003 encoder.
    """
    if encoder.startswith("timm:"):
        return TimmUNetGenerator(encoder[len("timm:"):], kwargs["image_channels"], kwargs["image_size"])
    if encoder != "unet":
        raise UserError(f"--encoder must be unet or timm:<model name>, got {encoder!r}")
    if name not in GENERATORS:
        raise UserError(f"unknown generator {name!r}; choose one of: {', '.join(GENERATORS)}")
    return GENERATORS[name](**kwargs)


__all__ = [
    "TimmClassifier",
    "TimmEncoder",
    "TimmUNetGenerator",
    "create_timm",
    "timm_state_dict",
    "GENERATORS",
    "Discriminator",
    "EncoderClassifier",
    "UNetEncoder",
    "UNetGenerator",
    "build_encoder",
    "create_generator",
    "crop_boxes",
    "encoder_from_arch",
    "global_discriminator",
    "hole_boxes",
    "load_pretrained_encoder",
    "local_discriminator",
]
