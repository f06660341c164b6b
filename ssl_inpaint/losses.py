"""Losses of the inpainting pretext (seed 003, section 5.3).

    L_G = w1 * rec(known pixels) + w2 * rec(hole) + w3 * adv(D_global) + w4 * adv(D_local)
    L_D = BCE(D(real), 1) + BCE(D(completed), 0)          for each discriminator

``rec`` is MSE (the seed) or L1, averaged over the pixels of its region in each image, so the weights
do not drift with the hole size. The adversarial terms are the non-saturating -log D(G(x)), computed from logits.

Seed 004 adds the perceptual and style losses of Johnson et al. (2016) on frozen VGG16 features of
the completed image: L1 between the feature maps, and L1 between their Gram matrices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    known: float = 0.9
    hole: float = 0.1
    adv_global: float = 1e-5
    adv_local: float = 1e-5
    perceptual: float = 0.0
    style: float = 0.0
    # MAE's norm_pix_loss: > 0 compares the hole against per-patch normalised targets, patches of
    # this many pixels a side (see ``patch_normalised_weight``); 0 compares raw pixels.
    norm_pix_patch: int = 0


# Added to a patch's variance before normalising by it (images are in [-1, 1]): a flat patch, e.g.
# Fashion-MNIST's black background, would otherwise get an unbounded weight.
NORM_PIX_EPS = 1e-2


def patch_normalised_weight(target: torch.Tensor, patch: int, eps: float = NORM_PIX_EPS) -> torch.Tensor:
    """Per-pixel weight 1 / (variance of the pixel's patch + eps), shape (B, 1, H, W).

    MAE's ``norm_pix_loss`` regresses (target - mean) / std of each patch. Writing the prediction in
    the same normalised coordinates, (pred - mean) / std - (target - mean) / std = (pred - target) / std,
    so the squared error weighted by 1 / variance is exactly that loss, while the generator keeps
    producing an image (its completions and validation metrics stay meaningful)."""
    height, width = target.shape[-2:]
    pad = (0, (-width) % patch, 0, (-height) % patch)
    padded = F.pad(target.float(), pad, mode="replicate")
    mean = F.avg_pool2d(padded, patch).mean(1, keepdim=True)
    mean_sq = F.avg_pool2d(padded.square(), patch).mean(1, keepdim=True)
    variance = (mean_sq - mean.square()).clamp_min(0)
    weight = 1.0 / (variance + eps)
    return weight.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[..., :height, :width]


def region_error(
    pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor, kind: str = "mse", weight: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Squared (or absolute) error averaged over each image's pixels where ``region`` is 1, then over
    the batch. Per-image means give every image the same weight whatever its hole size, and make the
    loss of a batch split across processes average to the loss of the whole batch. ``weight``
    (broadcastable to the error) scales each pixel's error."""
    diff = (pred - target).float()
    per_pixel = diff.square() if kind == "mse" else diff.abs()
    if weight is not None:
        per_pixel = per_pixel * weight
    region = region.float().expand_as(per_pixel)
    per_image = (per_pixel * region).flatten(1).sum(1) / region.flatten(1).sum(1).clamp_min(1.0)
    return per_image.mean()


def adversarial_target_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return adversarial_target_loss(real_logits, True) + adversarial_target_loss(fake_logits, False)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, C) channel correlations, normalised by the map's size so layers are comparable."""
    b, c, h, w = features.shape
    flat = features.float().flatten(2)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def feature_losses(
    features: Callable[[torch.Tensor], list[torch.Tensor]], completed: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(perceptual, style): mean L1 between feature maps and between their Gram matrices, summed
    over layers. The target's features are constants."""
    with torch.no_grad():
        wanted = features(target)
    got = features(completed)
    perceptual = sum(F.l1_loss(g.float(), w.float()) for g, w in zip(got, wanted))
    style = sum(F.l1_loss(gram_matrix(g), gram_matrix(w)) for g, w in zip(got, wanted))
    return perceptual, style  # type: ignore[return-value]


def generator_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    weights: LossWeights,
    recon: str = "mse",
    global_logits: Optional[torch.Tensor] = None,
    local_logits: Optional[torch.Tensor] = None,
    features: Optional[Callable[[torch.Tensor], list[torch.Tensor]]] = None,
) -> dict[str, torch.Tensor]:
    """All generator terms plus their weighted ``total``. ``prediction`` is the raw generator output
    (its known pixels are what the known-pixel term trains); the adversarial terms use the logits the
    discriminators gave the composited image (pass None when a discriminator is off). ``features``
    (a frozen VGG16) adds the perceptual and style terms on the completed image when their weights are
    non-zero."""
    terms = {
        "rec_known": region_error(prediction, target, 1 - mask, recon),
        "rec_hole": region_error(
            prediction, target, mask, recon,
            patch_normalised_weight(target, weights.norm_pix_patch) if weights.norm_pix_patch else None,
        ),
    }
    total = weights.known * terms["rec_known"] + weights.hole * terms["rec_hole"]
    if global_logits is not None:
        terms["adv_global"] = adversarial_target_loss(global_logits, True)
        total = total + weights.adv_global * terms["adv_global"]
    if local_logits is not None:
        terms["adv_local"] = adversarial_target_loss(local_logits, True)
        total = total + weights.adv_local * terms["adv_local"]
    if features is not None and (weights.perceptual or weights.style):
        completed = target * (1 - mask) + prediction * mask
        terms["perceptual"], terms["style"] = feature_losses(features, completed, target)
        total = total + weights.perceptual * terms["perceptual"] + weights.style * terms["style"]
    terms["total"] = total
    return terms


class StartingPointPenalty:
    """L2-SP (Li, Grandvalet and Davoine, 2018), for fine-tuning on few labels: alpha/2 x the squared
    distance of the encoder's weights from where fine-tuning started (the pretext's weights, or a
    baseline's init), so they may move where the labels ask but are pulled back towards what they
    were. Only weight matrices and kernels (ndim > 1), as weight decay: BatchNorm affines and biases
    are free. The anchors are a copy taken when the penalty is made: make it before resuming."""

    def __init__(self, parameters: Iterable[torch.nn.Parameter], alpha: float):
        self.parameters = [p for p in parameters if p.ndim > 1]
        self.anchors = [p.detach().clone() for p in self.parameters]
        self.alpha = alpha

    def __call__(self) -> torch.Tensor:
        distance = sum(((p - a) ** 2).sum() for p, a in zip(self.parameters, self.anchors))
        return 0.5 * self.alpha * distance
