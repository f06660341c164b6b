"""The seed-003 discriminators (Table 2) and the crop the local one looks at.

Both are five 4x4 stride-2 convs (64-128-256-512-512) with BatchNorm and LeakyReLU(0.2). The global
discriminator ends with the table's Conv2d* (kernel = the remaining map, so one logit at any image
size); the local one has no Conv2d* and ends with a linear layer on the flattened map. They return
logits: the sigmoid of the table lives inside ``BCEWithLogits``, which is the numerically safe form
(and the only one autocast allows).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ssl_inpaint.models.unet import conv_block, deepest_size

DISCRIMINATOR_WIDTHS = (64, 128, 256, 512, 512)


class Discriminator(nn.Module):
    def __init__(self, in_channels: int, input_size: int, head: str, widths: Sequence[int] = DISCRIMINATOR_WIDTHS, norm: str = "batch"):
        super().__init__()
        side = deepest_size(input_size, len(widths))
        channels = [in_channels, *widths]
        self.features = nn.Sequential(*(conv_block(channels[i], channels[i + 1], norm=norm) for i in range(len(widths))))
        if head == "conv":  # Table 2's Conv2d*
            self.head: nn.Module = nn.Sequential(nn.Conv2d(widths[-1], 1, side), nn.Flatten())
        elif head == "linear":
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, 1))
        else:
            raise ValueError(f"unknown discriminator head {head!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).flatten()


def global_discriminator(image_channels: int, image_size: int, norm: str = "batch") -> Discriminator:
    return Discriminator(image_channels, image_size, head="conv", norm=norm)


def local_discriminator(image_channels: int, local_size: int, norm: str = "batch") -> Discriminator:
    return Discriminator(image_channels, local_size, head="linear", norm=norm)


def hole_boxes(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Top-left corners (B, 2) of ``size`` x ``size`` crops centred on each hole's bounding box,
    shifted to stay inside the image. An empty mask gives the image centre."""
    height, width = mask.shape[-2:]
    occupied_rows = mask.amax(dim=(1, 3)) > 0  # (B, H)
    occupied_cols = mask.amax(dim=(1, 2)) > 0  # (B, W)

    def centre(occupied: torch.Tensor, length: int) -> torch.Tensor:
        idx = torch.arange(length, device=mask.device).expand_as(occupied)
        first = torch.where(occupied, idx, length).amin(dim=1)
        last = torch.where(occupied, idx, -1).amax(dim=1)
        return torch.where(last >= 0, (first + last + 1) // 2, torch.full_like(first, length // 2))

    top = (centre(occupied_rows, height) - size // 2).clamp(0, height - size)
    left = (centre(occupied_cols, width) - size // 2).clamp(0, width - size)
    return torch.stack([top, left], dim=1)


def crop_boxes(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop ``size`` x ``size`` patches at the given top-left corners (the local discriminator's input)."""
    return torch.stack(
        [img[:, int(t) : int(t) + size, int(l) : int(l) + size] for img, (t, l) in zip(images, boxes.tolist())]
    )
