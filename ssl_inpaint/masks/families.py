"""Hole generators for the inpainting pretext: one class per mask family, registered by name in ``MASKS``.

A family is a ``MaskFamily``: it says how it is built from the command's mask options
(``from_options``), which parameter combinations it refuses (``check``), the largest hole it draws
(``largest_hole``, which ``ssl inpaint`` sizes its windows by) and whether it needs the crop's
annotated objects (``needs_objects``); nothing outside this file names a family. docs/extending.md
and templates/custom_mask.py show how to add one.

Every generator is called as ``generator(height, width, rng, objects)`` and returns a float tensor of
shape (1, H, W) with 1 inside the hole and 0 on known pixels. All randomness comes from the
``numpy.random.Generator`` passed in, so a mask is a pure function of its seed: the data pipeline seeds
it per (run seed, epoch, sample index), which makes masks identical across worker counts, processes
and resumed runs. Sizes are fractions of the image side, so one recipe works at 64, 128 or 256 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Protocol

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


class MaskFamily:
    """The base of every mask family (a dataclass whose fields are its parameters, registered with
    ``@MASKS.register(name)``). Override ``__call__``, and what differs from these defaults."""

    needs_objects: ClassVar[bool] = False  # draws from the crop's annotated objects (COCO), passed as ``objects``

    @classmethod
    def from_options(cls, options: "MaskOptions") -> "MaskFamily":
        """The family built from the command's mask options (``--rect-min`` ...); default: its own defaults."""
        return cls()

    def check(self) -> None:
        """Refuse parameters that would draw nonsense, with one line naming the flags (each option's
        own range is checked before this)."""

    def largest_hole(self) -> float:
        """The largest hole side this family draws, as a fraction of the image side: ``ssl inpaint``
        gives a larger hole a larger window, so the generator sees the context-to-hole ratio it learnt."""
        return 0.5

    def __call__(self, height: int, width: int, rng: np.random.Generator, objects: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError


# Where is the mask drawn? In the ``__call__`` of the family registered under the ``--mask`` name.
MASKS: Registry[type[MaskFamily]] = Registry("mask family", "--mask")


def check_not_above(low_flag: str, low: float, high_flag: str, high: float) -> None:
    """A family's smallest-largest pair: one line naming both flags when the smallest is larger."""
    if low > high:
        raise UserError(f"--{low_flag} ({low}) must not exceed --{high_flag} ({high})")


def _box_mask(height: int, width: int, top: int, left: int, box_h: int, box_w: int) -> torch.Tensor:
    mask = torch.zeros(1, height, width)
    top, left = max(0, top), max(0, left)
    mask[:, top : min(height, top + box_h), left : min(width, left + box_w)] = 1.0
    return mask


@MASKS.register("centre")
@dataclass
class CentreSquare(MaskFamily):
    """A centred square hole whose side is ``size`` x the image side (seed 003: 64 px of 128)."""

    size: float = 0.5

    @classmethod
    def from_options(cls, options: "MaskOptions") -> "CentreSquare":
        return cls(size=options.centre_size)

    def largest_hole(self) -> float:
        return self.size

    def __call__(self, height, width, rng, objects=None):
        box_h, box_w = round(self.size * height), round(self.size * width)
        return _box_mask(height, width, (height - box_h) // 2, (width - box_w) // 2, box_h, box_w)


@MASKS.register("rect")
@dataclass
class RandomRectangles(MaskFamily):
    """``count`` rectangles, sides uniform in [min_size, max_size] x image side, anywhere in the image.

    Seed 000 used one 20-25 px hole on 64 px images: min_size=0.3125, max_size=0.39.
    """

    min_size: float = 20 / 64
    max_size: float = 25 / 64
    count: int = 1

    @classmethod
    def from_options(cls, options: "MaskOptions") -> "RandomRectangles":
        return cls(min_size=options.rect_min, max_size=options.rect_max, count=options.rect_count)

    def check(self) -> None:
        check_not_above("rect-min", self.min_size, "rect-max", self.max_size)

    def largest_hole(self) -> float:
        return self.max_size

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
class GaussianRectangle(MaskFamily):
    """Seed 001: top-left corner ~ N(mean, std), sides ~ U[min_side, max_side], on 64 px images.

    Expressed as fractions of the side (25/64, 10/64, 10/64, 20/64); the box is clipped to the image.
    """

    mean: float = 25 / 64
    std: float = 10 / 64
    min_side: float = 10 / 64
    max_side: float = 20 / 64

    @classmethod
    def from_options(cls, options: "MaskOptions") -> "GaussianRectangle":
        return cls(mean=options.gauss_mean, std=options.gauss_std, min_side=options.gauss_min, max_side=options.gauss_max)

    def check(self) -> None:
        check_not_above("gauss-min", self.min_side, "gauss-max", self.max_side)

    def largest_hole(self) -> float:
        return self.max_side

    def __call__(self, height, width, rng, objects=None):
        box_h = max(1, round(rng.uniform(self.min_side, self.max_side) * height))
        box_w = max(1, round(rng.uniform(self.min_side, self.max_side) * width))
        top = int(np.clip(round(rng.normal(self.mean, self.std) * height), 0, height - box_h))
        left = int(np.clip(round(rng.normal(self.mean, self.std) * width), 0, width - box_w))
        return _box_mask(height, width, top, left, box_h, box_w)


@MASKS.register("lower_half")
@dataclass
class LowerHalf(MaskFamily):
    """Seed 002: the whole lower half is the hole (the model sees only the upper half)."""

    def __call__(self, height, width, rng, objects=None):
        return _box_mask(height, width, height // 2, 0, height - height // 2, width)


@MASKS.register("region")
@dataclass
class RandomRegion(MaskFamily):
    """Context-encoder style random regions: coarse uniform noise, upsampled, thresholded so the hole
    covers a fraction drawn from U[min_coverage, max_coverage] of the image."""

    min_coverage: float = 0.2
    max_coverage: float = 0.3
    grain: int = 8  # noise cells per side; fewer cells give larger blobs

    @classmethod
    def from_options(cls, options: "MaskOptions") -> "RandomRegion":
        return cls(min_coverage=options.region_min, max_coverage=options.region_max)

    def check(self) -> None:
        check_not_above("region-min", self.min_coverage, "region-max", self.max_coverage)

    def __call__(self, height, width, rng, objects=None):
        noise = torch.from_numpy(rng.random((1, 1, self.grain, self.grain), dtype=np.float32))
        field = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)[0]
        coverage = rng.uniform(self.min_coverage, self.max_coverage)
        # The top `coverage` quantile of the smooth field becomes the hole.
        threshold = torch.quantile(field.flatten(), 1.0 - coverage)
        return (field > threshold).float()


@MASKS.register("brush")
@dataclass
class BrushStrokes(MaskFamily):
    """Free-form holes: random-walk brush strokes (the DeepFill v2 / LaMa family)."""

    max_strokes: int = 4
    max_vertices: int = 8
    min_width: float = 0.04  # brush width as a fraction of the image side
    max_width: float = 0.10
    max_step: float = 0.25  # length of one stroke segment as a fraction of the side

    @classmethod
    def from_options(cls, options: "MaskOptions") -> "BrushStrokes":
        return cls(max_strokes=options.brush_strokes)

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
class RandomPatches(MaskFamily):
    """MAE / SimMIM-style masking: the image is cut into ``patch_size`` x ``patch_size`` pixel patches
    (the last row and column may be smaller when the side is not a multiple) and exactly
    ``round(ratio x number of patches)`` of them, drawn without replacement, become the hole."""

    patch_size: int = 4
    ratio: float = 0.75

    @classmethod
    def from_options(cls, options: "MaskOptions") -> "RandomPatches":
        return cls(patch_size=options.patch_size, ratio=options.mask_ratio)

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
class CocoObject(MaskFamily):
    """Holes shaped like an annotated object of the image (pycocotools ``annToMask``, cropped with the
    image), so the pretext has to complete objects. Objects covering between ``min_area`` and
    ``max_area`` of the crop are eligible; an image with none falls back to ``fallback``."""

    min_area: float = 0.02
    max_area: float = 0.5
    fallback: MaskGenerator = field(default_factory=lambda: RandomRectangles(0.25, 0.5))
    needs_objects: ClassVar[bool] = True

    @classmethod
    def from_options(cls, options: "MaskOptions") -> "CocoObject":
        return cls(min_area=options.object_min_area, max_area=options.object_max_area)

    def check(self) -> None:
        check_not_above("object-min-area", self.min_area, "object-max-area", self.max_area)

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

    @property
    def mask_needs_objects(self) -> bool:
        """Whether the chosen family draws holes from the crop's annotated objects (a COCO source)."""
        return MASKS.get(self.mask).needs_objects

    def mask_family(self) -> MaskFamily:
        """The chosen family built from these options, unchecked (``mask_generator`` checks it)."""
        return MASKS.get(self.mask).from_options(self)  # an unknown name: one error line with the choices

    def mask_generator(self) -> MaskFamily:
        """The chosen family, its options checked: each option's own ``Range`` (again here: options
        built in code skip the CLI), then what the family refuses."""
        family = self.mask_family()
        check_domains(self)
        family.check()
        return family


def degenerate_holes(masks: torch.Tensor) -> torch.Tensor:
    """(B,) True where an image's hole is empty or covers the whole image: nothing to complete, or
    nothing to complete it from. Such images must not be scored (an empty hole's PSNR is infinite)."""
    covered = masks.flatten(1).float().mean(dim=1)
    return (covered == 0) | (covered == 1)
