"""Holes: the mask families (``families.py``, chosen by ``--mask``) and the pretext dataset that cuts
them into images (``pretext.py``)."""

from ssl_inpaint.masks.families import (
    MASKS,
    CentreSquare,
    MaskFamily,
    MaskGenerator,
    MaskOptions,
    RandomPatches,
    apply_mask,
    check_not_above,
    create_mask_generator,
    degenerate_holes,
    mask_seed,
)
from ssl_inpaint.masks.pretext import PretextDataset, channel_mean, check_object_source

__all__ = [
    "MASKS",
    "CentreSquare",
    "MaskFamily",
    "MaskGenerator",
    "MaskOptions",
    "PretextDataset",
    "RandomPatches",
    "apply_mask",
    "channel_mean",
    "check_not_above",
    "check_object_source",
    "create_mask_generator",
    "degenerate_holes",
    "mask_seed",
]
