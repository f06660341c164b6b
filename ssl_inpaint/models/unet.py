"""The seed-003 U-Net generator (Table 1) with its encoder as a separate, transferable module.

Encoder: five 4x4 stride-2 convs (64-64-128-256-512), then a conv whose kernel covers the whole
remaining map (4x4 at 128 px, as in the table; 2x2 at 64 px, 8x8 at 256 px) down to a 1x1 latent of
``bottleneck_channels`` (4000). Decoder: a transposed conv back to that map, then 4x4 stride-2
transposed convs to the image, with encoder layer i concatenated to decoder layer n-i. Every layer but
the output has BatchNorm and LeakyReLU(0.2) (ReLU right after the bottleneck, per the table);
``norm='none'`` drops the BatchNorm layers (biases instead), e.g. for exact multi-process checks on CPU
where SyncBatchNorm is unavailable.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ssl_inpaint.errors import UserError

UNET_WIDTHS = (64, 64, 128, 256, 512)


NORMS = ("batch", "none")


def _norm(channels: int, norm: str) -> nn.Module:
    return nn.BatchNorm2d(channels) if norm == "batch" else nn.Identity()


class WholeMapConv2d(nn.Conv2d):
    """A convolution whose kernel covers its whole input map, so it has one output position: Table 1's
    bottleneck (a 4x4 kernel on the 4x4 map at 128 px, 512 -> 4000 channels). That is one matrix
    product, and it runs as one: oneDNN's convolution runs this pair at about 10 GFLOP/s on CPU, a
    fifth of a plain M1 step (``tools/bench.py --profile``). The weights and state-dict are
    nn.Conv2d's, so checkpoints and exports are unchanged; any other input size runs the convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.kernel_size or self.padding != (0, 0) or self.dilation != (1, 1) or self.groups != 1:
            return super().forward(x)
        return F.linear(x.flatten(1), self.weight.flatten(1), self.bias)[:, :, None, None]


class WholeMapConvTranspose2d(nn.ConvTranspose2d):
    """The decoder's way back from the 1x1 latent to the kernel-sized map (Table 1's first T.Conv2d):
    each output pixel is a weighted sum of the latent, one matrix product; see ``WholeMapConv2d``."""

    def forward(self, x: torch.Tensor, output_size: Optional[list[int]] = None) -> torch.Tensor:
        unusual = self.padding != (0, 0) or self.dilation != (1, 1) or self.output_padding != (0, 0) or self.groups != 1
        if tuple(x.shape[-2:]) != (1, 1) or unusual or output_size is not None:
            return super().forward(x, output_size)
        kh, kw = self.kernel_size
        bias = self.bias.repeat_interleave(kh * kw) if self.bias is not None else None
        return F.linear(x.flatten(1), self.weight.flatten(1).t(), bias).view(len(x), self.out_channels, kh, kw)


def conv_block(
    in_ch: int, out_ch: int, kernel: int = 4, stride: int = 2, padding: int = 1, norm: str = "batch", whole_map: bool = False
) -> nn.Sequential:
    """Conv, BatchNorm (``norm='none'``: no normalisation, the conv gets a bias), LeakyReLU(0.2).
    ``whole_map``: the kernel covers the whole input map (``WholeMapConv2d``)."""
    conv = WholeMapConv2d if whole_map else nn.Conv2d
    return nn.Sequential(
        conv(in_ch, out_ch, kernel, stride, padding, bias=norm == "none"),
        _norm(out_ch, norm),
        nn.LeakyReLU(0.2, inplace=True),
    )


def up_block(
    in_ch: int, out_ch: int, kernel: int = 4, stride: int = 2, padding: int = 1, leaky: bool = True, norm: str = "batch",
    whole_map: bool = False,
) -> nn.Sequential:
    """Transposed conv, BatchNorm, LeakyReLU(0.2) (ReLU with ``leaky=False``); ``whole_map``: from a
    1x1 map to the kernel's size (``WholeMapConvTranspose2d``)."""
    conv = WholeMapConvTranspose2d if whole_map else nn.ConvTranspose2d
    return nn.Sequential(
        conv(in_ch, out_ch, kernel, stride, padding, bias=norm == "none"),
        _norm(out_ch, norm),
        nn.LeakyReLU(0.2, inplace=True) if leaky else nn.ReLU(inplace=True),
    )


def deepest_size(image_size: int, num_downsamples: int) -> int:
    """Side of the deepest feature map; the image side must be a multiple of the total stride."""
    stride = 2**num_downsamples
    if image_size < stride or image_size % stride:
        raise UserError(
            f"image size {image_size} is not a multiple of the U-Net's total stride {stride}; "
            f"use e.g. --image-size {max(stride, round(image_size / stride) * stride)}"
        )
    return image_size // stride


