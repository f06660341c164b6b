"""The transfer models, built beside ``load_generator``: a pretext encoder (or the same architecture
from PyTorch's init) under a classification head, or timm's own classifier. ``ssl finetune`` builds
every init through ``make_classifier``, so all inits share one architecture by construction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from torch import nn

from ssl_inpaint.checkpoint import ENCODER_FORMAT, load_checkpoint, load_weights_file, resolve_encoder_file
from ssl_inpaint.errors import UserError
from ssl_inpaint.models.classifier import EncoderClassifier, encoder_from_arch, load_pretrained_encoder
from ssl_inpaint.models.timm_unet import TimmClassifier, create_timm, timm_state_dict
from ssl_inpaint.models.unet import UNetEncoder


@dataclass(frozen=True)
class ClassifierSpec:
    """What a transfer classifier is built from (``ssl finetune``'s options of the same names)."""

    encoder: str  # unet, or timm:<name>
    init: str  # pretrained, random, datadep (built like random; initialised from data afterwards), or a timm weights file
    checkpoint: str  # a pretrain run or its encoder.pt (for the baselines: only its architecture is read)
    image_size: int
    features: str  # latent, pooled or multi (the U-Net encoder)
    hidden: int
    dropout: float
    linear: bool  # a linear probe's head (parameter-free BatchNorm + one linear layer)
    bottleneck_channels: int  # a U-Net encoder built without --checkpoint


def make_timm_classifier(spec: ClassifierSpec, num_classes: int, image_channels: int) -> TimmClassifier:
    """timm's own classifier for ``--encoder timm:<name>``: untrained, with the pretext encoder's
    weights (only the head new, asserted), or with a local weights file (only the classifier new)."""
    name = spec.encoder[len("timm:"):]
    model = create_timm(name, num_classes=num_classes, in_chans=image_channels)
    input_norm = "none"
    if spec.init == "pretrained":
        encoder_file = resolve_encoder_file(spec.checkpoint)
        payload = load_checkpoint(encoder_file, ENCODER_FORMAT)
        arch = payload["arch"]
        if arch.get("arch") != "timm" or arch.get("name") != name:
            found = f"timm:{arch.get('name')}" if arch.get("arch") == "timm" else arch.get("arch")
            raise UserError(f"{encoder_file} holds a {found} encoder, not {spec.encoder}; pass the matching --encoder")
        if arch["in_channels"] - 1 != image_channels:
            raise UserError(f"{encoder_file} was pretrained on {arch['in_channels'] - 1}-channel images, the dataset has {image_channels}")
        mapped, new = timm_state_dict(payload["state_dict"], arch, num_classes)
        result = model.load_state_dict(mapped, strict=False)
        assert sorted(result.missing_keys) == sorted(new) and not result.unexpected_keys, result
    elif spec.init != "random":
        model = _load_timm_weights(model, Path(spec.init))
        input_norm = "model"
    return TimmClassifier(model, num_classes, input_norm, linear=spec.linear)


def _load_timm_weights(model: nn.Module, path: Path) -> nn.Module:
    from timm.models import adapt_input_conv

    state = load_weights_file(path)
    own = model.state_dict()
    classifier = {f"{n}.{p}" for n, m in model.named_modules() if m is model.get_classifier() for p, _ in m.named_parameters()}
    first_conv = model.pretrained_cfg.get("first_conv", "") + ".weight"
    if first_conv in state and first_conv in own and state[first_conv].shape[1] != own[first_conv].shape[1]:
        state[first_conv] = adapt_input_conv(own[first_conv].shape[1], state[first_conv])  # e.g. RGB weights, gray data
    usable = {k: v for k, v in state.items() if not (k in classifier and k in own and own[k].shape != v.shape)}
    result = model.load_state_dict(usable, strict=False)
    missing = [k for k in result.missing_keys if k not in classifier]
    if missing or result.unexpected_keys:
        raise UserError(
            f"{path} does not fit timm's {model.default_cfg.get('architecture', 'model')}: "
            f"missing {missing[:4]}, unexpected {result.unexpected_keys[:4]}"
        )
    return model


def make_classifier(spec: ClassifierSpec, num_classes: int, image_channels: int) -> nn.Module:
    """The same architecture for both inits; only the pretrained one loads the encoder weights."""
    if spec.encoder.startswith("timm:"):
        return make_timm_classifier(spec, num_classes, image_channels)
    if spec.encoder != "unet":
        raise UserError(f"--encoder must be unet or timm:<model name>, got {spec.encoder!r}")
    payload: Optional[dict[str, Any]] = None
    if spec.checkpoint:
        encoder_file = resolve_encoder_file(spec.checkpoint)
        payload = load_checkpoint(encoder_file, ENCODER_FORMAT)
        if payload["arch"].get("arch") == "timm":  # its run would be recorded as --encoder unet
            raise UserError(f"{encoder_file} holds a timm:{payload['arch'].get('name')} encoder; pass --encoder timm:{payload['arch'].get('name')}")
        encoder = encoder_from_arch(payload["arch"], spec.image_size, image_channels, spec.features)
    else:
        encoder = UNetEncoder(image_channels + 1, spec.image_size, bottleneck_channels=spec.bottleneck_channels)
    model = EncoderClassifier(
        encoder, num_classes, spec.features, spec.hidden, spec.dropout, linear=spec.linear
    )
    if spec.init == "pretrained":
        assert payload is not None
        load_pretrained_encoder(model, payload, str(encoder_file))
    return model
