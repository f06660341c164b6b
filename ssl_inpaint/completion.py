"""A trained generator as a tool: load it from a pretrain run and fill holes in fixed-size windows.

Shared by ``ssl inpaint`` (a user's images of any size) and ``ssl evaluate`` (a test set, next to the
classical baselines). The generator sees exactly what it saw in training: an image in [-1, 1] of the
training side, the hole set to the training fill value, and the hole as an extra channel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ssl_inpaint.distributed import select_device
from ssl_inpaint.runtime import autocast, check_precision
from ssl_inpaint.masks import MASKS, MaskOptions, apply_mask
from ssl_inpaint.models import load_generator
from ssl_inpaint.metrics import to_unit


@dataclass
class Inpainter:
    generator: nn.Module
    image_size: int
    channels: int
    fill: torch.Tensor
    # Largest hole side, as a fraction of the window, that the generator is asked to fill; larger
    # holes get a larger window resized down to ``image_size``.
    max_hole: float
    # Seed 003's model M3 decodes only the centre square: holes must sit there.
    centre_only: bool
    device: torch.device
    precision: str = "fp32"

    @torch.no_grad()
    def predict(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Generator output in [0, 1] for (B, C, S, S) images in [0, 1] and (B, 1, S, S) holes (1 = hole).
        Pixels outside the hole are the network's reconstruction, not the input: composite afterwards."""
        images = images.to(self.device, torch.float32) * 2 - 1
        masks = masks.to(self.device, torch.float32)
        with autocast(self.precision, self.device):
            out = self.generator(apply_mask(images, masks, self.fill.to(self.device)))
        return to_unit(out.float()).cpu()


def _max_hole(config: dict) -> float:
    """The largest hole side the generator met in training (a fraction of the image side): its mask
    family's, built from the run's saved options (0.5 for a family this installation does not know)."""
    if config.get("predict") == "hole":
        return 0.5
    if config.get("mask") not in MASKS:
        return 0.5
    names = {f.name for f in dataclasses.fields(MaskOptions)}
    return MaskOptions(**{k: v for k, v in config.items() if k in names}).mask_family().largest_hole()


def load_inpainter(checkpoint: str | Path, device: str = "auto", precision: str = "fp32") -> Inpainter:
    """The generator of a pretrain run (``models.load_generator``) as an inpainting tool."""
    trained = load_generator(checkpoint)
    torch_device = select_device(device)
    check_precision(precision, torch_device)
    return Inpainter(
        generator=trained.generator.to(torch_device).eval(),
        image_size=trained.options.image_size,
        channels=trained.image_channels,
        fill=trained.fill,
        max_hole=_max_hole(trained.config),
        centre_only=trained.options.predict == "hole",
        device=torch_device,
        precision=precision,
    )
