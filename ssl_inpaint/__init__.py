"""ssl_inpaint: self-supervised visual pretraining by image inpainting, and honest transfer measurement."""

__version__ = "0.1.0"