class StagedEncoder(nn.Module):
    """An encoder made of ``self.stages`` applied in turn. It returns every stage's output, shallowest
    first: the skips of a U-Net decoder, and the deepest features that transfer to a classifier."""

    stages: nn.ModuleList

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def mask_skip(feature: torch.Tensor, hole: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """``feature`` with every position whose cell of the input holds any hole pixel replaced by
    ``token`` (max-pooling the hole to the feature's size), so nothing computed there reaches the
    decoder through this skip."""
    hole_here = F.adaptive_max_pool2d(hole.to(feature.dtype), feature.shape[-2:]) > 0
    return torch.where(hole_here, token.to(feature.dtype), feature)


def visible_cells(hole: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, *size) float map: 1 where the cell of the input under that position holds no hole pixel."""
    return 1.0 - F.adaptive_max_pool2d(hole.float(), size)


def masked_batch_norm(x: torch.Tensor, visible: torch.Tensor, norm: nn.BatchNorm2d) -> torch.Tensor:
    """``norm`` applied to ``x`` with its batch statistics (and the running statistics it updates)
    taken over the ``visible`` positions only, as SparK's sparse BatchNorm: the zeros a hole leaves in
    the features never enter the statistics, so those match what the encoder meets on whole images
    after transfer. In eval mode it is ``norm`` itself. Under SyncBatchNorm the sums are added over the
    processes, as SyncBatchNorm would."""
    if not norm.training:
        return norm(x)
    weight = visible.to(torch.float32)
    values = x.to(torch.float32)
    sums = torch.cat([(values * weight).sum((0, 2, 3)), (values * values * weight).sum((0, 2, 3)), weight.sum().reshape(1)])
    if isinstance(norm, nn.SyncBatchNorm) and torch.distributed.is_available() and torch.distributed.is_initialized():
        from torch.distributed.nn.functional import all_reduce  # differentiable, unlike torch.distributed.all_reduce

        sums = all_reduce(sums)
    channels = x.shape[1]
    count = sums[-1].clamp(min=1.0)
    mean = sums[:channels] / count
    var = (sums[channels : 2 * channels] / count - mean * mean).clamp(min=0.0)
    if norm.track_running_stats and norm.running_mean is not None:
        with torch.no_grad():
            momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked + 1)
            unbiased = var * count / (count - 1).clamp(min=1.0)
            norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), momentum)
            norm.running_var.lerp_(unbiased.to(norm.running_var.dtype), momentum)
            norm.num_batches_tracked.add_(1)
    scale = torch.rsqrt(var + norm.eps)
    shift = -mean * scale
    if norm.affine:
        scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
    return (values * scale[:, None, None] + shift[:, None, None]).to(x.dtype)


def sparse_stage(stage: nn.Sequential, x: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """One ``conv_block`` run on the context only (SparK's sparse convolution, emulated densely): the
    conv, BatchNorm over the visible positions, the activation, then every position whose input cell
    holds a hole pixel set to zero, so the next stage sees the hole as missing, not as content."""
    conv, norm, activation = stage
    y = conv(x)
    visible = visible_cells(hole, y.shape[-2:]).to(y.dtype)
    if isinstance(norm, nn.BatchNorm2d):
        y = masked_batch_norm(y, visible, norm)
    return activation(y) * visible


class UNetEncoder(StagedEncoder):
    """The generator's contracting half. ``forward`` returns every stage's features, shallow to deep;
    the last one is the (B, bottleneck_channels, 1, 1) latent."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        widths: Sequence[int] = UNET_WIDTHS,
        bottleneck_channels: int = 4000,
        norm: str = "batch",
    ):
        super().__init__()
        if norm not in NORMS:
            raise UserError(f"--norm must be one of {', '.join(NORMS)}, got {norm!r}")
        self.widths = tuple(widths)
        self.bottleneck_channels = bottleneck_channels
        self.arch = {
            "arch": "unet",
            "in_channels": in_channels,
            "image_size": image_size,
            "widths": list(self.widths),
            "bottleneck_channels": bottleneck_channels,
            "norm": norm,
        }
        side = deepest_size(image_size, len(self.widths))
        channels = [in_channels, *self.widths]
        self.stages = nn.ModuleList(conv_block(channels[i], channels[i + 1], norm=norm) for i in range(len(self.widths)))
        self.bottleneck = conv_block(self.widths[-1], bottleneck_channels, kernel=side, stride=1, padding=0, norm=norm, whole_map=True)
        self.out_channels = [*self.widths, bottleneck_channels]

    def conv_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stages' maps without the latent. The stride-2 convs work at any image size that is a
        multiple of the total stride; only the latent conv, whose kernel covers the whole deepest map
        at the pretraining size, is tied to that size."""
        return super().forward(x)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.conv_maps(x)
        return [*features, self.bottleneck(features[-1])]

    def forward_sparse(self, x: torch.Tensor, hole: torch.Tensor, sparse_stages: int) -> list[torch.Tensor]:
        """``forward`` with the first ``sparse_stages`` stages run on the context only
        (``sparse_stage``); the deeper ones, whose cells are larger than a hole patch and would all
        touch a hole, run as usual. Pretraining only: transfer runs ``forward`` on whole images, with
        the same weights."""
        features = []
        for i, stage in enumerate(self.stages):
            x = sparse_stage(stage, x, hole) if i < sparse_stages else stage(x)
            features.append(x)
        return [*features, self.bottleneck(features[-1])]


SKIPS = ("all", "none", "masked")


class UNetGenerator(nn.Module):
    """Input: (B, C+1, H, W) = holed image + hole channel. Output: the completed (B, C, H, W) image
    in [-1, 1].

    ``skips`` decides what the decoder gets from the encoder besides the latent:
      * ``all``: every encoder stage concatenated to the decoder stage of the same size (Table 1);
      * ``none``: nothing (Pathak's context encoder, seed 003 model M3), so the whole image has to
        pass through the latent;
      * ``masked``: the skips of ``all`` with every position that touches the hole replaced by a
        learned per-stage mask token (SparK), so the decoder sees the context at full resolution but
        the hole only through the deep layers.
    ``sparse_stages``: the encoder's first N stages see only the context (``UNetEncoder.forward_sparse``,
    SparK's sparse convolution and BatchNorm), so neither their features nor their BatchNorm
    statistics carry the zeros of the hole into transfer, where no hole exists.
    ``decoder_scale``: every decoder stage's width is the encoder's at that size times this (MAE's
    light decoder below 1); skips still bring the encoder's full widths.
    ``predict='hole'`` (M3, context-encoder style) decodes only the centre square of half the image
    side, one stage shallower, and pastes it into the input, so known pixels pass through unchanged.
    """

    def __init__(
        self,
        image_channels: int = 3,
        image_size: int = 128,
        widths: Sequence[int] = UNET_WIDTHS,
        bottleneck_channels: int = 4000,
        skips: str = "all",
        predict: str = "image",
        norm: str = "batch",
        sparse_stages: int = 0,
        decoder_scale: float = 1.0,
    ):
        super().__init__()
        if predict not in ("image", "hole"):
            raise UserError(f"--predict must be 'image' or 'hole', got {predict!r}")
        if skips not in SKIPS:
            raise UserError(f"--skips must be one of {', '.join(SKIPS)}, got {skips!r}")
        self.image_channels = image_channels
        self.skips = skips
        self.predict = predict
        self.encoder = UNetEncoder(image_channels + 1, image_size, widths, bottleneck_channels, norm)
        widths = self.encoder.widths
        if not 0 <= sparse_stages <= len(widths):
            raise UserError(f"--sparse-stages must be between 0 and the {len(widths)} stages of --widths, got {sparse_stages}")
        self.sparse_stages = sparse_stages
        side = deepest_size(image_size, len(widths))
        with_skips = skips != "none"

        def with_skip(channels: int, skip: int) -> int:
            return channels + (skip if with_skips else 0)

        def decoded(width: int) -> int:  # a decoder stage's width: the encoder's at that size, scaled
            return max(1, round(width * decoder_scale))

        self.from_bottleneck = up_block(
            bottleneck_channels, decoded(widths[-1]), kernel=side, stride=1, padding=0, leaky=False, norm=norm, whole_map=True
        )
        # Decoder stages go from the deepest encoder width back to the shallowest one.
        depth = len(widths) - 1 if predict == "image" else len(widths) - 2
        self.up_stages = nn.ModuleList(
            up_block(with_skip(decoded(widths[-1 - i]), widths[-1 - i]), decoded(widths[-2 - i]), norm=norm) for i in range(depth)
        )
        last = widths[-1 - depth]
        self.to_image = nn.ConvTranspose2d(with_skip(decoded(last), last), image_channels, 4, 2, 1)
        if skips == "masked":  # one token per encoder stage, as SparK's per-scale mask embeddings
            self.mask_tokens = nn.ParameterList(nn.Parameter(torch.zeros(1, w, 1, 1)) for w in widths)
            for token in self.mask_tokens:
                nn.init.trunc_normal_(token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sparse_stages:
            features = self.encoder.forward_sparse(x, x[:, -1:], self.sparse_stages)
        else:
            features = self.encoder(x)
        skips = features[:-1]
        if self.skips == "masked":
            skips = [mask_skip(f, x[:, -1:], token) for f, token in zip(skips, self.mask_tokens)]
        skips = skips[::-1]  # deepest first
        y = self.from_bottleneck(features[-1])
        for i, stage in enumerate(self.up_stages):
            y = stage(torch.cat([y, skips[i]], dim=1) if self.skips != "none" else y)
        if self.skips != "none":
            y = torch.cat([y, skips[len(self.up_stages)]], dim=1)
        y = torch.tanh(self.to_image(y))
        if self.predict == "hole":
            y = self._paste_centre(x[:, : self.image_channels], y)
        return y

    @staticmethod
    def _paste_centre(image: torch.Tensor, patch: torch.Tensor) -> torch.Tensor:
        (height, width), (ph, pw) = image.shape[-2:], patch.shape[-2:]
        top, left = (height - ph) // 2, (width - pw) // 2
        padded = F.pad(patch, (left, width - pw - left, top, height - ph - top))
        inside = F.pad(torch.ones_like(patch[:, :1]), (left, width - pw - left, top, height - ph - top))
        return image * (1 - inside) + padded * inside
