"""Hole generators for the inpainting pretext: one class per mask family, registered by name in ``MASKS``.

Every generator is called as ``generator(height, width, rng, objects)`` and returns a float tensor of
shape (1, H, W) with 1 inside the hole and 0 on known pixels. All randomness comes from the
``numpy.random.Generator`` passed in, so a mask is a pure function of its seed: the data pipeline seeds
it per (run seed, epoch, sample index), which makes masks identical across worker counts, processes
and resumed runs. Sizes are fractions of the image side, so one recipe works at 64, 128 or 256 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ssl_inpaint.config import at_least, check_domains, MAX_SIDE, option, positive, Range, UNIT
from ssl_inpaint.errors import UserError
from ssl_inpaint.registry import Registry


class MaskGenerator(Protocol):
    def __call__(
        self, height: int, width: int, rng: np.random.Generator, objects: Optional[torch.Tensor] = None
    ) -> torch.Tensor: ...


# Where is the mask drawn? In the ``__call__`` of the family registered under the ``--mask`` name.
MASKS: Registry[Callable[..., MaskGenerator]] = Registry("mask family", "--mask")


def _box_mask(height: int, width: int, top: int, left: int, box_h: int, box_w: int) -> torch.Tensor:
    mask = torch.zeros(1, height, width)
    top, left = max(0, top), max(0, left)
    mask[:, top : min(height, top + box_h), left : min(width, left + box_w)] = 1.0
    return mask


@MASKS.register("centre")
@dataclass
class CentreSquare:
    """A centred square hole whose side is ``size`` x the image side (seed 003: 64 px of 128)."""

    size: float = 0.5

    def __call__(self, height, width, rng, objects=None):
        box_h, box_w = round(self.size * height), round(self.size * width)
        return _box_mask(height, width, (height - box_h) // 2, (width - box_w) // 2, box_h, box_w)


@MASKS.register("rect")
@dataclass
class RandomRectangles:
    """``count`` rectangles, sides uniform in [min_size, max_size] x image side, anywhere in the image.

    Seed 000 used one 20-25 px hole on 64 px images: min_size=0.3125, max_size=0.39.
    """

    min_size: float = 20 / 64
    max_size: float = 25 / 64
    count: int = 1

    def __call__(self, height, width, rng, objects=None):
        mask = torch.zeros(1, height, width)
        for _ in range(self.count):
            box_h = round(rng.uniform(self.min_size, self.max_size) * height)
            box_w = round(rng.uniform(self.min_size, self.max_size) * width)
            top = int(rng.integers(0, height - box_h + 1))
            left = int(rng.integers(0, width - box_w + 1))
            mask = torch.maximum(mask, _box_mask(height, width, top, left, box_h, box_w))
        return mask


@MASKS.register("gaussian_rect")
@dataclass
class GaussianRectangle:
    """Seed 001: top-left corner ~ N(mean, std), sides ~ U[min_side, max_side], on 64 px images.

    Expressed as fractions of the side (25/64, 10/64, 10/64, 20/64); the box is clipped to the image.
    """

    mean: float = 25 / 64
    std: float = 10 / 64
    min_side: float = 10 / 64
    max_side: float = 20 / 64

    def __call__(self, height, width, rng, objects=None):
        box_h = max(1, round(rng.uniform(self.min_side, self.max_side) * height))
        box_w = max(1, round(rng.uniform(self.min_side, self.max_side) * width))
        top = int(np.clip(round(rng.normal(self.mean, self.std) * height), 0, height - box_h))
        left = int(np.clip(round(rng.normal(self.mean, self.std) * width), 0, width - box_w))
        return _box_mask(height, width, top, left, box_h, box_w)


@MASKS.register("lower_half")
@dataclass
class LowerHalf:
    """Seed 002: the whole lower half is the hole (the model sees only the upper half)."""

    def __call__(self, height, width, rng, objects=None):
        return _box_mask(height, width, height // 2, 0, height - height // 2, width)


@MASKS.register("region")
@dataclass
class RandomRegion:
    """Context-encoder style random regions: coarse uniform noise, upsampled, thresholded so the hole
    covers a fraction drawn from U[min_coverage, max_coverage] of the image."""

    min_coverage: float = 0.2
    max_coverage: float = 0.3
    grain: int = 8  # noise cells per side; fewer cells give larger blobs

    def __call__(self, height, width, rng, objects=None):
        noise = torch.from_numpy(rng.random((1, 1, self.grain, self.grain), dtype=np.float32))
        field = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)[0]
        coverage = rng.uniform(self.min_coverage, self.max_coverage)
        # The top `coverage` quantile of the smooth field becomes the hole.
        threshold = torch.quantile(field.flatten(), 1.0 - coverage)
        return (field > threshold).float()


@MASKS.register("brush")
@dataclass
class BrushStrokes:
    """Free-form holes: random-walk brush strokes (the DeepFill v2 / LaMa family)."""

    max_strokes: int = 4
    max_vertices: int = 8
    min_width: float = 0.04  # brush width as a fraction of the image side
    max_width: float = 0.10
    max_step: float = 0.25  # length of one stroke segment as a fraction of the side

    def __call__(self, height, width, rng, objects=None):
        canvas = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        side = min(height, width)
        for _ in range(int(rng.integers(1, self.max_strokes + 1))):
            x, y = rng.uniform(0, width), rng.uniform(0, height)
            brush = max(1, round(rng.uniform(self.min_width, self.max_width) * side))
            points = [(x, y)]
            for _ in range(int(rng.integers(2, self.max_vertices + 1))):
                angle = rng.uniform(0, 2 * math.pi)
                length = rng.uniform(0.3, 1.0) * self.max_step * side
                x = float(np.clip(x + length * math.cos(angle), 0, width - 1))
                y = float(np.clip(y + length * math.sin(angle), 0, height - 1))
                points.append((x, y))
            draw.line(points, fill=255, width=brush, joint="curve")
            for px, py in points:  # round caps so strokes have no notches at the joints
                r = brush / 2
                draw.ellipse((px - r, py - r, px + r, py + r), fill=255)
        return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).round().unsqueeze(0)


@MASKS.register("patches")
@dataclass
class RandomPatches:
    """MAE / SimMIM-style masking: the image is cut into ``patch_size`` x ``patch_size`` pixel patches
    (the last row and column may be smaller when the side is not a multiple) and exactly
    ``round(ratio x number of patches)`` of them, drawn without replacement, become the hole."""

    patch_size: int = 4
    ratio: float = 0.75

    def __call__(self, height, width, rng, objects=None):
        rows, cols = math.ceil(height / self.patch_size), math.ceil(width / self.patch_size)
        chosen = rng.permutation(rows * cols)[: round(self.ratio * rows * cols)]
        grid = np.zeros(rows * cols, dtype=np.float32)
        grid[chosen] = 1.0
        cells = torch.from_numpy(grid.reshape(rows, cols))
        full = cells.repeat_interleave(self.patch_size, 0).repeat_interleave(self.patch_size, 1)
        return full[:height, :width].unsqueeze(0).contiguous()


@MASKS.register("coco_object")
@dataclass
class CocoObject:
    """Holes shaped like an annotated object of the image (pycocotools ``annToMask``, cropped with the
    image), so the pretext has to complete objects. Objects covering between ``min_area`` and
    ``max_area`` of the crop are eligible; an image with none falls back to ``fallback``."""

    min_area: float = 0.02
    max_area: float = 0.5
    fallback: MaskGenerator = field(default_factory=lambda: RandomRectangles(0.25, 0.5))

    def eligible(self, objects: Optional[torch.Tensor]) -> torch.Tensor:
        """Indices of the objects of the crop whose area lies in [min_area, max_area] (none: the fallback)."""
        if objects is None or objects.numel() == 0:
            return torch.zeros(0, dtype=torch.long)
        areas = objects.flatten(1).float().mean(dim=1)
        return torch.nonzero((areas >= self.min_area) & (areas <= self.max_area)).flatten()

    def __call__(self, height, width, rng, objects=None):
        eligible = self.eligible(objects)
        if eligible.numel() > 0:
            chosen = int(eligible[int(rng.integers(0, eligible.numel()))])
            return (objects[chosen : chosen + 1] > 0).float()
        return self.fallback(height, width, rng)


def create_mask_generator(kind: str, **params) -> MaskGenerator:
    """Build the generator for a mask family by name; ``params`` are that family's fields."""
    family = MASKS.get(kind)
    try:
        return family(**params)
    except TypeError as exc:
        raise UserError(f"bad parameters for mask kind {kind!r}: {exc}") from None


