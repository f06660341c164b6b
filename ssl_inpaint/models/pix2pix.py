"""Seed 002's pix2pix generator (Isola et al. 2017, ``UnetGenerator``).

4x4 stride-2 convs halve the image down to 1x1 (5 at 32 px), widths 64-128-256-512 then 512; each
decoder stage is a ReLU + transposed conv whose output is concatenated with the encoder stage of the
same size. BatchNorm everywhere except the first and the innermost conv; dropout 0.5 on the decoder
stages below 1/16 resolution (pix2pix's only noise source). tanh output in [-1, 1].
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ssl_inpaint.errors import UserError
from ssl_inpaint.models.unet import StagedEncoder


def pix2pix_widths(image_size: int, base: int) -> list[int]:
    """One stride-2 stage per halving down to 1x1, doubling from ``base`` up to 8x ``base``."""
    depth = int(math.log2(image_size)) if image_size > 1 else 0
    if 2**depth != image_size or depth < 2:
        raise UserError(f"--image-size must be a power of two (>= 4) for the pix2pix_unet generator, got {image_size}")
    return [base * min(2**i, 8) for i in range(depth)]


class Pix2PixEncoder(StagedEncoder):
    """The contracting half; returns every stage's features, shallow to deep (the last is 1x1)."""

    def __init__(self, in_channels: int, image_size: int, base: int = 64):
        super().__init__()
        self.arch = {"arch": "pix2pix_unet", "in_channels": in_channels, "image_size": image_size, "base": base}
        widths = pix2pix_widths(image_size, base)
        stages: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 4, 2, 1)]
        for i in range(1, len(widths)):
            innermost = i == len(widths) - 1
            layers: list[nn.Module] = [nn.LeakyReLU(0.2), nn.Conv2d(widths[i - 1], widths[i], 4, 2, 1, bias=innermost)]
            if not innermost:
                layers.append(nn.BatchNorm2d(widths[i]))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.out_channels = widths

    @classmethod
    def from_arch(cls, arch: dict[str, Any]) -> "Pix2PixEncoder":
        return cls(arch["in_channels"], arch["image_size"], arch["base"])


class Pix2PixUNetGenerator(nn.Module):
    """Input (B, C+1, H, W) = holed image + hole channel; output the (B, C, H, W) image in [-1, 1]."""

    def __init__(self, image_channels: int = 3, image_size: int = 32, base_channels: int = 64, dropout: float = 0.5, **_: Any):
        super().__init__()
        self.encoder = Pix2PixEncoder(image_channels + 1, image_size, base_channels)
        widths = self.encoder.out_channels
        depth = len(widths)
        self.up_stages = nn.ModuleList()
        for i in range(depth - 1, 0, -1):  # deepest first: from stage i's size to stage i-1's
            in_ch = widths[i] if i == depth - 1 else 2 * widths[i]
            layers: list[nn.Module] = [nn.ReLU(), nn.ConvTranspose2d(in_ch, widths[i - 1], 4, 2, 1, bias=False), nn.BatchNorm2d(widths[i - 1])]
            if i >= 4 and i < depth - 1:  # pix2pix: dropout in the 512-wide middle decoder stages
                layers.append(nn.Dropout(dropout))
            self.up_stages.append(nn.Sequential(*layers))
        self.to_image = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * widths[0], image_channels, 4, 2, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        y = features[-1]
        for stage, skip in zip(self.up_stages, reversed(features[:-1])):
            y = torch.cat([stage(y), skip], dim=1)
        return self.to_image(y)
