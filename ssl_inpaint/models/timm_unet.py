"""timm backbones as the generator's encoder, and the way back to plain timm classifiers.

``--encoder timm:<name>`` builds ``timm.create_model(name, features_only=True, pretrained=False,
in_chans=C+1)`` (the image plus the hole channel) and a U-Net decoder from its ``feature_info``: at each
stage the decoder doubles the resolution with a transposed conv, concatenates the encoder feature of
that resolution, and mixes them with a 3x3 conv; the last steps go up to the input resolution and a
conv + tanh gives the image.

Export maps the features-only state dict onto the plain model's names (``timm.create_model(name,
num_classes=K)``): both list the trunk's tensors in the same order, only the names of flattened
sequential containers differ (``stages_0`` vs ``stages.0``), so the mapping is checked tensor by tensor
(same order, same leaf name, same shape). The hole channel of the first conv is dropped: a classifier
sees no hole, which the pretext encoder saw as a zero channel, so the exported trunk computes exactly
the pretext encoder's features.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ssl_inpaint.errors import UserError
from ssl_inpaint.models.unet import mask_skip


def check_encoder_spec(spec: str) -> None:
    """``unet`` or ``timm:<a model name timm knows>``, else a clear error."""
    import timm

    if spec == "unet":
        return
    if not spec.startswith("timm:"):
        raise UserError(f"--encoder must be unet or timm:<model name>, got {spec!r}")
    name = spec[len("timm:"):]
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise UserError(f"timm does not know a model named {name!r}{hint}")


def create_timm(name: str, **kwargs: Any) -> nn.Module:
    import timm

    check_encoder_spec(f"timm:{name}")
    return timm.create_model(name, pretrained=False, **kwargs)


class TimmEncoder(nn.Module):
    """A timm backbone returning its feature maps, shallow to deep."""

    def __init__(self, name: str, in_channels: int, image_size: int):
        super().__init__()
        self.backbone = create_timm(name, features_only=True, in_chans=in_channels)
        info = self.backbone.feature_info
        self.out_channels = list(info.channels())
        self.reductions = list(info.reduction())
        stride = max(self.reductions)
        if image_size % stride:
            raise UserError(
                f"image size {image_size} is not a multiple of {name}'s total stride {stride}; "
                f"use e.g. --image-size {max(stride, round(image_size / stride) * stride)}"
            )
        self.arch = {"arch": "timm", "name": name, "in_channels": in_channels, "image_size": image_size}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.backbone(x))


def _up(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=False), nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2, inplace=True)
    )


def _mix(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2, inplace=True))


class TimmUNetGenerator(nn.Module):
    """U-Net generator on a timm encoder. Input (B, C+1, H, W); output the completed (B, C, H, W).

    ``skips`` as for the seed-003 U-Net: ``all`` concatenates every shallower stage's features into the
    decoder; ``none`` gives the decoder the deepest stage only, so the hole must be completed from what
    the encoder's last stage holds; ``masked`` (SparK's mask tokens at every scale) passes each stage's
    features with every position touching the hole replaced by a learned per-stage token, so no skip
    carries anything computed from the hole's neighbourhood and the encoder alone must represent it."""

    def __init__(self, name: str, image_channels: int = 3, image_size: int = 128, skips: str = "all"):
        super().__init__()
        if skips not in ("all", "none", "masked"):
            raise UserError(f"--skips must be all, none or masked, got {skips!r}")
        self.image_channels, self.skips = image_channels, skips
        self.encoder = TimmEncoder(name, image_channels + 1, image_size)
        channels, reductions = self.encoder.out_channels, self.encoder.reductions
        self.ups = nn.ModuleList()
        self.mixes = nn.ModuleList()
        current = channels[-1]
        for i in range(len(channels) - 2, -1, -1):
            factor = reductions[i + 1] // reductions[i]
            steps = [_up(current, channels[i])] + [_up(channels[i], channels[i]) for _ in range(int(math.log2(factor)) - 1)]
            self.ups.append(nn.Sequential(*steps))
            self.mixes.append(_mix(channels[i] * (1 if skips == "none" else 2), channels[i]))
            current = channels[i]
        to_full = [_up(current, current) for _ in range(int(math.log2(reductions[0])))]
        self.to_full = nn.Sequential(*to_full)
        self.to_image = nn.Conv2d(current, image_channels, 3, 1, 1)
        if skips == "masked":  # one token per stage the decoder sees
            self.mask_tokens = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1)) for c in channels[:-1])
            for token in self.mask_tokens:
                nn.init.trunc_normal_(token, std=0.02)

    def decoder_skips(self, features: list[torch.Tensor], hole: torch.Tensor) -> list[torch.Tensor]:
        """The shallower stages' features as the decoder receives them, deepest first."""
        skips = features[:-1]
        if self.skips == "masked":
            skips = [mask_skip(f, hole, token) for f, token in zip(skips, self.mask_tokens)]
        return skips[::-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        y = features[-1]
        for up, mix, skip in zip(self.ups, self.mixes, self.decoder_skips(features, x[:, -1:])):
            y = mix(up(y) if self.skips == "none" else torch.cat([up(y), skip], dim=1))
        return torch.tanh(self.to_image(self.to_full(y)))


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def timm_state_dict(encoder_state: dict[str, torch.Tensor], arch: dict[str, Any], num_classes: int = 1000) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The pretext encoder's weights under the plain timm model's names, for ``in_chans`` = image
    channels. Returns (state dict, keys of the plain model it does not provide: its head)."""
    name = arch["name"]
    image_channels = arch["in_channels"] - 1
    plain = create_timm(name, num_classes=num_classes, in_chans=image_channels)
    plain_state = plain.state_dict()
    plain_keys = list(plain_state)
    source_keys = [k[len("backbone."):] if k.startswith("backbone.") else k for k in encoder_state]
    if len(source_keys) > len(plain_keys):
        raise UserError(f"the encoder has more tensors ({len(source_keys)}) than timm's {name} ({len(plain_keys)})")
    first_conv = plain.pretrained_cfg.get("first_conv", "") + ".weight"
    mapped: dict[str, torch.Tensor] = {}
    for source, target, tensor in zip(source_keys, plain_keys, encoder_state.values()):
        if target == first_conv:
            tensor = tensor[:, :image_channels]  # drop the hole channel
        if _leaf(source) != _leaf(target) or tuple(tensor.shape) != tuple(plain_state[target].shape):
            raise UserError(
                f"cannot map encoder tensor {source} {tuple(tensor.shape)} onto timm's {name} "
                f"{target} {tuple(plain_state[target].shape)}"
            )
        mapped[target] = tensor.detach().clone()
    new = plain_keys[len(source_keys):]
    result = plain.load_state_dict(mapped, strict=False)
    assert not result.unexpected_keys and sorted(result.missing_keys) == sorted(new), (result, new)
    classifier = {f"{n}" for n, _ in plain.named_parameters() if any(n.startswith(p) for p in _classifier_prefixes(plain))}
    assert classifier <= set(new), f"classifier weights {sorted(classifier - set(new))} would be overwritten"
    return mapped, new


def _classifier_prefixes(model: nn.Module) -> list[str]:
    classifier = model.get_classifier()
    return [name + "." for name, module in model.named_modules() if module is classifier and name]


class TimmClassifier(nn.Module):
    """A plain timm classifier fed images in [-1, 1], as everywhere in the toolkit.

    ``input_norm='model'`` (weights from ``--init FILE``, e.g. supervised ImageNet weights) converts the
    images to the mean/std the model was trained with. ``linear=True`` (linear probe) puts a
    parameter-free BatchNorm and a new linear layer on the pooled features instead of timm's classifier.
    """

    def __init__(self, model: nn.Module, num_classes: int, input_norm: str = "none", linear: bool = False):
        super().__init__()
        self.model = model
        channels = model.pretrained_cfg.get("num_chans") or 3
        in_chans = getattr(model, "in_chans", None) or next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
        mean = torch.tensor(model.pretrained_cfg.get("mean", (0.5,) * channels), dtype=torch.float32)
        std = torch.tensor(model.pretrained_cfg.get("std", (0.5,) * channels), dtype=torch.float32)
        if in_chans != len(mean):  # e.g. grayscale input to weights trained on RGB
            mean, std = mean.mean().repeat(in_chans), std.mean().repeat(in_chans)
        self.input_norm = input_norm
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)
        self.feature_dim = model.num_features
        self.head = (
            nn.Sequential(nn.BatchNorm1d(self.feature_dim, affine=False, eps=1e-6), nn.Linear(self.feature_dim, num_classes))
            if linear
            else None
        )

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        return ((images + 1) / 2 - self.mean) / self.std if self.input_norm == "model" else images

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(self._prepare(images)), pre_logits=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.head is not None:
            return self.head(self.extract(images))
        return self.model(self._prepare(images))
