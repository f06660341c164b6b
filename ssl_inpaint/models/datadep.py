"""A data-dependent initialisation with no pretext: ``ssl finetune --init datadep``.

Krähenbühl, Doersch, Donahue and Darrell (ICLR 2016, "Data-dependent initializations of convolutional
neural networks") matched the context encoder's gain over random init on VOC07 (56.6 vs 56.5 mAP) with
no pretraining at all, so a pretext has to beat this baseline, not only PyTorch's default init, to
show it taught the encoder something. The two parts used here:

1. **first layer from k-means on whitened patches** (their k-means variant, after Coates & Ng): the
   input patches the first conv sees are ZCA-whitened, spherical k-means finds one centroid per filter,
   and each filter is its centroid mapped back through the whitening (the hole channel gets zeros);
2. **within-layer rescaling**: every conv, shallow to deep, is scaled so that each of its output
   channels has unit variance on the data (and, where the conv has a bias, zero mean), so every layer
   starts at the same scale whatever PyTorch's default init gave it.

Afterwards the BatchNorm running statistics are those of the data. Only unlabelled training images
are used, the same ones ``--bn-stats clean`` uses.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ssl_inpaint.errors import UserError

WHITENING_EPS = 0.1  # added to the patch covariance's eigenvalues (Coates & Ng use 0.01-0.1 for pixels in [0, 1]-ish scales)
MAX_PATCHES = 20000


def _convs(encoder: nn.Module) -> list[nn.Conv2d]:
    return [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]


def _with_hole_channel(images: torch.Tensor) -> torch.Tensor:
    return torch.cat([images, torch.zeros_like(images[:, :1])], dim=1)


def _patches(images: torch.Tensor, conv: nn.Conv2d, rng: np.random.Generator) -> np.ndarray:
    """Up to MAX_PATCHES input patches of ``conv`` (image channels only), one a row."""
    cols = F.unfold(images, conv.kernel_size, conv.dilation, conv.padding, conv.stride)  # (N, C*k*k, L)
    rows = cols.permute(0, 2, 1).reshape(-1, cols.shape[1]).double().numpy()
    if len(rows) > MAX_PATCHES:
        rows = rows[rng.choice(len(rows), MAX_PATCHES, replace=False)]
    return rows


def kmeans_filters(patches: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` filters (count, dim): spherical k-means centroids of the ZCA-whitened patches, mapped
    back through the (symmetric) whitening so that a filter's response to a raw patch is its
    centroid's response to the whitened patch, up to a constant the next BatchNorm removes."""
    from sklearn.cluster import KMeans

    if len(patches) < count:
        raise UserError(f"--init datadep needs at least {count} patches for the first layer's k-means; give more training images")
    centred = patches - patches.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(centred, rowvar=False))
    whitening = eigenvectors @ np.diag(1.0 / np.sqrt(np.clip(eigenvalues, 0, None) + WHITENING_EPS)) @ eigenvectors.T
    white = centred @ whitening
    white /= np.linalg.norm(white, axis=1, keepdims=True).clip(1e-8)
    centroids = KMeans(count, n_init=1, max_iter=100, random_state=seed).fit(white).cluster_centers_
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True).clip(1e-8)
    return centroids @ whitening


@torch.no_grad()
def _rescale_outputs(conv: nn.Conv2d, inputs: torch.Tensor, forward) -> None:
    """Scale ``conv`` so each output channel has unit variance on ``inputs`` (zero mean if it has a bias)."""
    captured: list[torch.Tensor] = []
    handle = conv.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        forward(inputs)
    finally:
        handle.remove()
    if not captured:
        return  # the conv is not on the path the features use (e.g. the latent under pooled features)
    out = captured[0].double()
    mean = out.mean(dim=(0, 2, 3))
    std = out.std(dim=(0, 2, 3)).clamp_min(1e-8)
    conv.weight.div_(std.to(conv.weight.dtype).view(-1, 1, 1, 1))
    if conv.bias is not None:
        conv.bias.copy_(((conv.bias.double() - mean) / std).to(conv.bias.dtype))


@torch.no_grad()
def data_dependent_init(encoder: nn.Module, images: torch.Tensor, forward, seed: int = 0) -> None:
    """Initialise ``encoder`` in place from ``images`` (B, C, H, W) in [-1, 1], unlabelled.
    ``forward(inputs)`` runs the encoder the way the classifier will (image + zero hole channel).
    Runs in train mode (batch statistics), like the pretext; the caller re-estimates BatchNorm after."""
    convs = _convs(encoder)
    if not convs:
        raise UserError("--init datadep needs an encoder with convolutions")
    inputs = _with_hole_channel(images)
    first = convs[0]
    channels = images.shape[1]
    if first.groups != 1 or first.in_channels != channels + 1:
        raise UserError(f"--init datadep: the first conv takes {first.in_channels} channels, expected {channels + 1} (image + hole)")
    rng = np.random.default_rng(seed)
    filters = kmeans_filters(_patches(images, first, rng), first.out_channels, seed)
    weight = torch.zeros_like(first.weight)
    weight[:, :channels] = torch.from_numpy(filters).to(weight.dtype).view(first.out_channels, channels, *first.kernel_size)
    first.weight.copy_(weight)
    if first.bias is not None:
        first.bias.zero_()
    was_training = encoder.training
    encoder.train()
    try:
        for conv in convs:
            _rescale_outputs(conv, inputs, forward)
    finally:
        encoder.train(was_training)
