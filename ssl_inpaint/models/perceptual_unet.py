"""Seed 004's U-Net with scaled skip connections.

Encoder: five 3x3 conv + BatchNorm + LeakyReLU(0.001) stages, widths 64-128-256-512-1024, with 2x2
max pooling between them (a 256 px image reaches 16 px). Decoder: four stages of a 3x3 stride-2
transposed conv, concatenation with the encoder stage of the same size multiplied by a fixed factor
(x1 for the deepest, then x0.8, x0.4, x0.2 towards the input: the shallow skips are damped, so the
network cannot just copy the holed input to its output, the failure the report saw with a plain
U-Net), and a 3x3 conv to 96 channels; then a 1x1 conv to the image. The report's sigmoid output is
tanh here, for images in [-1, 1].
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ssl_inpaint.errors import UserError

SKIP_SCALES = (1.0, 0.8, 0.4, 0.2)  # deepest skip first
DECODER_WIDTH = 96
LEAK = 0.001


def conv_bn(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch), nn.LeakyReLU(LEAK, inplace=True))


class PerceptualUNetEncoder(nn.Module):
    """Returns the five stages' features, shallow to deep (the deepest at 1/16 resolution)."""

    def __init__(self, in_channels: int, image_size: int, base: int = 64):
        super().__init__()
        if image_size % 16:
            raise UserError(f"--image-size must be a multiple of 16 for the perceptual_unet generator, got {image_size}")
        self.arch = {"arch": "perceptual_unet", "in_channels": in_channels, "image_size": image_size, "base": base}
        widths = [base * 2**i for i in range(5)]
        channels = [in_channels, *widths]
        self.stages = nn.ModuleList(conv_bn(channels[i], channels[i + 1]) for i in range(5))
        self.pool = nn.MaxPool2d(2)
        self.out_channels = widths

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x if i == 0 else self.pool(x))
            features.append(x)
        return features

    @classmethod
    def from_arch(cls, arch: dict[str, Any]) -> "PerceptualUNetEncoder":
        return cls(arch["in_channels"], arch["image_size"], arch["base"])


class PerceptualUNetGenerator(nn.Module):
    """Input (B, C+1, H, W) = holed image + hole channel; output the (B, C, H, W) image in [-1, 1]."""

    def __init__(self, image_channels: int = 3, image_size: int = 256, base_channels: int = 64, skip_scales: Sequence[float] = SKIP_SCALES, **_: Any):
        super().__init__()
        self.encoder = PerceptualUNetEncoder(image_channels + 1, image_size, base_channels)
        self.skip_scales = tuple(skip_scales)
        widths = self.encoder.out_channels
        self.ups = nn.ModuleList()
        self.mixes = nn.ModuleList()
        current = widths[-1]
        for skip_width in reversed(widths[:-1]):
            self.ups.append(nn.Sequential(
                nn.ConvTranspose2d(current, skip_width, 3, 2, 1, output_padding=1, bias=False),
                nn.BatchNorm2d(skip_width),
                nn.LeakyReLU(LEAK, inplace=True),
            ))
            self.mixes.append(conv_bn(2 * skip_width, DECODER_WIDTH))
            current = DECODER_WIDTH
        self.to_image = nn.Sequential(nn.Conv2d(DECODER_WIDTH, image_channels, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        y = features[-1]
        for up, mix, skip, scale in zip(self.ups, self.mixes, reversed(features[:-1]), self.skip_scales):
            y = mix(torch.cat([up(y), skip * scale], dim=1))
        return self.to_image(y)
