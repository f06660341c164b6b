"""``ssl pretrain --init-from FILE``: start the pretext's encoder from existing weights, the rest fresh.

How users with little data are told to work (SparK's maintainers: start from released weights). Two
kinds of file are accepted, each checked against the encoder it is loaded into:

- an ``encoder.pt`` of an earlier pretrain run (or its run folder), for the same architecture: every
  tensor by name and shape;
- a plain timm state dict (``.pth``/``.pt`` or ``.safetensors``, e.g. supervised ImageNet weights of
  ``timm.create_model(name)``) for ``--encoder timm:<name>``: mapped onto the features-only backbone in
  order, tensor by tensor (same leaf name, same shape), the inverse of ``ssl export``. The first conv
  gets one more input channel than the plain model (the hole), initialised to zero, so the loaded
  encoder first computes exactly what the plain model computes on the image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ssl_inpaint.checkpoint import ENCODER_FORMAT, load_checkpoint, load_weights_file
from ssl_inpaint.errors import UserError


def initialise_encoder(generator: nn.Module, source: str | Path) -> str:
    """Load ``source`` into ``generator.encoder``; returns a line saying what was loaded."""
    path = Path(source)
    if path.is_dir():
        path = path / "encoder.pt"
    if not path.is_file():
        raise UserError(f"--init-from {source}: no such file (an encoder.pt, a pretrain run folder, or a timm state dict)")
    encoder = generator.encoder
    arch = dict(getattr(encoder, "arch", {}))
    payload = _encoder_payload(path)
    if payload is not None:
        return _load_encoder_file(encoder, arch, payload, path)
    if arch.get("arch") != "timm":
        raise UserError(f"--init-from {path} is not an ssl encoder.pt; a plain state dict initialises --encoder timm:<name> only")
    return _load_timm_state(encoder, arch, load_weights_file(path), path)


def _encoder_payload(path: Path) -> Optional[dict[str, Any]]:
    """The file as an ssl encoder.pt, or None when it is something else (e.g. a plain state dict)."""
    if path.suffix != ".pt":
        return None
    try:
        return load_checkpoint(path, ENCODER_FORMAT)
    except UserError:
        return None


def _load_encoder_file(encoder: nn.Module, arch: dict[str, Any], payload: dict[str, Any], path: Path) -> str:
    if dict(payload["arch"]) != arch:
        differing = sorted(k for k in set(arch) | set(payload["arch"]) if arch.get(k) != payload["arch"].get(k))
        details = ", ".join(f"{k} {payload['arch'].get(k)!r} vs {arch.get(k)!r}" for k in differing[:4])
        raise UserError(f"--init-from {path} holds another encoder ({details}); pretrain with its architecture or start fresh")
    encoder.load_state_dict(payload["state_dict"])
    return f"encoder initialised from {path} (step {payload.get('step', '?')} of its pretext); decoder and discriminators fresh"


def _load_timm_state(encoder: nn.Module, arch: dict[str, Any], state: dict[str, torch.Tensor], path: Path) -> str:
    """The plain model's tensors onto the features-only backbone, in order, each checked."""
    target = encoder.backbone.state_dict()
    plain = {k: v for k, v in state.items() if not k.startswith(_classifier_prefix(encoder, state))}
    if len(plain) < len(target):
        raise UserError(f"--init-from {path} has {len(plain)} trunk tensors, fewer than timm's {arch['name']} ({len(target)}); is it that model's?")
    loaded = {}
    for (name, tensor), (source_name, value) in zip(target.items(), plain.items()):
        if name.rsplit(".", 1)[-1] != source_name.rsplit(".", 1)[-1]:
            raise UserError(f"--init-from {path}: its {source_name} does not line up with timm's {arch['name']} {name}; is it that model's?")
        if value.dim() == 4 and value.shape[1] + 1 == tensor.shape[1] and value.shape[0] == tensor.shape[0]:
            value = torch.cat([value, torch.zeros_like(value[:, :1])], dim=1)  # the hole channel, which the plain model never saw
        if tuple(value.shape) != tuple(tensor.shape):
            raise UserError(f"--init-from {path}: {source_name} {tuple(value.shape)} does not fit {arch['name']}'s {name} {tuple(tensor.shape)}")
        loaded[name] = value.to(tensor.dtype)
    encoder.backbone.load_state_dict(loaded)
    return f"timm:{arch['name']} encoder initialised from {path} ({len(loaded)} tensors; the hole channel of its first conv at zero); decoder and discriminators fresh"


def _classifier_prefix(encoder: nn.Module, state: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """The names of the plain model's classifier, which the features-only backbone does not have."""
    import timm

    model = timm.create_model(encoder.arch["name"], pretrained=False)
    classifier = model.get_classifier()
    names = tuple(f"{n}." for n, m in model.named_modules() if m is classifier and n)
    return names or ("fc.", "head.", "classifier.")
