"""Labelled datasets for the transfer experiments, and the label-budget subsets.

Every dataset yields ``(image, target, ignore)``:
  * multi-label (Pascal VOC): ``target`` is a 0/1 float vector over the 20 classes and ``ignore``
    flags the classes present in the image only as 'difficult' objects, which the VOC07 protocol
    leaves out of the evaluation of that class (and we leave out of the training loss too);
  * multi-class (Fashion-MNIST, image folders): ``target`` is the class index, ``ignore`` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence
from xml.etree import ElementTree as ET

import numpy as np
import torch
from torch.utils.data import Dataset

from torchvision.transforms import v2

from ssl_inpaint.data.cifar10 import Cifar10Source
from ssl_inpaint.data.transforms import UNREADABLE, image_transform
from ssl_inpaint.data.sources import (
    FashionMnistSource,
    FileListSource,
    ImageSource,
    folder_source,
    voc_image_ids,
    voc_root,
)
from ssl_inpaint.errors import UserError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)


@dataclass
class LabelledImages:
    """Images plus labels. ``targets``: (N, K) 0/1 for multi-label, (N,) class indices otherwise;
    ``ignore``: (N, K) bool for multi-label (difficult-only classes), None otherwise."""

    source: ImageSource
    targets: np.ndarray
    classes: tuple[str, ...]
    multilabel: bool
    ignore: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.source)

    def class_members(self) -> list[np.ndarray]:
        """Indices of the images that are (non-difficult) positives of each class."""
        if self.multilabel:
            positive = (self.targets > 0) & ~self.ignore
            return [np.flatnonzero(positive[:, k]) for k in range(len(self.classes))]
        return [np.flatnonzero(self.targets == k) for k in range(len(self.classes))]

    def subset(self, indices: Sequence[int]) -> "LabelledImages":
        from ssl_inpaint.data.sources import SubsetSource

        indices = np.asarray(indices, dtype=np.int64)
        return LabelledImages(
            SubsetSource(self.source, indices.tolist()),
            self.targets[indices],
            self.classes,
            self.multilabel,
            None if self.ignore is None else self.ignore[indices],
        )


def parse_voc_xml(path: Path) -> list[tuple[str, bool]]:
    """(class name, difficult) for every object of a VOC annotation file."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise UserError(f"cannot read VOC annotation {path}: {exc}") from None
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        objects.append((name, difficult))
    return objects


