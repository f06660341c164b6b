"""The transfer model: the pretext encoder (the very module used in pretraining) + a classification head.

Seed 003 (section 6.2) put pooling, fully connected layers and dropout on top of the generator's
encoder. Features are either the encoder's 1x1 latent (``latent``: the whole pretrained encoder is
used) or the global-average-pooled deepest conv map (``pooled``). The encoder still takes the hole
channel; a classifier feeds it zeros, i.e. "no pixel is missing", which is what the pretext showed
it for every known pixel.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ssl_inpaint.errors import UserError
from ssl_inpaint.models.encoders import build_encoder
from ssl_inpaint.models.unet import UNetEncoder

FEATURES = ("latent", "pooled")


class EncoderClassifier(nn.Module):
    def __init__(self, encoder: UNetEncoder, num_classes: int, features: str = "latent", hidden: int = 512, dropout: float = 0.5, linear: bool = False):
        super().__init__()
        if features not in FEATURES:
            raise UserError(f"--features must be one of {', '.join(FEATURES)}, got {features!r}")
        self.encoder = encoder
        self.features = features
        self.feature_dim = encoder.out_channels[-1] if features == "latent" else encoder.out_channels[-2]
        if linear:
            # Linear probe as in MAE: a parameter-free BatchNorm standardises the frozen features
            # (a random encoder's features can be orders of magnitude off), then one linear layer.
            self.head: nn.Module = nn.Sequential(
                nn.BatchNorm1d(self.feature_dim, affine=False, eps=1e-6), nn.Linear(self.feature_dim, num_classes)
            )
        else:
            self.head = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(self.feature_dim, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, num_classes),
            )

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """(B, feature_dim) features of images in [-1, 1]."""
        no_hole = torch.zeros_like(images[:, :1])
        maps = self.encoder(torch.cat([images, no_hole], dim=1))
        chosen = maps[-1] if self.features == "latent" else maps[-2]
        return chosen.mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.extract(images))


def load_pretrained_encoder(model: EncoderClassifier, payload: dict[str, Any], source: str) -> None:
    """Load ``encoder.pt`` weights into ``model`` and check exactly which keys are new.

    Every encoder tensor must be loaded (same names, same shapes) and only the head may be missing;
    anything else (another architecture, image size or a foreign file) is an error naming the keys.
    """
    state = {f"encoder.{k}": v for k, v in payload["state_dict"].items()}
    expected = dict(model.state_dict())
    shape_mismatch = [k for k, v in state.items() if k in expected and expected[k].shape != v.shape]
    if shape_mismatch:
        details = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in shape_mismatch[:3])
        raise UserError(f"encoder in {source} does not fit this model ({details}); check --image-size and --features")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("head.")]
    if missing or result.unexpected_keys:
        raise UserError(
            f"encoder in {source} does not match the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    # Exactly the encoder was loaded; everything else in the model (the head) is new.
    encoder_keys = {k for k in expected if k.startswith("encoder.")}
    assert set(state) == encoder_keys, sorted(set(state) ^ encoder_keys)


def encoder_from_arch(arch: dict[str, Any], image_size: int, image_channels: int) -> UNetEncoder:
    """Build the encoder an ``encoder.pt`` describes, refusing a mismatch with the data."""
    if arch.get("image_size") != image_size:
        raise UserError(
            f"the encoder was pretrained at {arch.get('image_size')} px but --image-size is {image_size}; "
            f"use --image-size {arch.get('image_size')}"
        )
    if arch.get("in_channels") != image_channels + 1:
        raise UserError(
            f"the encoder expects {arch.get('in_channels', 1) - 1}-channel images but the dataset has {image_channels}"
        )
    return build_encoder(arch)
