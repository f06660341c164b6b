"""Rebuild a pretext encoder from the ``arch`` metadata stored in ``encoder.pt``.

Every generator's ``.encoder`` carries an ``arch`` dict whose ``arch`` key names its kind; one
builder per kind turns the dict back into the module, so ``ssl finetune --init pretrained`` works for
every generator of the registry.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ssl_inpaint.models.approx_attention import AttentionEncoder
from ssl_inpaint.models.glcic import GlcicEncoder
from ssl_inpaint.models.perceptual_unet import PerceptualUNetEncoder
from ssl_inpaint.models.pix2pix import Pix2PixEncoder
from ssl_inpaint.models.timm_unet import TimmEncoder
from ssl_inpaint.models.unet import UNetEncoder
from ssl_inpaint.registry import Registry


# The ``arch`` key of an encoder's metadata names the builder that turns the dict back into the module.
ENCODERS: Registry[Callable[[dict[str, Any]], nn.Module]] = Registry("encoder architecture", "encoder metadata 'arch'")


@ENCODERS.register("unet")
def _unet(arch: dict[str, Any]) -> nn.Module:
    return UNetEncoder(
        arch["in_channels"], arch["image_size"], arch["widths"], arch["bottleneck_channels"], arch.get("norm", "batch")
    )


@ENCODERS.register("timm")
def _timm(arch: dict[str, Any]) -> nn.Module:
    return TimmEncoder(arch["name"], arch["in_channels"], arch["image_size"])


ENCODERS.add("glcic", GlcicEncoder.from_arch)
ENCODERS.add("approx_attention", AttentionEncoder.from_arch)
ENCODERS.add("pix2pix_unet", Pix2PixEncoder.from_arch)
ENCODERS.add("perceptual_unet", PerceptualUNetEncoder.from_arch)


def build_encoder(arch: dict[str, Any]) -> nn.Module:
    return ENCODERS.get(arch.get("arch"))(arch)
