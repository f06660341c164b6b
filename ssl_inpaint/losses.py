"""Losses of the inpainting pretext (seed 003, section 5.3).

    L_G = w1 * rec(known pixels) + w2 * rec(hole) + w3 * adv(D_global) + w4 * adv(D_local)
    L_D = BCE(D(real), 1) + BCE(D(completed), 0)          for each discriminator

``rec`` is MSE (the seed) or L1, averaged over the pixels of its region in each image, so the weights
do not drift with the hole size. The adversarial terms are the non-saturating -log D(G(x)), computed from logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    known: float = 0.9
    hole: float = 0.1
    adv_global: float = 1e-5
    adv_local: float = 1e-5


def region_error(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Squared (or absolute) error averaged over each image's pixels where ``region`` is 1, then over
    the batch. Per-image means give every image the same weight whatever its hole size, and make the
    loss of a batch split across processes average to the loss of the whole batch."""
    diff = (pred - target).float()
    per_pixel = diff.square() if kind == "mse" else diff.abs()
    region = region.float().expand_as(per_pixel)
    per_image = (per_pixel * region).flatten(1).sum(1) / region.flatten(1).sum(1).clamp_min(1.0)
    return per_image.mean()


def adversarial_target_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return adversarial_target_loss(real_logits, True) + adversarial_target_loss(fake_logits, False)


def generator_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    weights: LossWeights,
    recon: str = "mse",
    global_logits: Optional[torch.Tensor] = None,
    local_logits: Optional[torch.Tensor] = None,
) -> dict[str, torch.Tensor]:
    """All generator terms plus their weighted ``total``. ``prediction`` is the raw generator output
    (its known pixels are what the known-pixel term trains); the adversarial terms use the logits the
    discriminators gave the composited image (pass None when a discriminator is off)."""
    terms = {
        "rec_known": region_error(prediction, target, 1 - mask, recon),
        "rec_hole": region_error(prediction, target, mask, recon),
    }
    total = weights.known * terms["rec_known"] + weights.hole * terms["rec_hole"]
    if global_logits is not None:
        terms["adv_global"] = adversarial_target_loss(global_logits, True)
        total = total + weights.adv_global * terms["adv_global"]
    if local_logits is not None:
        terms["adv_local"] = adversarial_target_loss(local_logits, True)
        total = total + weights.adv_local * terms["adv_local"]
    terms["total"] = total
    return terms