def apply_mask(image: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """The generator's input: known pixels kept, hole pixels set to ``fill`` (per channel), and the hole
    appended as an extra channel so the network knows which pixels are missing."""
    fill = fill.to(image).view(-1, 1, 1) if image.dim() == 3 else fill.to(image).view(1, -1, 1, 1)
    holed = image * (1 - mask) + fill * mask
    return torch.cat([holed, mask], dim=-3)


def mask_seed(base_seed: int, epoch: int, index: int) -> np.random.Generator:
    """A generator that depends only on (run seed, epoch, sample index)."""
    return np.random.default_rng([base_seed, epoch, index])


@dataclass
class MaskOptions:
    """The hole family and its parameters as config fields (``--mask``, ``--rect-min``, ...), shared by
    every command that cuts holes, so a recipe's mask keys mean the same thing everywhere."""

    mask: str = option("centre", f"Hole family: {MASKS.choices()}.", resume=False)
    centre_size: float = option(0.5, "centre: hole side as a fraction of the image side.", Range(0, 1, low_open=True, high_open=True), resume=False)
    rect_min: float = option(20 / 64, "rect: smallest hole side (fraction of the image side).", positive(1), resume=False)
    rect_max: float = option(25 / 64, "rect: largest hole side (fraction of the image side).", positive(1), resume=False)
    rect_count: int = option(1, "rect: number of rectangles per image.", at_least(1, 64), resume=False)
    gauss_mean: float = option(25 / 64, "gaussian_rect: mean of the top-left corner (fraction of the side).", UNIT, resume=False)
    gauss_std: float = option(10 / 64, "gaussian_rect: std of the top-left corner (fraction of the side).", UNIT, resume=False)
    gauss_min: float = option(10 / 64, "gaussian_rect: smallest side (fraction of the side).", positive(1), resume=False)
    gauss_max: float = option(20 / 64, "gaussian_rect: largest side (fraction of the side).", positive(1), resume=False)
    region_min: float = option(0.2, "region: smallest fraction of the image covered.", Range(0, 1, low_open=True, high_open=True), resume=False)
    region_max: float = option(0.3, "region: largest fraction of the image covered.", Range(0, 1, low_open=True, high_open=True), resume=False)
    brush_strokes: int = option(4, "brush: most strokes per image.", at_least(1, 1000), resume=False)
    patch_size: int = option(4, "patches: side of a square patch in pixels.", at_least(1, MAX_SIDE), resume=False)
    mask_ratio: float = option(0.75, "patches: fraction of the patches that become the hole (MAE: 0.75).", Range(0, 1, low_open=True, high_open=True), resume=False)
    object_min_area: float = option(0.02, "coco_object: smallest eligible object (fraction of the crop).", UNIT, resume=False)
    object_max_area: float = option(0.5, "coco_object: largest eligible object (fraction of the crop).", positive(1), resume=False)

    def mask_generator(self) -> MaskGenerator:
        params = {
            "centre": dict(size=self.centre_size),
            "rect": dict(min_size=self.rect_min, max_size=self.rect_max, count=self.rect_count),
            "gaussian_rect": dict(mean=self.gauss_mean, std=self.gauss_std, min_side=self.gauss_min, max_side=self.gauss_max),
            "lower_half": {},
            "region": dict(min_coverage=self.region_min, max_coverage=self.region_max),
            "brush": dict(max_strokes=self.brush_strokes),
            "patches": dict(patch_size=self.patch_size, ratio=self.mask_ratio),
            "coco_object": dict(min_area=self.object_min_area, max_area=self.object_max_area),
        }
        MASKS.get(self.mask)  # an unknown name: one error line with the choices
        self._check_ranges()
        return create_mask_generator(self.mask, **params[self.mask])

    def _check_ranges(self) -> None:
        """Each option's own ``Range`` (again here: options built in code skip the CLI), then the
        smallest-largest pairs of the chosen family, which would otherwise draw nonsense."""
        check_domains(self)
        pairs = {
            "rect": ("rect-min", self.rect_min, "rect-max", self.rect_max),
            "gaussian_rect": ("gauss-min", self.gauss_min, "gauss-max", self.gauss_max),
            "region": ("region-min", self.region_min, "region-max", self.region_max),
            "coco_object": ("object-min-area", self.object_min_area, "object-max-area", self.object_max_area),
        }
        if self.mask in pairs:
            low_flag, low, high_flag, high = pairs[self.mask]
            if low > high:
                raise UserError(f"--{low_flag} ({low}) must not exceed --{high_flag} ({high})")


def degenerate_holes(masks: torch.Tensor) -> torch.Tensor:
    """(B,) True where an image's hole is empty or covers the whole image: nothing to complete, or
    nothing to complete it from. Such images must not be scored (an empty hole's PSNR is infinite)."""
    covered = masks.flatten(1).float().mean(dim=1)
    return (covered == 0) | (covered == 1)
