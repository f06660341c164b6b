"""A template for your own generator and its transferable encoder: copy this file, rename, change the layers.

    SSL_INPAINT_PLUGINS=templates/custom_generator.py ssl pretrain --generator residual --base-channels 32 ...
    SSL_INPAINT_PLUGINS=templates/custom_generator.py ssl finetune --init pretrained --checkpoint runs/NAME ...

Two registrations, because pretraining builds the generator from the command's options and transfer
rebuilds only the encoder from what ``encoder.pt`` stored:

- ``GENERATORS``: a class called with ``image_channels``, ``image_size``, ``base_channels``,
  ``approx_hidden`` (take what you use, ignore the rest with ``**_``). Its input is the holed image
  plus the hole channel, (B, C+1, H, W) in [-1, 1]; its output the completed image, (B, C, H, W) in
  [-1, 1] (end with tanh). It must have an ``encoder`` attribute: the part that transfers.
- ``ENCODERS``: a builder from the encoder's ``arch`` dict back to the module. The encoder interface
  ``ssl finetune``, the online probe and ``--init datadep`` rely on:
  * ``arch``: a dict of plain values (saved in ``encoder.pt``) whose ``"arch"`` key is the ENCODERS name
    and which holds ``in_channels`` (image channels + 1) and ``image_size``;
  * ``forward(x)`` returns every stage's map, shallow to deep (``StagedEncoder`` does it from ``stages``);
  * ``out_channels``: the channels of each of those maps. ``--features latent`` pools the last map,
    ``pooled`` the one before it, ``multi`` the three before the last, so end with the map you want
    a classifier to see by default and keep at least two;
  * BatchNorm after convs, if ``--bn-stats clean`` and ``--weight-scale init`` are to mean anything.
  An encoder other than the U-Net is fine-tuned at its pretraining size (checked in one line).

tests/test_extending.py pretrains this generator and fine-tunes its encoder through the ``ssl`` command.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ssl_inpaint.errors import UserError
from ssl_inpaint.models import ENCODERS, GENERATORS, StagedEncoder


def conv_bn(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class ResidualStage(nn.Module):
    """A stride-2 conv, then a residual pair of 3x3 convs."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.down = conv_bn(in_ch, out_ch, stride=2)
        self.body = nn.Sequential(conv_bn(out_ch, out_ch), nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return torch.relu(x + self.body(x))


class ResidualEncoder(StagedEncoder):
    """A stem at full resolution and three residual stages, each halving the side: maps at 1, 1/2,
    1/4 and 1/8 of the image, widths base, 2 base, 4 base, 8 base."""

    def __init__(self, in_channels: int, image_size: int, base: int = 32):
        super().__init__()
        if image_size % 8:
            raise UserError(f"--image-size must be a multiple of 8 for the residual generator, got {image_size}")
        self.arch = {"arch": "residual", "in_channels": in_channels, "image_size": image_size, "base": base}
        self.out_channels = [base, 2 * base, 4 * base, 8 * base]
        widths = [in_channels, *self.out_channels]
        self.stages = nn.ModuleList([conv_bn(in_channels, base)] + [ResidualStage(widths[i], widths[i + 1]) for i in range(1, 4)])

    @classmethod
    def from_arch(cls, arch: dict[str, Any]) -> "ResidualEncoder":
        return cls(arch["in_channels"], arch["image_size"], arch["base"])


class ResidualGenerator(nn.Module):
    """The encoder, then nearest-neighbour upsampling + 3x3 convs back to the image (no skips: the
    hole must be reconstructed from the deepest map, which is what makes the encoder learn)."""

    def __init__(self, image_channels: int = 3, image_size: int = 64, base_channels: int = 32, **_: Any):
        super().__init__()
        self.encoder = ResidualEncoder(image_channels + 1, image_size, base_channels)
        up = []
        for in_ch, out_ch in ((8, 4), (4, 2), (2, 1)):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), conv_bn(in_ch * base_channels, out_ch * base_channels)]
        self.decoder = nn.Sequential(*up, nn.Conv2d(base_channels, image_channels, 3, 1, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x)[-1])


GENERATORS.add("residual", ResidualGenerator)
ENCODERS.add("residual", ResidualEncoder.from_arch)
