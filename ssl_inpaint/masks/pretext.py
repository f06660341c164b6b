"""The pretext dataset: crop an image (``data``), cut a hole in it (a mask family), and return what the
generator sees.

Augmentation and masks are seeded per (run seed, epoch, sample index), never from a worker's global
RNG state, so a sample is identical whatever the number of workers or processes and after a resume.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ssl_inpaint.data.sources import ImageSource
from ssl_inpaint.data.transforms import UNREADABLE, crop_view, image_transform, resized
from ssl_inpaint.errors import UserError
from ssl_inpaint.masks.families import MaskGenerator, apply_mask, mask_seed

log = logging.getLogger(__name__)
MAX_REPLACEMENT_TRIES = 50  # unreadable files skipped in a row before the dataset is called broken

class PretextDataset(Dataset):
    """Items are dicts: ``image`` (C,H,W in [-1,1]), ``mask`` (1,H,W; 1 = hole), ``input``
    (C+1,H,W: the holed image plus the mask channel) and ``skipped`` (unreadable files replaced)."""

    def __init__(
        self,
        source: ImageSource,
        image_size: int,
        mask_generator: MaskGenerator,
        fill: torch.Tensor,
        seed: int,
        train: bool = True,
        strict: bool = False,
        use_objects: bool = False,
        reduced_decode: bool = True,
    ):
        self.source = source
        self.image_size = image_size
        self.transform = image_transform(image_size, train)
        self.mask_generator = mask_generator
        self.fill = fill
        self.seed = seed
        self.train = train
        self.strict = strict
        self.use_objects = use_objects
        # JPEGs may decode at a reduced size that still covers the crop, except when object masks
        # (annotated at the file's full size) must follow the image.
        self.decode_side = image_size if reduced_decode and not use_objects else 0
        # An in-memory source (Fashion-MNIST) decodes an index to the same pixels every time, and its
        # resized images are small (61 MB for 60,000 at 32 px): keep them instead of redoing the
        # PIL conversion and the resize every epoch.
        self._resized: Optional[dict[int, torch.Tensor]] = {} if source.in_memory and not use_objects else None
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Validation data keeps epoch 0 so its crops and masks never change."""
        if self.train:
            self.epoch = epoch

    def __len__(self) -> int:
        return len(self.source)

    def _load(self, index: int) -> tuple[Any, Optional[np.ndarray], int]:
        """Load item ``index``, or the next readable one; returns (image, objects, files skipped).
        With an in-memory source the image is already resized (``resized``)."""
        tries = min(MAX_REPLACEMENT_TRIES, len(self.source))
        for skipped in range(tries):
            position = (index + skipped) % len(self.source)
            if self._resized is not None and position in self._resized:
                return self._resized[position], None, skipped
            try:
                image = self.source.load(position, self.decode_side)
                if self._resized is not None:
                    image = self._resized[position] = resized(image, self.image_size)
                objects = self.source.objects(position) if self.use_objects else None
                return image, objects, skipped
            except UNREADABLE as exc:
                where = self.source.describe(position)
                if self.strict:
                    raise UserError(
                        f"unreadable image {where} ({exc.__class__.__name__}: {exc}); "
                        f"remove or fix it, or drop --strict to skip such files"
                    ) from None
                log.warning("skipping unreadable image %s (%s)", where, exc)
        what = f"none of the {tries} images" if tries == len(self.source) else f"{tries} consecutive images"
        raise UserError(f"{what} of {self.source.name} could be read (e.g. {self.source.describe(index)}); check the dataset")

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, objects, skipped = self._load(index)
        rng = mask_seed(self.seed, self.epoch, index)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(rng.integers(0, 2**62)))  # CPU only: no lazy CUDA seeding per image
            if objects is not None:
                image, objects_t = self.transform(image, tv_tensors.Mask(torch.from_numpy(objects)))
            else:
                image, objects_t = crop_view(image, self.image_size, self.train, self._resized is not None), None
        height, width = image.shape[-2:]
        mask = self.mask_generator(height, width, rng, objects_t)
        image = image.as_subclass(torch.Tensor)
        return {
            "image": image,
            "mask": mask,
            "input": apply_mask(image, mask, self.fill),
            "skipped": skipped,
        }


def channel_mean(source: ImageSource, image_size: int, max_images: int = 64) -> torch.Tensor:
    """Per-channel mean in [-1, 1] over the first readable images (the ``--fill mean`` value)."""
    transform = image_transform(image_size, train=False)
    total, count = torch.zeros(source.channels, dtype=torch.float64), 0
    for index in range(min(len(source), max_images * 2)):
        try:
            image = transform(source.load(index))
        except UNREADABLE:
            continue
        total += image.double().mean(dim=(1, 2))
        count += 1
        if count == max_images:
            break
    if count == 0:
        raise UserError(f"no readable image among the first images of {source.name}")
    return (total / count).float()
