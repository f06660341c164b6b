"""``ssl export``: a pretrain run's timm encoder as a state dict for ``timm.create_model(name, num_classes=K)``."""

from __future__ import annotations

from pathlib import Path

from ssl_inpaint.checkpoint import ENCODER_FORMAT, load_checkpoint, resolve_encoder_file
from ssl_inpaint.runtime import console
from ssl_inpaint.errors import UserError
from ssl_inpaint.models import timm_state_dict
from ssl_inpaint.storage import check_output_path, replace_atomically, save_atomic

FORMATS = ("timm", "safetensors")


def run_export(run: str, fmt: str, output: Path, num_classes: int = 1000, overwrite: bool = False) -> Path:
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    encoder_file = resolve_encoder_file(run)
    check_output_path(output, [encoder_file, encoder_file.parent], "export")
    if output.is_dir():
        raise UserError(f"{output} is a folder; give a file name, e.g. {output / 'encoder_timm.pt'}")
    if output.exists() and not overwrite:
        raise UserError(f"{output} already exists; pass --overwrite to replace it or choose another -o")
    payload = load_checkpoint(encoder_file, ENCODER_FORMAT)
    arch = payload["arch"]
    if arch.get("arch") != "timm":
        raise UserError(
            f"{encoder_file} holds the {arch.get('arch')} encoder; export to timm needs a run pretrained with "
            f"--encoder timm:<name> (the unet encoder loads with ssl finetune --checkpoint)"
        )
    state, new = timm_state_dict(payload["state_dict"], arch, num_classes)
    in_chans = arch["in_channels"] - 1
    if fmt == "safetensors":
        from safetensors.torch import save_file

        tensors = {k: v.contiguous() for k, v in state.items()}
        metadata = {"timm_model": arch["name"], "in_chans": str(in_chans), "source": str(encoder_file)}
        replace_atomically(output, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    else:
        save_atomic(state, output)
    chans = "" if in_chans == 3 else f", in_chans={in_chans}"
    console.print(
        f"wrote {len(state)} tensors to {output}: model = timm.create_model({arch['name']!r}, num_classes=K{chans}); "
        f"model.load_state_dict(state, strict=False) leaves only the head new: {', '.join(new)}"
    )
    return output
