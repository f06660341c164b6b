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


# --- The other source systems' discriminators (issue 7) -----------------------------------------

D_POOLS = ("flatten", "gap")


def _glcic_trunk(in_channels: int, widths: Sequence[int], norm: str) -> nn.Sequential:
    """GLCIC's discriminator trunk: 5x5 stride-2 convs, each halving the side (rounding up)."""
    channels = [in_channels, *widths]
    return nn.Sequential(*(conv_block(channels[i], channels[i + 1], 5, 2, 2, norm=norm) for i in range(len(widths))))


class GlcicFusedDiscriminator(nn.Module):
    """Seed 000 / GLCIC: a global trunk on the whole image and a local trunk on the crop around the
    hole, each reduced to a vector (``pool='flatten'`` as in GLCIC, or ``'gap'``, the report's
    global-average-pooling variant) and mapped by its own fully connected layer (1024 wide at base 64,
    as in GLCIC); the two are concatenated and a last fully connected layer gives one logit.

    The trunks are sized for the report's 64 px image and 28 px crop: 5 and 4 stride-2 convs (64 -> 2
    and 28 -> 2 px). ``base`` scales every width (64-128-256-512-512 at base 64)."""

    def __init__(self, image_channels: int, image_size: int, local_size: int, pool: str = "flatten", base: int = 64, norm: str = "batch"):
        super().__init__()
        if pool not in D_POOLS:
            raise ValueError(f"unknown pooling {pool!r}")
        widths = [base, 2 * base, 4 * base, 8 * base, 8 * base]
        fc_width = 16 * base
        self.pool = pool
        self.global_trunk = _glcic_trunk(image_channels, widths, norm)
        self.local_trunk = _glcic_trunk(image_channels, widths[:4], norm)
        self.global_fc = nn.Sequential(nn.Linear(self._vector_size(widths, image_size), fc_width), nn.ReLU(inplace=True))
        self.local_fc = nn.Sequential(nn.Linear(self._vector_size(widths[:4], local_size), fc_width), nn.ReLU(inplace=True))
        self.head = nn.Linear(2 * fc_width, 1)

    def _vector_size(self, widths: Sequence[int], side: int) -> int:
        for _ in widths:
            side = (side + 1) // 2  # a 5x5 stride-2 conv with padding 2 halves the side, rounding up
        return widths[-1] * (1 if self.pool == "gap" else side * side)

    def _vector(self, trunk: nn.Module, x: torch.Tensor) -> torch.Tensor:
        maps = trunk(x)
        return maps.mean(dim=(2, 3)) if self.pool == "gap" else maps.flatten(1)

    def forward(self, images: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
        global_vector = self.global_fc(self._vector(self.global_trunk, images))
        local_vector = self.local_fc(self._vector(self.local_trunk, crops))
        return self.head(torch.cat([global_vector, local_vector], dim=1)).flatten()


def patchgan_discriminator(image_channels: int, base: int = 64, layers: int = 3, norm: str = "batch") -> nn.Module:
    """pix2pix's PatchGAN (``NLayerDiscriminator``): stride-2 4x4 convs, then a stride-1 conv and a
    1-channel conv, so every logit judges one receptive-field patch (70 px for 3 layers). Returns the
    (B, patches) logits; the BCE averages over patches."""
    widths = [base * min(2**i, 8) for i in range(layers + 1)]
    blocks = [nn.Sequential(nn.Conv2d(image_channels, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True))]
    blocks += [conv_block(widths[i - 1], widths[i], 4, 2, 1, norm=norm) for i in range(1, layers)]
    blocks += [conv_block(widths[layers - 1], widths[layers], 4, 1, 1, norm=norm), nn.Conv2d(widths[layers], 1, 4, 1, 1)]
    return nn.Sequential(*blocks, nn.Flatten())


def pixel_discriminator(image_channels: int, base: int = 64, norm: str = "batch") -> nn.Module:
    """pix2pix's 1x1 ``PixelDiscriminator``: judges every pixel on its own colour (a 1x1 receptive
    field), which pushes colours towards the data without saying anything about structure."""
    return nn.Sequential(
        nn.Conv2d(image_channels, base, 1),
        nn.LeakyReLU(0.2, inplace=True),
        conv_block(base, 2 * base, 1, 1, 0, norm=norm),
        nn.Conv2d(2 * base, 1, 1),
        nn.Flatten(),
    )
