"""Seed 000's completion network (after GLCIC, Iizuka et al. 2017).

Two strided convs take the image to 1/4 resolution, a bottleneck of plain and dilated 3x3 convs
(dilations 2, 4, 8, 16) widens the receptive field without losing resolution, and two transposed
convs bring it back to the input size. The report's widths are GLCIC's (64-128-256); ``base`` scales
them. The output is tanh, for images in [-1, 1] (GLCIC's sigmoid for [0, 1]).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ssl_inpaint.errors import UserError
from ssl_inpaint.models.unet import StagedEncoder

DILATIONS = (2, 4, 8, 16)


def conv(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """Conv + BatchNorm + ReLU, 'same' padding for odd kernels (GLCIC's layer)."""
    padding = dilation * (kernel - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class GlcicEncoder(StagedEncoder):
    """Everything up to the end of the dilated bottleneck. ``forward`` returns the features of each
    resolution, shallow to deep; the last one (1/4 resolution, after the dilated convs) is what a
    classifier pools."""

    def __init__(self, in_channels: int, image_size: int, base: int = 64, dilations: Sequence[int] = DILATIONS):
        super().__init__()
        if image_size % 4:
            raise UserError(f"--image-size must be a multiple of 4 for the glcic generator, got {image_size}")
        self.arch = {"arch": "glcic", "in_channels": in_channels, "image_size": image_size, "base": base,
                     "dilations": list(dilations)}
        w1, w2, w3 = base, 2 * base, 4 * base
        self.stages = nn.ModuleList([
            conv(in_channels, w1, kernel=5),
            nn.Sequential(conv(w1, w2, stride=2), conv(w2, w2)),
            nn.Sequential(conv(w2, w3, stride=2), conv(w3, w3), conv(w3, w3)),
            nn.Sequential(*(conv(w3, w3, dilation=d) for d in dilations), conv(w3, w3), conv(w3, w3)),
        ])
        self.out_channels = [w1, w2, w3, w3]

    @classmethod
    def from_arch(cls, arch: dict[str, Any]) -> "GlcicEncoder":
        return cls(arch["in_channels"], arch["image_size"], arch["base"], arch["dilations"])


class GlcicGenerator(nn.Module):
    """Input (B, C+1, H, W) = holed image + hole channel; output the (B, C, H, W) image in [-1, 1]."""

    def __init__(self, image_channels: int = 3, image_size: int = 64, base_channels: int = 64, **_: Any):
        super().__init__()
        self.encoder = GlcicEncoder(image_channels + 1, image_size, base_channels)
        w1, w2, w3 = base_channels, 2 * base_channels, 4 * base_channels

        def up(in_ch: int, out_ch: int) -> nn.Sequential:
            return nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))

        self.decoder = nn.Sequential(
            up(w3, w2), conv(w2, w2), up(w2, w1), conv(w1, w1 // 2), nn.Conv2d(w1 // 2, image_channels, 3, 1, 1), nn.Tanh()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)[-1])
