"""Checkpoint files: written atomically (``storage.save_atomic``), read without unpickling arbitrary objects.

Every file is a dict with a ``format`` tag so that a checkpoint of the wrong kind (or a foreign
file) is refused with a clear message instead of failing deep inside ``load_state_dict``.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ssl_inpaint.errors import UserError

PRETRAIN_FORMAT = "ssl_inpaint.pretrain"
FINETUNE_FORMAT = "ssl_inpaint.finetune"
ENCODER_FORMAT = "ssl_inpaint.encoder"
PIXELCNN_FORMAT = "ssl_inpaint.pixelcnn"


def last_checkpoint(run_dir: Path) -> Path:
    """Where every training command keeps the checkpoint it resumes from."""
    return run_dir / "checkpoints" / "last.pt"


def load_tensors(path: Path, what: str) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers only, never arbitrary
    pickled objects. A file that is not such a file is one UserError naming ``what`` it should be;
    PyTorch's own advice for that case (load with ``weights_only=False``, i.e. run the file's code) is
    never relayed."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError, AttributeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        if "weights_only" in str(exc) or first.startswith("Weights only load failed"):
            first = "not a PyTorch file of tensors: the file is corrupt, foreign, or holds pickled objects"
        raise UserError(f"{path} is not a readable {what} ({first[:200]})") from None


def load_checkpoint(path: str | Path, expected_format: str) -> dict[str, Any]:
    """Load a file saved by this toolkit (``weights_only=True``: tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    obj = load_tensors(path, "ssl_inpaint checkpoint")
    found = obj.get("format") if isinstance(obj, dict) else None
    if found != expected_format:
        raise UserError(
            f"{path} is not a {expected_format} file (found format {found!r}); "
            f"pass the file or run folder written by the matching ssl command"
        )
    return obj


def resolve_encoder_file(checkpoint: str | Path) -> Path:
    """A pretrain run folder (its ``encoder.pt``) or the encoder file itself."""
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "encoder.pt"
    if not path.is_file():
        raise UserError(f"no encoder at {path}: pass a pretrain run folder (with encoder.pt) or the file itself")
    return path


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a local ``.safetensors`` or PyTorch file (e.g. downloaded timm weights);
    a dict nesting it under ``state_dict`` or ``model`` is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except Exception as exc:  # safetensors raises several types for a foreign file
            raise UserError(f"{path} is not a readable safetensors file ({exc.__class__.__name__}: {str(exc)[:150]})") from None
    else:
        state = load_tensors(path, "weights file (a state dict saved with torch.save)")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict of tensors")
    return state
