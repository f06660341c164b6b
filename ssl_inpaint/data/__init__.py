"""Data: image sources (COCO, VOC, folders, Fashion-MNIST), their transforms, and the labelled
classification datasets."""

from ssl_inpaint.data.sources import DATASETS, ImageSource, SourceOptions, SubsetSource, create_source
from ssl_inpaint.data.transforms import image_transform

__all__ = [
    "DATASETS",
    "ImageSource",
    "SourceOptions",
    "SubsetSource",
    "create_source",
    "image_transform",
]
