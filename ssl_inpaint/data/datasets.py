"""Every ``--dataset`` kind in one registry, ``DATASETS``: how to read its images (the pretext,
``ssl evaluate``, ``ssl pack``), how to read its labels (``ssl finetune``, the online probe), its default
splits, whether it can be packed and whether it has object masks. Adding a dataset is one
``DATASETS.add(name, DatasetKind(...))`` (docs/extending.md, templates/custom_dataset.py); nothing
else in the toolkit names a dataset kind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ssl_inpaint.config import option
from ssl_inpaint.data.cifar10 import Cifar10Source
from ssl_inpaint.data.classification import (
    LabelledImages,
    cifar10_classification,
    fashion_mnist_classification,
    folder_classification,
    voc_classification,
)
from ssl_inpaint.data.packed import PackedSource
from ssl_inpaint.data.sources import IMAGE_EXTENSIONS, CocoSource, FashionMnistSource, ImageSource, folder_source, voc_source
from ssl_inpaint.errors import UserError
from ssl_inpaint.registry import Registry

ImagesReader = Callable[[Path, str, str], ImageSource]  # (root, split, VOC year) -> the split's images
LabelsReader = Callable[[Path, str, str, str], LabelledImages]  # (root, split, VOC year, --voc-labels) -> labelled images


@dataclass(frozen=True)
class DatasetKind:
    """What the toolkit knows about one ``--dataset`` kind."""

    images: ImagesReader
    labelled: Optional[LabelsReader] = None  # None: no labels (pretext only)
    probe_splits: Optional[tuple[str, str]] = None  # the online probe's default (train, held-out) splits
    evaluate_split: str = ""  # ``ssl evaluate``'s split when --split is not given
    transfer_splits: tuple[str, str] = ("train", "test")  # ``ssl finetune``'s (training, evaluation) splits when not given
    pretext_split: str = "train"  # ``ssl pretrain`` and ``ssl pack``'s split when --split is not given
    packable: bool = True  # ``ssl pack`` can decode it into a pack
    reads_split: bool = True  # its image reader uses --split (a folder reads its whole tree)
    objects: bool = False  # its images carry object masks (``--mask coco_object``)
    multilabel: bool = False  # an image may carry several labels (VOC); --mixup / --cutmix need one


DATASETS: Registry[DatasetKind] = Registry("dataset", "--dataset")


def _packed_images(root: Path, split: str, year: str) -> ImageSource:
    """One pack per split when ROOT/SPLIT is a pack, else ROOT is the pack."""
    return PackedSource(Path(root, split) if split and Path(root, split, "pack.json").is_file() else root)


DATASETS.add("coco", DatasetKind(
    lambda root, split, year: CocoSource(root, split), evaluate_split="val2017", pretext_split="train2017", objects=True,
))
DATASETS.add("voc", DatasetKind(
    lambda root, split, year: voc_source(root, year, split),
    lambda root, split, year, labels: voc_classification(root, year, split, labels),
    probe_splits=("train", "val"), evaluate_split="val", transfer_splits=("trainval", "test"), multilabel=True,
))
DATASETS.add("folder", DatasetKind(
    lambda root, split, year: folder_source(root),
    lambda root, split, year, labels: folder_classification(root, split),
    probe_splits=("train", "val"), reads_split=False,
))
DATASETS.add("fashion_mnist", DatasetKind(
    lambda root, split, year: FashionMnistSource(root, split),
    lambda root, split, year, labels: fashion_mnist_classification(root, split),
    probe_splits=("train", "test"), evaluate_split="test",
))
DATASETS.add("cifar10", DatasetKind(
    lambda root, split, year: Cifar10Source(root, split),
    lambda root, split, year, labels: cifar10_classification(root, split),
    probe_splits=("train", "test"), evaluate_split="test",
))
DATASETS.add("packed", DatasetKind(_packed_images, packable=False))


def labelled_kinds() -> tuple[str, ...]:
    """The kinds ``ssl finetune`` and the online probe can read labels from."""
    return tuple(name for name in DATASETS if DATASETS.get(name).labelled is not None)


def packable_kinds() -> tuple[str, ...]:
    return tuple(name for name in DATASETS if DATASETS.get(name).packable)


@dataclass
class SourceOptions:
    """Which images a command reads: the dataset kind, its root folder and split."""

    dataset: str = option("coco", f"Dataset kind: {DATASETS.choices()}.", resume=False)
    data: str = option("", "Dataset root (COCO root, VOCdevkit, image folder, Fashion-MNIST files, CIFAR-10's official batches, a folder written by ssl pack).", resume=False)
    split: str = option("", "Split (empty: the dataset's own training split, COCO train2017, every other kind train; e.g. COCO val2017, VOC val, Fashion-MNIST and CIFAR-10 test; a folder reads every image under --data).", resume=False)
    year: str = option("2012", "VOC year (with --dataset voc).", resume=False)
    strict: bool = option(False, "Stop on an unreadable image instead of skipping it.", resume=True)

    def resolve_split(self) -> None:
        """An empty --split becomes the dataset's own training split, resolved here so the saved config names it."""
        if not self.split and self.dataset in DATASETS:
            self.split = DATASETS.get(self.dataset).pretext_split

    @property
    def dataset_has_objects(self) -> bool:
        return self.dataset in DATASETS and DATASETS.get(self.dataset).objects


def _existing_root(data: str | Path) -> Path:
    if not data:
        raise UserError("no dataset path given: pass --data PATH")
    if not Path(data).exists():
        raise UserError(f"dataset path does not exist: {data} (pass --data pointing at your dataset)")
    return Path(data)


def create_source(dataset: str, data: str | Path, split: str, year: str = "2012") -> ImageSource:
    """The images of ``--dataset``'s ``split`` under ``data``; an empty source is refused in one line."""
    kind = DATASETS.get(dataset)
    source = kind.images(_existing_root(data), split, year)
    if len(source) == 0:
        raise UserError(
            f"dataset {source.name} at {data} has no images "
            f"(looked for {', '.join(IMAGE_EXTENSIONS)} files in the expected layout)"
        )
    return source


def create_classification_dataset(
    dataset: str, data: str | Path, split: str, year: str = "2007", voc_labels: str = "xml"
) -> LabelledImages:
    """The labelled images of ``--dataset``'s ``split`` (``ssl finetune``, the online probe)."""
    kind = DATASETS.get(dataset)
    if kind.labelled is None:
        raise UserError(f"--dataset {dataset} has no class labels to train a classifier on; choose one of: {', '.join(labelled_kinds())}")
    if not data or not Path(data).exists():
        raise UserError(f"dataset path does not exist: {data!r} (pass --data pointing at your dataset)")
    labelled = kind.labelled(Path(data), split, year, voc_labels)
    if len(labelled) == 0:
        raise UserError(f"{labelled.source.name} has no images")
    return labelled
