"""Seed 002's PixelCNN++ (Salimans et al. 2017) and its pixel-by-pixel sampler.

The network predicts, for every pixel, the parameters of a discretised logistic mixture over its
colour (its likelihood is defined first, below) from the pixels before it in raster order only. Causality comes
from shifted convolutions: the *u* stream sees the rows above (down-shifted 2x3 convs), the *ul*
stream the rows above and the pixels to the left on the same row (down-right-shifted 2x2 convs);
their first layers are shifted by one row / column so a pixel never sees itself. Three stages of
gated ResNet blocks go down (stride 2) and back up, with skip connections from every up-pass block
to its down-pass mirror. All convolutions are weight-normalised; dropout sits inside each block.

Inpainting the lower half: raster order puts every upper-half pixel before every lower-half one, so
the model conditioned on the known upper half is the same network; training scores the lower half
only and sampling fills it in raster order.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from ssl_inpaint.errors import UserError



# --- The likelihood: a discretised logistic mixture per pixel --------------------------------------------------------------
#
# Each pixel's colour is a mixture of K logistics, discretised to 256 levels (Salimans et al. 2017):
# P(x) = sum_k pi_k [sigma((x + 1/255 - mu_k) / s_k) - sigma((x - 1/255 - mu_k) / s_k)] for x in
# [-1, 1] on a 2/255 grid, with the lowest level taking all mass below it and the highest all mass
# above. In RGB the green mean moves linearly with the pixel's red value and the blue mean with red
# and green (coefficients per component), so the channels of a pixel are jointly modelled.

LEVELS = 256


def mixture_channels(image_channels: int, components: int) -> int:
    """Output channels of a network parameterising the mixture: logits, means, log-scales and, for
    more than one channel, the channel-coupling coefficients, each per component."""
    coupling = image_channels * (image_channels - 1) // 2
    return components * (1 + 2 * image_channels + coupling)


def split_mixture(params: torch.Tensor, image_channels: int) -> tuple[torch.Tensor, ...]:
    """(logits (B, K, H, W), means, log_scales, coefficients (B, C or C(C-1)/2, K, H, W)) from the
    network's (B, mixture_channels, H, W) output. Log-scales are clamped at -7 as in PixelCNN++."""
    batch, channels, height, width = params.shape
    coupling = image_channels * (image_channels - 1) // 2
    components = channels // (1 + 2 * image_channels + coupling)
    logits, means, log_scales, coefficients = torch.split(
        params, [components, image_channels * components, image_channels * components, coupling * components], dim=1
    )
    shape = (batch, -1, components, height, width)
    return (
        logits,
        means.reshape(shape),
        log_scales.reshape(shape).clamp_min(-7.0),
        torch.tanh(coefficients.reshape(shape)),
    )


def coupled_means(means: torch.Tensor, coefficients: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Means of each channel given the earlier channels' values ``x`` (B, C, 1, H, W): channel c's
    mean moves by sum_{j<c} coefficient_(c, j) * x_j."""
    shifted = [means[:, 0]]
    index = 0
    for c in range(1, means.shape[1]):
        mean = means[:, c]
        for j in range(c):
            mean = mean + coefficients[:, index] * x[:, j]
            index += 1
        shifted.append(mean)
    return torch.stack(shifted, dim=1)


def discretized_logistic_log_prob(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log P(x) of one discretised logistic, exact and stable everywhere: the bin mass
    sigma(a) - sigma(b) with a > b is written sigma(a) sigma(-b) (1 - exp(b - a))."""
    inv_scale = torch.exp(-log_scales)
    half_bin = 1.0 / (LEVELS - 1)
    upper = inv_scale * (x - means + half_bin)
    lower = inv_scale * (x - means - half_bin)
    bin_mass = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(lower - upper))
    lowest = F.logsigmoid(upper)  # all mass below the first level's upper edge
    highest = F.logsigmoid(-lower)  # all mass above the last level's lower edge
    return torch.where(x < -1 + half_bin, lowest, torch.where(x > 1 - half_bin, highest, bin_mass))


