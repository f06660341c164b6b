"""Data: image sources (COCO, VOC, folders, Fashion-MNIST) and the pretext dataset built on them."""

from ssl_inpaint.data.pretext import PretextDataset, channel_mean, image_transform
from ssl_inpaint.data.sources import DATASETS, ImageSource, SubsetSource, create_source

__all__ = [
    "DATASETS",
    "ImageSource",
    "PretextDataset",
    "SubsetSource",
    "channel_mean",
    "create_source",
    "image_transform",
]
