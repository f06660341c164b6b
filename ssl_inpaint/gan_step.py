"""One optimisation step of the inpainting GAN (``train_step``): the discriminators' step on real vs
completed images, then the generator's on reconstruction + adversarial terms, over one or more
accumulated micro-batches, and the phases of the multi-stage schedules (GLCIC, two-stage,
ApproxNet then refiner) that decide which of the two steps run.

  1. the generator fills the hole; the *completed* image keeps the known pixels of the input and
     takes the hole from the generator (that is what the discriminators judge);
  2. discriminator step on real vs completed (generator output detached);
  3. generator step on reconstruction + adversarial terms, with the discriminators frozen so this
     step leaves no gradients in them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch
from torch import nn

from ssl_inpaint.distributed import average_gradients
from ssl_inpaint.losses import LossWeights, discriminator_loss, generator_loss
from ssl_inpaint.models import InpaintingModels, crop_boxes, hole_boxes
from ssl_inpaint.runtime import autocast, unwrap

PHASES = ("reconstruction", "discriminator", "joint")
SCHEDULES = ("joint", "glcic", "two_stage", "approx_then_refine")
# The two stages of the two-stage schedules: seed 004 trains G and D jointly, then G alone against
# the frozen D ("frozen_d"); seed 001 trains ApproxNet alone ("approx"), then the refiner and D jointly.
STAGES = {"two_stage": ("joint", "frozen_d"), "approx_then_refine": ("approx", "joint")}
# Seed 001's ApproxNet stage: L1 on the hole only.
APPROX_WEIGHTS = LossWeights(known=0.0, hole=1.0, adv_global=0.0, adv_local=0.0)


def phase_at(fractions: tuple[float, float, float], position: int, length: int) -> str:
    """Which GLCIC phase step ``position`` of ``length`` falls in."""
    progress = position / max(length, 1)
    bounds = (fractions[0], fractions[0] + fractions[1])
    return PHASES[0] if progress < bounds[0] else PHASES[1] if progress < bounds[1] else PHASES[2]


@contextlib.contextmanager
def frozen(*modules: Optional[nn.Module]) -> Iterator[None]:
    """Gradients flow *through* the modules but are not accumulated *into* their parameters."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    previous = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, previous):
            p.requires_grad_(flag)


def composite(image: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Known pixels from the real image, the hole from the generator."""
    return image * (1 - mask) + prediction.to(image.dtype) * mask


def discriminator_logits(
    models: InpaintingModels, images: torch.Tensor, boxes: Optional[torch.Tensor]
) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    if models.fused:  # one logit from the whole image and the crop; it takes the global slot
        return models.global_d(images, crop_boxes(images, boxes, models.local_size)), None
    global_logits = models.global_d(images) if models.global_d is not None else None
    local_logits = (
        models.local_d(crop_boxes(images, boxes, models.local_size)) if models.local_d is not None else None
    )
    return global_logits, local_logits


@dataclass
class Optimizers:
    """The two GAN optimizers, each with its own fp16 loss scaler."""

    g: torch.optim.Optimizer
    d: Optional[torch.optim.Optimizer]
    scaler_g: torch.amp.GradScaler
    scaler_d: torch.amp.GradScaler

    def state_dict(self) -> dict[str, Any]:
        return {
            "opt_g": self.g.state_dict(),
            "opt_d": self.d.state_dict() if self.d is not None else None,
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g.load_state_dict(state["opt_g"])
        if self.d is not None:
            self.d.load_state_dict(state["opt_d"])
        self.scaler_g.load_state_dict(state["scaler_g"])
        self.scaler_d.load_state_dict(state["scaler_d"])


def _apply(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, params: list[nn.Parameter], world_size: int) -> None:
    """Average gradients over processes, then step through the loss scaler."""
    average_gradients(params, world_size)
    scaler.step(optimizer)
    scaler.update()


def train_step(
    models: InpaintingModels,
    micro_batches: list[dict[str, torch.Tensor]],
    opts: Optimizers,
    weights: LossWeights,
    recon: str,
    phase: str,
    precision: str = "fp32",
    world_size: int = 1,
) -> dict[str, float]:
    """One optimisation step of the given phase over one or more (accumulated) micro-batches.

    The discriminators step first, on real vs completed images (generator output detached); then the
    generator steps with the discriminators frozen. With one micro-batch the generator output of the
    discriminator step is reused; with several, each micro-batch's output is recomputed for the
    generator step so that memory stays that of one micro-batch.
    """
    device = micro_batches[0]["image"].device
    train_g = phase in ("reconstruction", "joint", "frozen_d", "approx")
    use_d = opts.d is not None and phase in ("discriminator", "joint")
    adversarial = phase in ("joint", "frozen_d") and opts.d is not None
    generate = models.generator
    if phase == "approx":  # seed 001: ApproxNet alone, L1 on the hole
        generate, weights, recon = unwrap(models.generator).approximate, APPROX_WEIGHTS, "l1"
    n = len(micro_batches)
    reuse = n == 1 and train_g
    sums: dict[str, float] = {}

    def add(key: str, value: torch.Tensor) -> None:
        sums[key] = sums.get(key, 0.0) + value.item() / n

    cached: list[torch.Tensor] = []
    if use_d:
        opts.d.zero_grad(set_to_none=True)
        for mb in micro_batches:
            image, mask = mb["image"], mb["mask"]
            with torch.set_grad_enabled(reuse), autocast(precision, device):
                prediction = models.generator(mb["input"])
            if reuse:
                cached.append(prediction)
            completed = composite(image, prediction.detach(), mask)
            boxes = hole_boxes(mask, models.local_size) if models.uses_crops else None
            with autocast(precision, device):
                real_g, real_l = discriminator_logits(models, image, boxes)
                fake_g, fake_l = discriminator_logits(models, completed, boxes)
            loss_d = torch.zeros((), device=device)
            for label, real, fake in (("global", real_g, fake_g), ("local", real_l, fake_l)):
                if real is None:
                    continue
                term = discriminator_loss(real, fake)
                loss_d = loss_d + term
                add(f"loss/d_{label}", term)
                add(f"d/{label}_real", torch.sigmoid(real.float()).mean())
                add(f"d/{label}_fake", torch.sigmoid(fake.float()).mean())
            opts.scaler_d.scale(loss_d / n).backward()
        _apply(opts.d, opts.scaler_d, [p for d in models.discriminators for p in d.parameters()], world_size)

    if train_g:
        opts.g.zero_grad(set_to_none=True)
        for i, mb in enumerate(micro_batches):
            image, mask = mb["image"], mb["mask"]
            with autocast(precision, device):
                prediction = cached[i] if cached else generate(mb["input"])
                completed = composite(image, prediction, mask)
                boxes = hole_boxes(mask, models.local_size) if models.uses_crops and adversarial else None
                with frozen(*models.discriminators):
                    logits = discriminator_logits(models, completed, boxes) if adversarial else (None, None)
            terms = generator_loss(prediction.float(), image, mask, weights, recon, *logits, features=models.features)
            opts.scaler_g.scale(terms["total"] / n).backward()
            for key, value in terms.items():
                add(f"loss/g_{key}", value)
        _apply(opts.g, opts.scaler_g, list(models.generator.parameters()), world_size)
    return sums
