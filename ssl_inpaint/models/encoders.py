"""Rebuild a pretext encoder from the ``arch`` metadata stored in ``encoder.pt``.

Every generator's ``.encoder`` carries an ``arch`` dict whose ``arch`` key names its kind; one
builder per kind turns the dict back into the module, so ``ssl finetune --init pretrained`` works for
every generator of the registry.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ssl_inpaint.errors import UserError
from ssl_inpaint.models.approx_attention import AttentionEncoder
from ssl_inpaint.models.glcic import GlcicEncoder
from ssl_inpaint.models.perceptual_unet import PerceptualUNetEncoder
from ssl_inpaint.models.pix2pix import Pix2PixEncoder
from ssl_inpaint.models.timm_unet import TimmEncoder
from ssl_inpaint.models.unet import UNetEncoder


def _unet(arch: dict[str, Any]) -> nn.Module:
    return UNetEncoder(
        arch["in_channels"], arch["image_size"], arch["widths"], arch["bottleneck_channels"], arch.get("norm", "batch")
    )


def _timm(arch: dict[str, Any]) -> nn.Module:
    return TimmEncoder(arch["name"], arch["in_channels"], arch["image_size"])


ENCODER_KINDS: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "unet": _unet,
    "timm": _timm,
    "glcic": GlcicEncoder.from_arch,
    "approx_attention": AttentionEncoder.from_arch,
    "pix2pix_unet": Pix2PixEncoder.from_arch,
    "perceptual_unet": PerceptualUNetEncoder.from_arch,
}


def build_encoder(arch: dict[str, Any]) -> nn.Module:
    kind = arch.get("arch")
    if kind not in ENCODER_KINDS:
        raise UserError(f"unknown encoder architecture {kind!r} in encoder metadata (known: {', '.join(ENCODER_KINDS)})")
    return ENCODER_KINDS[kind](arch)
