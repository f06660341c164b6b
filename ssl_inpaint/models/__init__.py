"""Models by name: generators (with a transferable ``encoder``), discriminators, the classifier."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ssl_inpaint.errors import UserError
from ssl_inpaint.models.classifier import EncoderClassifier, encoder_from_arch, load_pretrained_encoder
from ssl_inpaint.models.approx_attention import ApproxAttentionGenerator
from ssl_inpaint.models.discriminators import (
    DISCRIMINATOR_KINDS,
    Discriminator,
    GlcicFusedDiscriminator,
    crop_boxes,
    global_discriminator,
    hole_boxes,
    local_discriminator,
    patchgan_discriminator,
    pixel_discriminator,
)
from ssl_inpaint.models.encoders import build_encoder
from ssl_inpaint.models.glcic import GlcicGenerator
from ssl_inpaint.models.perceptual_unet import PerceptualUNetGenerator
from ssl_inpaint.models.pix2pix import Pix2PixUNetGenerator
from ssl_inpaint.models.timm_unet import TimmClassifier, TimmEncoder, TimmUNetGenerator, create_timm, timm_state_dict
from ssl_inpaint.models.unet import UNetEncoder, UNetGenerator

GENERATORS: dict[str, Callable[..., nn.Module]] = {
    "unet": UNetGenerator,  # seed 003
    "glcic": GlcicGenerator,  # seed 000
    "approx_attention": ApproxAttentionGenerator,  # seed 001
    "pix2pix_unet": Pix2PixUNetGenerator,  # seed 002
    "perceptual_unet": PerceptualUNetGenerator,  # seed 004
}


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
    "DISCRIMINATOR_KINDS",
    "GlcicFusedDiscriminator",
    "patchgan_discriminator",
    "pixel_discriminator",
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
