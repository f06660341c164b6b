"""Frozen ImageNet VGG16 layers, from a local weights file: the perceptual and style losses' feature
network, and seed 004's discriminator trunk.

The weights are never downloaded: ``--vgg-weights`` points at a torchvision ``vgg16`` state dict
(e.g. saved once with ``torch.save(torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict(),
path)`` on a machine with internet access). Only the convolutional ``features.*`` tensors are used.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from ssl_inpaint.checkpoint import load_tensors
from ssl_inpaint.errors import UserError

# Outputs of relu1_2, relu2_2 and relu3_3 in torchvision's vgg16().features (as in the perceptual
# and style losses of Johnson et al. 2016 and Liu et al. 2018).
FEATURE_LAYERS = (3, 8, 15)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_STRIDE = 32  # five 2x2 max-pools in vgg16().features


def vgg16_trunk(last_layer: int = -1) -> nn.Sequential:
    """torchvision's vgg16().features (up to ``last_layer``), built without the 120 M-parameter
    classifier; same layer indices, so the state dict keys match."""
    layers = make_layers(cfgs["D"])
    return layers if last_layer < 0 else layers[: last_layer + 1]


class ImageNetInput(nn.Module):
    """Images in [-1, 1] with 1 or 3 channels -> ImageNet-normalised RGB, as VGG16 was trained."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        unit = (images + 1) / 2
        return (unit.expand(-1, 3, -1, -1) - self.mean) / self.std


class VGG16Features(nn.Module):
    """Images in [-1, 1] -> the feature maps at ``FEATURE_LAYERS``. Frozen: no parameter takes
    gradients and the module stays in eval mode, but gradients flow through it."""

    def __init__(self, trunk_state: dict[str, torch.Tensor]):
        super().__init__()
        self.normalise = ImageNetInput()
        self.features = vgg16_trunk(FEATURE_LAYERS[-1])
        self.features.load_state_dict({k: v for k, v in trunk_state.items() if k in self.features.state_dict()})
        self.features.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG16Features:
        return super().train(False)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.normalise(images)
        outputs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in FEATURE_LAYERS:
                outputs.append(x)
        return outputs


class VGG16Discriminator(nn.Module):
    """Seed 004's discriminator: VGG16's convolutional layers (ImageNet weights via ``load_trunk``,
    frozen), then two dense layers of 128 with ReLU and one logit; only the dense layers train.
    The image side must be a multiple of 32."""

    def __init__(self, image_size: int, hidden: int = 128):
        super().__init__()
        if image_size % VGG_STRIDE:
            raise UserError(f"--discriminator vgg16 needs --image-size a multiple of {VGG_STRIDE}, got {image_size}")
        side = image_size // VGG_STRIDE
        self.normalise = ImageNetInput()
        self.trunk = vgg16_trunk()
        self.trunk.requires_grad_(False)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(512 * side * side, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1),
        )

    def load_trunk(self, trunk_state: dict[str, torch.Tensor]) -> None:
        self.trunk.load_state_dict(trunk_state)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(self.normalise(images))).flatten()


def read_vgg16_trunk(path: str) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors of a torchvision vgg16 state dict file (``weights_only``), keyed as
    in ``vgg16_trunk()``; a missing, unreadable or foreign file is a UserError."""
    if not path:
        raise UserError("--w-perceptual/--w-style and --discriminator vgg16 need VGG16 weights: pass --vgg-weights PATH (a torchvision vgg16 state dict)")
    file = Path(path)
    if not file.is_file():
        raise UserError(f"VGG16 weights file not found: {file} (pass --vgg-weights pointing at a torchvision vgg16 state dict)")
    state = load_tensors(file, "VGG16 weights file (save one with torch.save(torchvision.models.vgg16(...).state_dict()))")
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
    return wanted  # type: ignore[return-value]


def load_vgg16_features(path: str) -> VGG16Features:
    return VGG16Features(read_vgg16_trunk(path))