def mixture_log_prob(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """log P(x_i | x_<i) per pixel (B, H, W), summed over the pixel's channels, for images ``x`` in
    [-1, 1] on the 256-level grid and the network output ``params``."""
    logits, means, log_scales, coefficients = split_mixture(params.float(), x.shape[1])
    x = x.float().unsqueeze(2)  # (B, C, 1, H, W): broadcast over the K components
    per_component = discretized_logistic_log_prob(x, coupled_means(means, coefficients, x), log_scales).sum(1)
    return torch.logsumexp(per_component + F.log_softmax(logits, dim=1), dim=1)


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    return F.elu(torch.cat([x, -x], dim=1))


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Move every row one down (a zero row on top): row i then holds what row i-1 computed."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    return F.pad(x, (1, 0, 0, 0))[:, :, :, :-1]


class DownShiftedConv(nn.Module):
    """Output (i, j) sees rows i-kh+1..i, columns j-(kw-1)/2..j+(kw-1)/2: nothing below."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int] = (2, 3), stride: int = 1):
        super().__init__()
        self.pad = ((kernel[1] - 1) // 2, (kernel[1] - 1) // 2, kernel[0] - 1, 0)
        self.conv = weight_norm(nn.Conv2d(in_ch, out_ch, kernel, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class DownRightShiftedConv(nn.Module):
    """Output (i, j) sees rows i-kh+1..i, columns j-kw+1..j: nothing below or to the right."""

    def __init__(self, in_ch: int, out_ch: int, kernel: tuple[int, int] = (2, 2), stride: int = 1):
        super().__init__()
        self.pad = (kernel[1] - 1, 0, kernel[0] - 1, 0)
        self.conv = weight_norm(nn.Conv2d(in_ch, out_ch, kernel, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class DownShiftedDeconv(nn.Module):
    def __init__(self, channels: int, kernel: tuple[int, int] = (2, 3)):
        super().__init__()
        self.kernel = kernel
        self.deconv = weight_norm(nn.ConvTranspose2d(channels, channels, kernel, 2, output_padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.deconv(x)
        side = (self.kernel[1] - 1) // 2
        return x[:, :, : x.shape[2] - self.kernel[0] + 1, side : x.shape[3] - side]


class DownRightShiftedDeconv(nn.Module):
    def __init__(self, channels: int, kernel: tuple[int, int] = (2, 2)):
        super().__init__()
        self.kernel = kernel
        self.deconv = weight_norm(nn.ConvTranspose2d(channels, channels, kernel, 2, output_padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.deconv(x)
        return x[:, :, : x.shape[2] - self.kernel[0] + 1, : x.shape[3] - self.kernel[1] + 1]


class GatedResnet(nn.Module):
    """x + a * sigmoid(b), [a, b] = conv(dropout(concat_elu(conv(concat_elu(x)) + nin(concat_elu(skip)))))."""

    def __init__(self, filters: int, conv: type[nn.Module], skip_inputs: int, dropout: float):
        super().__init__()
        self.conv_in = conv(2 * filters, filters)
        self.skip = weight_norm(nn.Conv2d(2 * skip_inputs * filters, filters, 1)) if skip_inputs else None
        self.dropout = nn.Dropout2d(dropout)
        self.conv_out = conv(2 * filters, 2 * filters)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.conv_in(concat_elu(x))
        if self.skip is not None and skip is not None:
            h = h + self.skip(concat_elu(skip))
        a, b = self.conv_out(self.dropout(concat_elu(h))).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)


class PixelCNNPP(nn.Module):
    """Images (B, C, H, W) in [-1, 1] -> mixture parameters (B, mixture_channels(C, K), H, W), the
    output at pixel i depending on the pixels before i in raster order only. H and W must be
    multiples of 4 (two stride-2 stages)."""

    def __init__(self, image_channels: int = 3, filters: int = 160, blocks: int = 5, components: int = 10, dropout: float = 0.5):
        super().__init__()
        self.image_channels = image_channels
        f, inputs = filters, image_channels + 1  # + a channel of ones, so zero padding marks the border

        def up_stage() -> nn.ModuleList:
            return nn.ModuleList(
                nn.ModuleList([GatedResnet(f, DownShiftedConv, 0, dropout), GatedResnet(f, DownRightShiftedConv, 1, dropout)])
                for _ in range(blocks)
            )

        def down_stage(n: int) -> nn.ModuleList:
            return nn.ModuleList(
                nn.ModuleList([GatedResnet(f, DownShiftedConv, 1, dropout), GatedResnet(f, DownRightShiftedConv, 2, dropout)])
                for _ in range(n)
            )

        self.u_init = DownShiftedConv(inputs, f, (2, 3))
        self.ul_init_above = DownShiftedConv(inputs, f, (1, 3))
        self.ul_init_left = DownRightShiftedConv(inputs, f, (2, 1))
        self.up = nn.ModuleList(up_stage() for _ in range(3))
        # The down pass also consumes the two downsampled maps of the up pass: one more block per stage.
        self.down = nn.ModuleList(down_stage(n) for n in (blocks, blocks + 1, blocks + 1))
        self.downsize_u = nn.ModuleList(DownShiftedConv(f, f, (2, 3), stride=2) for _ in range(2))
        self.downsize_ul = nn.ModuleList(DownRightShiftedConv(f, f, (2, 2), stride=2) for _ in range(2))
        self.upsize_u = nn.ModuleList(DownShiftedDeconv(f) for _ in range(2))
        self.upsize_ul = nn.ModuleList(DownRightShiftedDeconv(f) for _ in range(2))
        self.out = weight_norm(nn.Conv2d(f, mixture_channels(image_channels, components), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise UserError(f"PixelCNN++ needs image sides that are multiples of 4, got {tuple(x.shape[-2:])}")
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        u_list = [down_shift(self.u_init(x))]
        ul_list = [down_shift(self.ul_init_above(x)) + right_shift(self.ul_init_left(x))]
        for i, stage in enumerate(self.up):
            for u_block, ul_block in stage:
                u_list.append(u_block(u_list[-1]))
                ul_list.append(ul_block(ul_list[-1], u_list[-1]))
            if i < 2:
                u_list.append(self.downsize_u[i](u_list[-1]))
                ul_list.append(self.downsize_ul[i](ul_list[-1]))
        u, ul = u_list.pop(), ul_list.pop()
        for i, stage in enumerate(self.down):
            for u_block, ul_block in stage:
                u = u_block(u, u_list.pop())
                ul = ul_block(ul, torch.cat([u, ul_list.pop()], dim=1))
            if i < 2:
                u, ul = self.upsize_u[i](u), self.upsize_ul[i](ul)
        return self.out(F.elu(ul))


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Snap [-1, 1] values to the 256 levels the likelihood is defined on."""
    return torch.round((x.clamp(-1, 1) + 1) * (LEVELS - 1) / 2) * 2 / (LEVELS - 1) - 1


def sample_pixel(params: torch.Tensor, image_channels: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One draw (B, C) from the mixture at one position (``params``: (B, mixture_channels)): pick a
    component (Gumbel-max), draw each channel from its logistic in channel order, the later channels'
    means shifted by the earlier channels' drawn values."""
    logits, means, log_scales, coefficients = split_mixture(params[:, :, None, None], image_channels)
    gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=generator, device=params.device).clamp(1e-5, 1 - 1e-5)))
    chosen = (logits + gumbel).argmax(dim=1, keepdim=True)  # (B, 1, 1, 1)

    def pick(t: torch.Tensor) -> torch.Tensor:  # (B, n, K, 1, 1) -> (B, n, 1, 1, 1)
        return t.gather(2, chosen.unsqueeze(1).expand(-1, t.shape[1], -1, -1, -1))

    means, log_scales, coefficients = pick(means), pick(log_scales), pick(coefficients)
    values = torch.zeros(params.shape[0], image_channels, 1, 1, 1, device=params.device)
    for c in range(image_channels):
        u = torch.rand(params.shape[0], generator=generator, device=params.device).clamp(1e-5, 1 - 1e-5)
        mean = coupled_means(means, coefficients, values)[:, c, 0, 0, 0]
        draw = mean + torch.exp(log_scales[:, c, 0, 0, 0]) * (torch.log(u) - torch.log1p(-u))
        values[:, c, 0, 0, 0] = quantize(draw)
    return values.flatten(1)


@torch.no_grad()
def sample_lower_half(model: nn.Module, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Keep the upper half of ``images`` and draw the lower half pixel by pixel in raster order, each
    pixel from the model's distribution given the image so far (one forward pass per pixel). Rows
    below the current one cannot change its output, so each pass sees the image only down to the
    current row (rounded up to the model's multiple of 4)."""
    height, width = images.shape[-2:]
    canvas = images.clone()
    canvas[:, :, height // 2 :] = 0
    for row in range(height // 2, height):
        visible = min(height, (row // 4 + 1) * 4)
        for col in range(width):
            params = model(canvas[:, :, :visible])[:, :, row, col]
            canvas[:, :, row, col] = sample_pixel(params, images.shape[1], generator)
    return canvas