def voc_targets_from_xml(root: Path, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per image: class present (any object) and ignore (every object of that class is difficult)."""
    index = {name: k for k, name in enumerate(VOC_CLASSES)}
    present = np.zeros((len(ids), len(VOC_CLASSES)), dtype=np.float32)
    easy = np.zeros_like(present, dtype=bool)
    for i, image_id in enumerate(ids):
        for name, difficult in parse_voc_xml(root / "Annotations" / f"{image_id}.xml"):
            if name not in index:
                raise UserError(f"unknown VOC class {name!r} in {root / 'Annotations' / image_id}.xml")
            present[i, index[name]] = 1
            easy[i, index[name]] |= not difficult
    return present, (present > 0) & ~easy


def voc_targets_from_imagesets(root: Path, split: str, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The same from ImageSets/Main/<class>_<split>.txt, whose flags are 1 / -1 / 0 (difficult only)."""
    position = {image_id: i for i, image_id in enumerate(ids)}
    present = np.zeros((len(ids), len(VOC_CLASSES)), dtype=np.float32)
    ignore = np.zeros_like(present, dtype=bool)
    for k, name in enumerate(VOC_CLASSES):
        path = root / "ImageSets" / "Main" / f"{name}_{split}.txt"
        if not path.is_file():
            raise UserError(f"VOC class list not found: {path} (use --voc-labels xml)")
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2 or fields[1] not in ("1", "-1", "0"):
                raise UserError(f"{path} line {number} is not '<image id> <1|-1|0>': {line[:80]!r}; fix the file or use --voc-labels xml")
            image_id, flag = fields
            if image_id in position:
                present[position[image_id], k] = float(flag in ("1", "0"))
                ignore[position[image_id], k] = flag == "0"
    return present, ignore


def voc_classification(data: str | Path, year: str, split: str, labels: str = "xml") -> LabelledImages:
    root = voc_root(data, year)
    ids = voc_image_ids(root, split)
    if not ids:
        raise UserError(f"VOC{year} split {split} lists no images")
    if labels == "xml":
        targets, ignore = voc_targets_from_xml(root, ids)
    elif labels == "imagesets":
        targets, ignore = voc_targets_from_imagesets(root, split, ids)
    else:
        raise UserError(f"--voc-labels must be xml or imagesets, got {labels!r}")
    source = FileListSource([root / "JPEGImages" / f"{i}.jpg" for i in ids], name=f"VOC{year} {split}")
    return LabelledImages(source, targets, VOC_CLASSES, multilabel=True, ignore=ignore)


def fashion_mnist_classification(data: str | Path, split: str) -> LabelledImages:
    source = FashionMnistSource(data, split)
    return LabelledImages(source, source.labels.astype(np.int64), FASHION_MNIST_CLASSES, multilabel=False)


def folder_classification(data: str | Path, split: str) -> LabelledImages:
    """torchvision's ImageFolder layout: DATA/<split>/<class>/*.jpg (or DATA/<class>/ if split is empty)."""
    root = Path(data) / split if split else Path(data)
    if not root.is_dir():
        raise UserError(f"image folder split not found: {root} (expected DATA/<split>/<class>/images)")
    classes = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    if len(classes) < 2:
        raise UserError(f"{root} needs one sub-folder per class (found {len(classes)})")
    paths, targets = [], []
    for k, name in enumerate(classes):
        files = folder_source(root / name).paths
        paths += files
        targets += [k] * len(files)
    return LabelledImages(FileListSource(paths, name=f"folder {root}"), np.asarray(targets, np.int64), classes, False)


def cifar10_classification(data: str | Path, split: str) -> LabelledImages:
    source = Cifar10Source(data, split)
    return LabelledImages(source, source.labels, source.classes, multilabel=False)


def label_budget(
    labelled: LabelledImages,
    data_seed: int,
    per_class: int = 0,
    fraction: float = 0.0,
    at_most: bool = False,
) -> np.ndarray:
    """Indices of a stratified labelled subset, a pure function of the dataset and ``data_seed`` (so the
    pretrained and the random-init runs train on the very same images).

    Each class, in turn, contributes ``per_class`` (or ``round(fraction x its size)``, at least one) of
    its images not yet chosen; for multi-label data an image chosen for one class also counts for
    the others it contains. With neither budget set, every image is used. A class with fewer than
    ``per_class`` images is refused (a run is recorded with the budget it asked for), unless
    ``at_most``: then it gives what it has (the online probe's stratified sample).
    """
    if per_class and fraction:
        raise UserError("give either --labels-per-class or --label-fraction, not both")
    if not per_class and not fraction:
        return np.arange(len(labelled))
    if fraction and not 0 < fraction <= 1:
        raise UserError(f"--label-fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(data_seed)
    members = labelled.class_members()
    if per_class and not at_most:  # a budget is what the runs are labelled with: never silently less than asked
        smallest = min(range(len(members)), key=lambda k: len(members[k]))
        if len(members[smallest]) < per_class:
            raise UserError(
                f"--labels-per-class {per_class}: class {labelled.classes[smallest]!r} of {labelled.source.name} has only "
                f"{len(members[smallest])} labelled images; lower it to {len(members[smallest])} or use --labels-per-class 0 (all)"
            )
    chosen: list[int] = []
    taken = np.zeros(len(labelled), dtype=bool)
    for k in rng.permutation(len(members)):
        pool = members[k]
        want = per_class if per_class else max(1, round(fraction * len(pool)))
        already = int(taken[pool].sum()) if labelled.multilabel else 0
        candidates = rng.permutation(pool[~taken[pool]])
        picked = candidates[: max(0, want - already)]
        taken[picked] = True
        chosen += picked.tolist()
    return np.sort(np.asarray(chosen, dtype=np.int64))


def validation_subset(labelled: LabelledImages, chosen: np.ndarray, data_seed: int, per_class: int) -> np.ndarray:
    """Indices of ``per_class`` held-out images per class of the training split, none of them among the
    labelled ``chosen`` ones: a validation set to choose a protocol on without looking at the test
    split. A pure function of the dataset, the label budget and ``data_seed``, so every init and seed
    is scored on the same images."""
    rest = np.setdiff1d(np.arange(len(labelled)), chosen)
    left = labelled.subset(rest)
    counts = [len(m) for m in left.class_members()]
    smallest = int(np.argmin(counts))
    if counts[smallest] < per_class:
        raise UserError(
            f"--val-per-class {per_class}: class {labelled.classes[smallest]!r} of {labelled.source.name} has only "
            f"{counts[smallest]} training images besides the {len(chosen)} labelled ones; lower --val-per-class or the label budget"
        )
    return rest[label_budget(left, data_seed, per_class)]


AUGMENTATIONS = ("crop", "flip", "pad_crop", "erase")
DEFAULT_AUGMENT = "crop,flip"  # what ``image_transform(train=True)`` does: the pretext's own view


def parse_augment(spec: str) -> tuple[str, ...]:
    """``--augment``: comma-separated names of AUGMENTATIONS, or none."""
    names = tuple(a.strip() for a in spec.split(",") if a.strip() and a.strip() != "none")
    unknown = [a for a in names if a not in AUGMENTATIONS]
    if unknown:
        raise UserError(f"--augment takes a comma-separated list of {', '.join(AUGMENTATIONS)} (or none), got {spec!r}")
    return names


def classification_transform(image_size: int, augment: Sequence[str] = ()) -> v2.Transform:
    """Shorter side to ``image_size``, then a square crop and the training augmentations asked for;
    images in [-1, 1]. ``crop``: a random square crop (along the longer side; a no-op on square
    images), else the centre one; ``pad_crop``: the same after padding by 1/8 of the side with black;
    ``flip``: horizontal; ``erase``: random erasing of a rectangle (p = 0.25), filled mid-grey.
    No augmentation is the evaluation view; ``crop,flip`` is exactly the pretext's training view."""
    if tuple(augment) in ((), ("crop", "flip")):
        return image_transform(image_size, train=bool(augment))
    if "pad_crop" in augment:
        crop: v2.Transform = v2.RandomCrop(image_size, padding=max(1, image_size // 8), fill=0)
    else:
        crop = v2.RandomCrop(image_size) if "crop" in augment else v2.CenterCrop(image_size)
    steps: list[v2.Transform] = [v2.ToImage(), v2.Resize(image_size, antialias=True), crop]
    if "flip" in augment:
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])]
    if "erase" in augment:
        steps.append(v2.RandomErasing(p=0.25, value=0.0))
    return v2.Compose(steps)


class ClassificationDataset(Dataset):
    """Torch view of :class:`LabelledImages`: images in [-1, 1] as in pretraining, with the
    ``augment`` augmentations (none: the evaluation view, a centre crop). Unreadable images are an
    error here: a labelled benchmark must be evaluated on exactly its images."""

    def __init__(self, labelled: LabelledImages, image_size: int, augment: Sequence[str] = ()):
        self.labelled = labelled
        self.transform = classification_transform(image_size, augment)

    def __len__(self) -> int:
        return len(self.labelled)

    def __getitem__(self, index: int):
        try:
            image = self.transform(self.labelled.source.load(index)).as_subclass(torch.Tensor)
        except UNREADABLE as exc:
            raise UserError(f"unreadable image {self.labelled.source.describe(index)}: {exc}") from None
        target = torch.as_tensor(self.labelled.targets[index])
        ignore = (
            torch.as_tensor(self.labelled.ignore[index])
            if self.labelled.ignore is not None
            else torch.zeros(0, dtype=torch.bool)
        )
        return image, target, ignore
