"""Seed 001: ApproxNet, then an encoder-decoder with SAGAN self-attention that refines its output.

ApproxNet is a stack of dense layers with dropout 0.3 that maps the holed image to a rough full
image; it is trained first, alone, with L1 on the hole (``approximate``). The refiner sees the holed
image with ApproxNet's guess pasted into the hole (a flat grey hole misleads the attention, which is
why the report added ApproxNet) and is trained with the GAN afterwards; ApproxNet stays frozen then,
as the report trained the two sequentially.

Self-attention is SAGAN's (Zhang et al. 2018): 1x1 query/key (C/8 channels) and value convs, a
softmax over all positions, and a learned gate ``gamma`` starting at 0, so each layer starts as the
identity. The refiner has one attention layer at the bottom of its encoder (1/8 resolution) and one
in its decoder (1/4 resolution); the last attention matrix of each is kept for TensorBoard.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ssl_inpaint.errors import UserError
from ssl_inpaint.models.unet import StagedEncoder, conv_block, up_block

APPROX_DROPOUT = 0.3


class SelfAttention(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.last_attention: Optional[torch.Tensor] = None  # (B, N, N): row i = where position i looks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        query = self.query(x).flatten(2).transpose(1, 2)  # (B, N, C/8)
        key = self.key(x).flatten(2)  # (B, C/8, N)
        attention = torch.softmax(query @ key, dim=-1)  # SAGAN: no 1/sqrt(d) scaling
        self.last_attention = attention.detach()
        out = (self.value(x).flatten(2) @ attention.transpose(1, 2)).view(b, c, h, w)
        return x + self.gamma * out


class AttentionEncoder(StagedEncoder):
    """Three 4x4 stride-2 conv blocks (base, 2 base, 4 base) and a self-attention layer at 1/8
    resolution; returns the features shallow to deep (the attended map last)."""

    def __init__(self, in_channels: int, image_size: int, base: int = 64):
        super().__init__()
        if image_size % 8:
            raise UserError(f"--image-size must be a multiple of 8 for the approx_attention generator, got {image_size}")
        self.arch = {"arch": "approx_attention", "in_channels": in_channels, "image_size": image_size, "base": base}
        widths = [base, 2 * base, 4 * base]
        channels = [in_channels, *widths]
        self.stages = nn.ModuleList(conv_block(channels[i], channels[i + 1]) for i in range(3))
        self.attention = SelfAttention(widths[-1])
        self.out_channels = [*widths, widths[-1]]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = super().forward(x)
        return [*features, self.attention(features[-1])]

    @classmethod
    def from_arch(cls, arch: dict[str, Any]) -> "AttentionEncoder":
        return cls(arch["in_channels"], arch["image_size"], arch["base"])


class ApproxNet(nn.Module):
    """Dense layers on the flattened holed image (+ hole channel) -> a rough image in [-1, 1]."""

    def __init__(self, image_channels: int, image_size: int, hidden: int = 512, dropout: float = APPROX_DROPOUT):
        super().__init__()
        self.shape = (image_channels, image_size, image_size)
        pixels = image_size * image_size
        self.layers = nn.ModuleList([
            nn.Linear((image_channels + 1) * pixels, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, image_channels * pixels)
        ])
        self.dropout = dropout

    def forward(self, x: torch.Tensor, use_dropout: bool) -> torch.Tensor:
        h = x.flatten(1)
        for layer in self.layers[:-1]:
            h = F.dropout(F.relu(layer(h)), self.dropout, training=use_dropout)
        return torch.tanh(self.layers[-1](h)).view(-1, *self.shape)


class ApproxAttentionGenerator(nn.Module):
    """Input (B, C+1, H, W) = holed image + hole channel; output the refined (B, C, H, W) image."""

    def __init__(self, image_channels: int = 3, image_size: int = 64, base_channels: int = 64, approx_hidden: int = 512, **_: Any):
        super().__init__()
        self.image_channels = image_channels
        self.approx_net = ApproxNet(image_channels, image_size, approx_hidden)
        self.encoder = AttentionEncoder(image_channels + 1, image_size, base_channels)
        self.decoder_attention = SelfAttention(2 * base_channels)
        self.decoder = nn.ModuleList([
            up_block(4 * base_channels, 2 * base_channels, leaky=False),
            nn.Sequential(self.decoder_attention, up_block(2 * base_channels, base_channels, leaky=False)),
            nn.Sequential(nn.ConvTranspose2d(base_channels, image_channels, 4, 2, 1), nn.Tanh()),
        ])

    def approximate(self, x: torch.Tensor) -> torch.Tensor:
        """ApproxNet's image alone: what its own training stage optimises."""
        return self.approx_net(x, use_dropout=self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        holed, mask = x[:, : self.image_channels], x[:, self.image_channels :]
        with torch.no_grad():  # ApproxNet is trained in its own stage and frozen while the refiner trains
            rough = self.approx_net(x, use_dropout=False)
        y = self.encoder(torch.cat([holed * (1 - mask) + rough * mask, mask], dim=1))[-1]
        for stage in self.decoder:
            y = stage(y)
        return y

    def attention_maps(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) in [0, 1]: where the hole's pixels looked in the last forward pass, i.e. the
        decoder attention rows of the positions inside the hole, averaged and scaled to their max."""
        attention = self.decoder_attention.last_attention
        if attention is None:
            raise RuntimeError("attention_maps needs a forward pass first")
        side = int(attention.shape[-1] ** 0.5)
        hole = F.adaptive_max_pool2d(mask.float(), side).flatten(1)  # (B, N) query positions in the hole
        hole = torch.where(hole.sum(1, keepdim=True) > 0, hole, torch.ones_like(hole))
        looked = (hole.unsqueeze(2) * attention).sum(1) / hole.sum(1, keepdim=True)
        looked = looked / looked.amax(dim=1, keepdim=True).clamp_min(1e-12)
        return F.interpolate(looked.view(-1, 1, side, side), size=mask.shape[-2:], mode="nearest")
