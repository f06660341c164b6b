"""Models by name: generators (with a transferable ``encoder``), discriminators, the classifier.
Building them from options or from a saved run: ``models/factory.py``."""

from __future__ import annotations

from ssl_inpaint.models.classifier import EncoderClassifier, encoder_from_arch, load_pretrained_encoder
from ssl_inpaint.models.discriminators import (
    Discriminator,
    GlcicFusedDiscriminator,
    crop_boxes,
    global_discriminator,
    hole_boxes,
    local_discriminator,
    patchgan_discriminator,
    pixel_discriminator,
)
from ssl_inpaint.models.encoders import ENCODERS, build_encoder
from ssl_inpaint.models.factory import (
    DISCRIMINATORS,
    GENERATORS,
    InpaintingModels,
    ModelOptions,
    create_generator,
    load_generator,
    make_discriminators,
    make_generator,
    make_models,
    refuses,
)
from ssl_inpaint.models.transfer import ClassifierSpec, make_classifier
from ssl_inpaint.models.timm_unet import TimmClassifier, TimmEncoder, TimmUNetGenerator, create_timm, timm_state_dict
from ssl_inpaint.models.unet import StagedEncoder, UNetEncoder, UNetGenerator

__all__ = [
    "TimmClassifier",
    "TimmEncoder",
    "TimmUNetGenerator",
    "create_timm",
    "timm_state_dict",
    "ClassifierSpec",
    "make_classifier",
    "GENERATORS",
    "ENCODERS",
    "StagedEncoder",
    "DISCRIMINATORS",
    "refuses",
    "InpaintingModels",
    "ModelOptions",
    "load_generator",
    "make_discriminators",
    "make_generator",
    "make_models",
    "GlcicFusedDiscriminator",
    "patchgan_discriminator",
    "pixel_discriminator",
    "Discriminator",
    "EncoderClassifier",
    "UNetEncoder",
    "UNetGenerator",
    "build_encoder",
    "create_generator",
    "crop_boxes",
    "encoder_from_arch",
    "global_discriminator",
    "hole_boxes",
    "load_pretrained_encoder",
    "local_discriminator",
]
