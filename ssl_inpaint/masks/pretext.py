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
from torch.utils.data import Dataset, get_worker_info
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from ssl_inpaint.data.sources import ImageSource
from ssl_inpaint.data.transforms import UNREADABLE, crop_position, crop_view, image_transform, resized, scaled_crop, to_unit_range
from ssl_inpaint.errors import UserError
from ssl_inpaint.masks.families import MaskGenerator, apply_mask, mask_seed

log = logging.getLogger(__name__)
MAX_REPLACEMENT_TRIES = 50  # unreadable files skipped in a row before the dataset is called broken

class PretextDataset(Dataset):
    """Items are dicts: ``image`` (C,H,W in [-1,1]), ``mask`` (1,H,W; 1 = hole), ``input``
    (C+1,H,W: the holed image plus the mask channel), ``skipped`` (unreadable files replaced) and
    ``fallback_hole`` (1: the object mask found no eligible object and cut its fallback rectangle)."""

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
        cache_mb: int = 0,
        crop_scale: float = 1.0,
    ):
        if source.stored_size is not None and source.stored_size != image_size:
            raise UserError(
                f"{source.name} holds images packed at {source.stored_size} px; use --image-size {source.stored_size} "
                f"or pack the dataset again with ssl pack --image-size {image_size}"
            )
        self.source = source
        self.image_size = image_size
        self.transform = image_transform(image_size, train)
        self.mask_generator = mask_generator
        self.fill = fill
        self.seed = seed
        self.train = train
        self.strict = strict
        self.use_objects = use_objects
        if crop_scale < 1 and use_objects:
            raise UserError("--crop-scale below 1 does not follow object masks: use it with other mask families")
        # Random resized crops (training only): each crop covers [crop_scale, 1] of the resized image's area.
        self.crop_scale = crop_scale if train else 1.0
        # JPEGs may decode at a reduced size that still covers the crop, except when object masks
        # (annotated at the file's full size) must follow the image.
        self.decode_side = image_size if reduced_decode and not use_objects else 0
        # Images kept resized (shorter side = image_size: the deterministic half of the transform), so a
        # later epoch skips decoding and resizing them and gives the same pixels. An in-memory source
        # (Fashion-MNIST: 61 MB for 60,000 at 32 px) keeps them all; files up to ``cache_mb`` per
        # loading process (JPEG decoding is most of the loader's time: about 1 ms a COCO photo even
        # at 1/8 size). Object masks follow the file's full size, so they turn the cache off. A pack's
        # images are stored resized and read from a memory map: they are kept within the budget
        # too, so that a large pack is not copied whole into every loading process.
        keeps_all = source.in_memory and source.stored_size is None
        self._resized: Optional[dict[int, torch.Tensor]] = {} if (keeps_all or cache_mb > 0) and not use_objects else None
        self._cache_bytes = None if keeps_all else cache_mb * 2**20
        self._cached_bytes = 0
        # In shared memory, so that loader workers that persist across epochs see the new epoch.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Validation data keeps epoch 0 so its crops and masks never change. Call it before the
        epoch's ``iter(loader)``: workers draw the epoch's samples only after that."""
        if self.train:
            self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def _load(self, index: int) -> tuple[Any, Optional[np.ndarray], int]:
        """Load item ``index``, or the next readable one; returns (image, objects, files skipped).
        When images are kept (``self._resized`` is not None) the image comes already resized."""
        tries = min(MAX_REPLACEMENT_TRIES, len(self.source))
        for skipped in range(tries):
            position = (index + skipped) % len(self.source)
            if self._resized is not None and position in self._resized:
                return self._resized[position], None, skipped
            try:
                image = self.source.load(position, self.decode_side)
                if self._resized is not None:
                    image = self._keep(position, resized(image, self.image_size))
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

    def _resize_together(self, indices: list[int]) -> None:
        """Keep the not yet kept images of an in-memory array source, resized in one call (the same
        pixels as one at a time: the kernel works image by image), instead of each through PIL."""
        missing = sorted({i for i in indices if i not in self._resized}) if self._cache_bytes is None else []
        pixels = self.source.pixels(missing) if missing else None
        if pixels is not None:
            for position, image in zip(missing, resized(pixels, self.image_size)):
                self._resized[position] = image

    def _keep(self, position: int, image: torch.Tensor) -> torch.Tensor:
        """Keep a resized image while the budget allows; each loader worker has its own share of it."""
        if self._cache_bytes is not None:
            worker = get_worker_info()
            budget = self._cache_bytes // (worker.num_workers if worker is not None else 1)
            if self._cached_bytes + image.nbytes > budget:
                return image
            self._cached_bytes += image.nbytes
        self._resized[position] = image
        return image

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self._resized is not None:  # kept images: the batch path, for one
            return self.__getitems__([index])[0]
        image, objects, skipped = self._load(index)
        rng = mask_seed(self.seed, self.epoch, index)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(rng.integers(0, 2**62)))  # CPU only: no lazy CUDA seeding per image
            if objects is not None:
                image, objects_t = self.transform(image, tv_tensors.Mask(torch.from_numpy(objects)))
            elif self.crop_scale < 1:
                image, objects_t = to_unit_range(scaled_crop(resized(image, self.image_size), self.image_size, self.crop_scale)), None
            else:
                image, objects_t = crop_view(image, self.image_size, self.train), None
        height, width = image.shape[-2:]
        mask = self.mask_generator(height, width, rng, objects_t)
        image = image.as_subclass(torch.Tensor)
        eligible = getattr(self.mask_generator, "eligible", None) if self.use_objects else None
        return {
            "image": image,
            "mask": mask,
            "input": apply_mask(image, mask, self.fill),
            "skipped": skipped,
            "fallback_hole": int(eligible is not None and eligible(objects_t).numel() == 0),
        }

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """The samples of a batch (the DataLoader calls this when it exists): those that decoding and
        transforming one image at a time gives. When images are kept resized (``cache_mb``, in-memory
        sources) the tensor work (crop, flip, scaling, the hole) runs once on the whole batch instead
        of once an image, which takes Fashion-MNIST's loader from about 100 to about 50 microseconds
        an image; the random draws are the same, from the same per-sample seeds, in the same order."""
        if self._resized is None:  # files decoded every time, or object masks: one image at a time
            return [self[index] for index in indices]
        self._resize_together(indices)
        size, draws = self.image_size, torch.Generator()
        crops, flips, masks, skips = [], [], [], []
        for index in indices:
            image, _, skipped = self._load(index)
            rng = mask_seed(self.seed, self.epoch, index)
            draws.manual_seed(int(rng.integers(0, 2**62)))  # as __getitem__ seeds the global generator
            if self.crop_scale < 1:
                crops.append(scaled_crop(image, size, self.crop_scale, draws))  # flipped already
                flips.append(False)
            else:
                top, left, flip = crop_position(*image.shape[-2:], size, self.train, draws)
                crops.append(image[..., top : top + size, left : left + size])
                flips.append(flip)
            masks.append(self.mask_generator(size, size, rng, None))
            skips.append(skipped)
        pixels = torch.stack(crops)
        flipped = torch.tensor(flips)
        pixels[flipped] = F.horizontal_flip(pixels[flipped])
        images, holes = to_unit_range(pixels), torch.stack(masks)
        inputs = apply_mask(images, holes, self.fill)
        return [
            {"image": image, "mask": mask, "input": x, "skipped": skipped, "fallback_hole": 0}  # never object masks
            for image, mask, x, skipped in zip(images, holes, inputs, skips)
        ]


def check_object_source(source: ImageSource) -> None:
    """``--mask coco_object`` needs annotated objects: an annotation file with none would make every
    hole the fallback rectangle, which is ``--mask rect``, so it is refused instead."""
    annotations = getattr(source, "annotation_count", None)
    if annotations is None:
        raise UserError(f"--mask coco_object needs COCO annotations, and {source.name} has none: use --dataset coco or another --mask")
    if annotations() == 0:
        raise UserError(f"--mask coco_object: {source.name} has no object annotations, so every hole would be a rectangle; use --mask rect")


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
