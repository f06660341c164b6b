"""Data: image sources (COCO, VOC, folders, Fashion-MNIST, CIFAR-10, packs), the registry of dataset
kinds that reads them (``DATASETS``, ``datasets.py``), their transforms, and the labelled
classification datasets."""

from ssl_inpaint.data.datasets import (
    DATASETS,
    DatasetKind,
    SourceOptions,
    create_classification_dataset,
    create_source,
    labelled_kinds,
    packable_kinds,
)
from ssl_inpaint.data.sources import FileListSource, ImageSource, SubsetSource
from ssl_inpaint.data.classification import LabelledImages
from ssl_inpaint.data.transforms import image_transform

__all__ = [
    "DATASETS",
    "DatasetKind",
    "FileListSource",
    "ImageSource",
    "LabelledImages",
    "SourceOptions",
    "SubsetSource",
    "create_classification_dataset",
    "create_source",
    "image_transform",
    "labelled_kinds",
    "packable_kinds",
]
