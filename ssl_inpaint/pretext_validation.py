"""The pretext's fixed validation batch scored: completion metrics (PSNR, SSIM, L1 over the image
and the hole) computed on a strided share of the images per process and gathered, so they equal the
single-process figures; the (original | holed input | completed) grid and, for generators with
self-attention, where the hole's pixels attend. ``ssl pretrain`` logs them every --sample-every steps."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torchvision.utils import make_grid

from ssl_inpaint.distributed import Distributed, gather_rows
from ssl_inpaint.gan_step import composite
from ssl_inpaint.metrics import completion_metrics, ssim, to_unit
from ssl_inpaint.runtime import autocast, unwrap


@torch.inference_mode()
def validate(
    generator: nn.Module, batch: dict[str, torch.Tensor], dist: Distributed, precision: str = "fp32"
) -> tuple[dict[str, float], Optional[torch.Tensor]]:
    """Metrics on the fixed validation batch, each process taking a strided share of the images and
    the per-image values gathered, so they equal the single-process figures. The main process also
    returns a grid of (original | holed input | completed) rows."""
    was_training = generator.training
    generator.eval()
    total = batch["image"].shape[0]
    mine = torch.arange(dist.rank, total, dist.world_size)
    image, mask, inputs = (batch[k][mine] for k in ("image", "mask", "input"))
    with autocast(precision, image.device):
        completed = composite(image, generator(inputs), mask)
    per_image = completion_metrics(completed, image, mask)
    # Seed 001's yardstick: SSIM over the whole image, of the completion and of the holed input itself
    # (the baseline a completion must beat), and of ApproxNet's completion where there is one.
    unit_image = to_unit(image.float())
    per_image["ssim_image"] = ssim(to_unit(completed.float()), unit_image)
    per_image["ssim_image_holed_input"] = ssim(to_unit(inputs[:, :-1].float()), unit_image)
    if hasattr(unwrap(generator), "approximate"):
        with autocast(precision, image.device):
            rough = composite(image, unwrap(generator).approximate(inputs), mask)
        per_image["ssim_image_approxnet"] = ssim(to_unit(rough.float()), unit_image)
    names = list(per_image)
    rows = torch.stack([per_image[k] for k in names], dim=1).cpu().numpy()
    gathered = gather_rows(rows, mine.numpy(), dist.world_size, total)
    metrics = {name: float(gathered[:, j].mean()) for j, name in enumerate(names)}
    grid = None
    if dist.is_main:
        shown = min(8, total)
        with autocast(precision, image.device):
            completed = composite(batch["image"][:shown], generator(batch["input"][:shown]), batch["mask"][:shown])
        rows_img = torch.stack([batch["image"][:shown], batch["input"][:shown, :-1], completed], dim=1).flatten(0, 1)
        grid = make_grid(to_unit(rows_img.float()).cpu(), nrow=3, padding=2, pad_value=1.0)
    generator.train(was_training)
    return metrics, grid


@torch.inference_mode()
def attention_grid(generator: nn.Module, batch: dict[str, torch.Tensor], precision: str = "fp32") -> Optional[torch.Tensor]:
    """Rows of (original | where the hole's pixels attend) for generators with self-attention
    (seed 001); None for the others."""
    model = unwrap(generator)
    if not hasattr(model, "attention_maps"):
        return None
    was_training = model.training
    model.eval()
    shown = min(8, batch["image"].shape[0])
    image, mask = batch["image"][:shown], batch["mask"][:shown]
    with autocast(precision, image.device):
        model(batch["input"][:shown])
    heat = model.attention_maps(mask).float().expand(-1, 3, -1, -1)
    original = to_unit(image.float()).expand(-1, 3, -1, -1)
    model.train(was_training)
    rows = torch.stack([original, 0.3 * original + 0.7 * heat], dim=1).flatten(0, 1)
    return make_grid(rows.cpu(), nrow=2, padding=2, pad_value=1.0)
