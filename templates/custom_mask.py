"""A template for your own mask family: copy this file, rename the family, change ``__call__``.

    SSL_INPAINT_PLUGINS=templates/custom_mask.py ssl pretrain --mask stripes --rect-min 0.1 --rect-max 0.3 ...

A family is a dataclass whose fields are its parameters, registered under its ``--mask`` name. It owns
everything the toolkit needs to know about it, and nothing elsewhere names it:

- ``__call__(height, width, rng, objects)``: the hole, a (1, H, W) float tensor, 1 = missing. Draw
  every random number from ``rng`` (a ``numpy.random.Generator`` seeded per run seed, epoch and image),
  so holes are the same for any worker count, process count or resume.
- ``from_options(options)``: how the command's mask flags set its parameters. Reuse the existing flags
  (``--rect-min/--rect-max/--rect-count``, ``--patch-size``, ``--mask-ratio``, ...) or keep its defaults;
  each flag's own range is already checked.
- ``check()``: refuse parameter combinations that would draw nonsense, in one line naming the flags.
- ``largest_hole()``: the largest hole side as a fraction of the image side; ``ssl inpaint`` gives a
  larger hole a larger window so the generator sees the context-to-hole ratio it was trained on.
- ``needs_objects = True`` if it draws from the crop's annotated objects (then ``objects`` is a
  (N, H, W) tensor of COCO instance masks, and the command requires ``--dataset coco``).

tests/test_extending.py imports this file and runs it, from Python and through the ``ssl`` command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ssl_inpaint.masks import MASKS, MaskFamily, MaskOptions, check_not_above


@MASKS.register("stripes")
@dataclass
class Stripes(MaskFamily):
    """``count`` full-width horizontal or vertical stripes (each direction with probability 1/2), each
    as thick as a fraction of the side drawn from [min_size, max_size]: holes that cut objects in two,
    so the context on both sides must be joined."""

    min_size: float = 0.1
    max_size: float = 0.25
    count: int = 1

    @classmethod
    def from_options(cls, options: MaskOptions) -> "Stripes":
        return cls(min_size=options.rect_min, max_size=options.rect_max, count=options.rect_count)

    def check(self) -> None:
        check_not_above("rect-min", self.min_size, "rect-max", self.max_size)

    def largest_hole(self) -> float:
        return self.max_size  # the thickest stripe

    def __call__(self, height: int, width: int, rng: np.random.Generator, objects: Optional[torch.Tensor] = None) -> torch.Tensor:
        mask = torch.zeros(1, height, width)
        for _ in range(self.count):
            horizontal = bool(rng.integers(0, 2))
            side = height if horizontal else width
            thickness = max(1, round(rng.uniform(self.min_size, self.max_size) * side))
            start = int(rng.integers(0, side - thickness + 1))
            if horizontal:
                mask[:, start : start + thickness, :] = 1.0
            else:
                mask[:, :, start : start + thickness] = 1.0
        return mask
