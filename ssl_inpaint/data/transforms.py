"""Image transforms shared by the pretext and the classification data: resize, crop, flip, and the
scaling to [-1, 1] that matches the generator's tanh output."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

# What PIL raises for a missing, truncated or non-image file.
UNREADABLE = (OSError, ValueError, SyntaxError)


def image_transform(image_size: int, train: bool) -> v2.Transform:
    """Shorter side to ``image_size``, then a random (train) or centre (eval) square crop, flips in
    training, and pixels scaled to [-1, 1] to match the generator's tanh output. Object masks given
    as ``tv_tensors.Mask`` follow the same geometry."""
    crop = v2.RandomCrop(image_size) if train else v2.CenterCrop(image_size)
    steps: list[v2.Transform] = [v2.ToImage(), v2.Resize(image_size, antialias=True), crop]
    if train:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])]
    return v2.Compose(steps)


def resized(image: Any, image_size: int) -> torch.Tensor:
    """The image as a tensor with its shorter side resized to ``image_size`` (antialiased): the
    deterministic first half of ``image_transform``."""
    return F.resize(F.to_image(image), [image_size], antialias=True).as_subclass(torch.Tensor)


def crop_position(
    height: int, width: int, image_size: int, train: bool, generator: Optional[torch.Generator] = None
) -> tuple[int, int, bool]:
    """(top, left, flip) of ``image_transform``'s crop and flip for an image already resized to
    ``height`` x ``width``: RandomCrop's and RandomHorizontalFlip's draws, in their order, from
    ``generator`` (the global one when None); CenterCrop's rounding and no flip in evaluation."""
    if not train:
        return int(round((height - image_size) / 2.0)), int(round((width - image_size) / 2.0)), False
    top = int(torch.randint(0, height - image_size + 1, size=(), generator=generator)) if height > image_size else 0
    left = int(torch.randint(0, width - image_size + 1, size=(), generator=generator)) if width > image_size else 0
    flip = not torch.rand(1, generator=generator) >= 0.5  # RandomHorizontalFlip(p=0.5)
    return top, left, flip


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (any leading dims) to float in [-1, 1], as ``image_transform``'s last two steps."""
    return F.normalize(F.to_dtype(x, torch.float32, scale=True), [0.5], [0.5]).as_subclass(torch.Tensor)


def crop_view(image: Any, image_size: int, train: bool) -> torch.Tensor:
    """``image_transform(image_size, train)(image)`` for an image alone, without the per-call dispatch
    of ``v2.Compose`` (about 3/4 of the loader's time on Fashion-MNIST): the same kernels, and the same
    random draws in the same order from the global generator, so the result is identical."""
    x = resized(image, image_size)
    top, left, flip = crop_position(*x.shape[-2:], image_size, train)
    x = x[..., top : top + image_size, left : left + image_size]
    return to_unit_range(F.horizontal_flip(x) if flip else x)


def resized_crop_box(
    height: int, width: int, scale_min: float, generator: Optional[torch.Generator] = None
) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of a random resized crop (as torchvision's
    RandomResizedCrop, MAE's pretext augmentation): a fraction of the area drawn from [scale_min, 1]
    and an aspect ratio from [3/4, 4/3] (log-uniform), ten tries, else the centred largest square."""
    area = height * width
    for _ in range(10):
        target = area * (scale_min + (1 - scale_min) * float(torch.rand(1, generator=generator)))
        ratio = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * float(torch.rand(1, generator=generator)))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(), generator=generator))
            left = int(torch.randint(0, width - w + 1, size=(), generator=generator))
            return top, left, h, w
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def scaled_crop(x: torch.Tensor, image_size: int, scale_min: float, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A random resized crop of uint8 ``x`` (C, H, W) (usually already resized so its shorter side is
    ``image_size``), resized to ``image_size`` square, then flipped with probability 1/2; uint8."""
    top, left, h, w = resized_crop_box(*x.shape[-2:], scale_min, generator)
    crop = F.resize(x[..., top : top + h, left : left + w], [image_size, image_size], antialias=True)
    flip = not torch.rand(1, generator=generator) >= 0.5
    return (F.horizontal_flip(crop) if flip else crop).as_subclass(torch.Tensor)
