"""Frozen VGG16 features for the perceptual and style losses (seed 004), from a local weights file.

The weights are never downloaded: ``--vgg-weights`` points at a torchvision ``vgg16`` state dict
(e.g. saved once with ``torch.save(torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict(),
path)`` on a machine with internet access). Only the convolutional ``features.*`` tensors are used.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from ssl_inpaint.errors import UserError

# Outputs of relu1_2, relu2_2 and relu3_3 in torchvision's vgg16().features (as in the perceptual
# and style losses of Johnson et al. 2016 and Liu et al. 2018).
FEATURE_LAYERS = (3, 8, 15)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_trunk() -> nn.Sequential:
    """torchvision's vgg16().features up to the last layer used, built without the 120 M-parameter
    classifier (same layer indices, so the state dict keys match)."""
    return make_layers(cfgs["D"])[: FEATURE_LAYERS[-1] + 1]


class VGG16Features(nn.Module):
    """Images in [-1, 1] (1 or 3 channels) -> the feature maps at ``FEATURE_LAYERS``. Frozen: no
    parameter takes gradients and the module stays in eval mode, but gradients flow through it."""

    def __init__(self, features_state: dict[str, torch.Tensor]):
        super().__init__()
        self.features = vgg16_trunk()
        self.features.load_state_dict(features_state)
        self.features.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.eval()

    def train(self, mode: bool = True) -> "VGG16Features":
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = ((images + 1) / 2).expand(-1, 3, -1, -1) if images.shape[1] == 1 else (images + 1) / 2
        x = (x - self.mean) / self.std
        outputs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in FEATURE_LAYERS:
                outputs.append(x)
        return outputs


def load_vgg16_features(path: str) -> VGG16Features:
    """Read a torchvision vgg16 state dict (``weights_only``) and keep the layers the losses use."""
    if not path:
        raise UserError("--w-perceptual/--w-style need VGG16 weights: pass --vgg-weights PATH (a torchvision vgg16 state dict)")
    file = Path(path)
    if not file.is_file():
        raise UserError(f"VGG16 weights file not found: {file} (pass --vgg-weights pointing at a torchvision vgg16 state dict)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input problem
        raise UserError(f"cannot read VGG16 weights {file}: {str(exc).splitlines()[0]} (save one with torch.save(vgg16().state_dict()))") from None
    if not isinstance(state, dict):
        raise UserError(f"{file} is not a state dict; save torchvision's vgg16().state_dict() with torch.save")
    expected = vgg16_trunk().state_dict()
    wanted = {k: state.get(f"features.{k}") for k in expected}
    missing = [f"features.{k}" for k, v in wanted.items() if v is None]
    wrong = [f"features.{k}" for k, v in wanted.items() if v is not None and v.shape != expected[k].shape]
    if missing or wrong:
        raise UserError(
            f"{file} is not a torchvision vgg16 state dict (missing {missing[:3]}, wrong shape {wrong[:3]}); "
            f"save torchvision.models.vgg16(...).state_dict()"
        )
    return VGG16Features(wanted)  # type: ignore[arg-type]
