"""The ``ssl`` command line: thin entry points over the engines.

Every command's options are generated from its config dataclass (see :mod:`ssl_inpaint.config`), so
``--help`` lists every recipe key. Problems with the user's input end in one ``error:`` line.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from pathlib import Path
from typing import Any, Callable, List, Optional

from ssl_inpaint.config import MAX_WIDTH, at_least, check_range, typer_command
from ssl_inpaint.engine.compare import run_compare
from ssl_inpaint.engine.evaluate import run_evaluate
from ssl_inpaint.engine.export import run_export
from ssl_inpaint.engine.finetune import run_finetune
from ssl_inpaint.engine.inpaint import run_inpaint
from ssl_inpaint.engine.pack import run_pack
from ssl_inpaint.engine.pixelcnn import run_pixelcnn
from ssl_inpaint.engine.pretrain import run_pretrain
from ssl_inpaint.options.evaluate import EvaluateConfig
from ssl_inpaint.options.finetune import FinetuneConfig
from ssl_inpaint.options.pack import PackConfig
from ssl_inpaint.options.pixelcnn import PixelCNNConfig
from ssl_inpaint.options.pretrain import PretrainConfig
from ssl_inpaint.distributed import joined_a_group
from ssl_inpaint.errors import UserError
from ssl_inpaint.plugins import load_plugins
from ssl_inpaint.runtime import PRECISIONS
from ssl_inpaint.storage import cannot_use

app = typer.Typer(
    name="ssl",
    help="Self-supervised pretraining by image inpainting, and what it is worth downstream.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root() -> None:
    """Self-supervised pretraining by image inpainting, and what it is worth downstream."""


def config_command(name: str, config_cls: type, run: Callable[[Any], Any], help: str, doc: str, default_name: Optional[str]) -> None:
    """``ssl NAME``: one flag per field of ``config_cls`` plus ``--recipe`` (see ``config.typer_command``)."""
    app.command(name, help=help)(typer_command(config_cls, run, doc, default_name=default_name))


config_command(
    "pretrain", PretrainConfig, run_pretrain,
    "Inpainting pretext: U-Net generator + local/global discriminators; writes runs/NAME/.",
    "Inpainting pretext pretraining.", "pretrain",
)
config_command(
    "finetune", FinetuneConfig, run_finetune,
    "Transfer: train + evaluate a classifier on the pretext encoder (--init pretrained) or the same "
    "architecture from scratch (--init random); writes runs/NAME/metrics.json.",
    "Transfer to a classification task.", None,
)
config_command(
    "pixelcnn", PixelCNNConfig, run_pixelcnn,
    "Seed 002's PixelCNN++: likelihood of the lower half given the upper half (bits/dim), sampled pixel by pixel.",
    "PixelCNN++ lower-half completion.", "pixelcnn",
)
config_command(
    "pack", PackConfig, run_pack,
    "Decode a dataset once, each image resized to --image-size, into a folder that --dataset packed reads "
    "as an in-memory array: later training skips JPEG decoding (the same samples as from the files).",
    "Pack a dataset for fast loading.", None,
)
config_command(
    "evaluate", EvaluateConfig, run_evaluate,
    "Completion quality (PSNR, SSIM, L1 over image and hole) of a trained generator next to classical "
    "inpainting (OpenCV Telea / Navier-Stokes, biharmonic, mean fill) on the same images and seeded holes.",
    "Evaluate completion quality against classical baselines.", None,
)


# The numeric options of the commands without a config dataclass, with their ranges (the others
# declare theirs in their config; tests/test_option_domains.py walks both).
PLAIN_RANGES = {
    ("export", "num_classes"): at_least(1, 1_000_000),
    ("inpaint", "batch_size"): at_least(1, MAX_WIDTH),
}


@app.command("compare")
def compare(
    runs: List[str] = typer.Argument(..., help="Finetune run folders, globs, or folders holding runs."),
    output: Path = typer.Option(Path("runs/compare/compare.md"), help="Markdown table to write (.md); its charts go beside it as NAME.png and NAME_budgets.png."),
    logdir: Path = typer.Option(Path("runs/compare"), help="TensorBoard folder for the table and bar chart."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an --output (and its charts) that ssl compare did not write."),
    choose_by_val: bool = typer.Option(
        False, "--choose-by-val", help="Also a table where each init takes the protocol (run prefix) with its best mean validation "
        "score (runs of ssl finetune --val-per-class), of each dataset, mode, budget and pretrain run: best against best, chosen without the test split."
    ),
) -> None:
    """Pretrained vs random init: mean ± std over seeds per dataset, mode and label budget."""
    run_compare(runs, output, logdir, overwrite, choose_by_val)


@app.command("export")
def export(
    run: str = typer.Argument(..., help="Pretrain run folder (or its encoder.pt), pretrained with --encoder timm:<name>."),
    format: str = typer.Option("timm", "--format", help="timm (a PyTorch state dict) or safetensors."),
    output: Path = typer.Option(..., "-o", "--output", help="File to write."),
    num_classes: int = typer.Option(1000, help="Only used to check that just the classifier head is left new."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file (never one of the run's own files)."),
) -> None:
    """Export a timm encoder for timm.create_model(name, num_classes=K) with no glue code."""
    check_range("num_classes", num_classes, PLAIN_RANGES[("export", "num_classes")])
    run_export(run, format, output, num_classes, overwrite)


@app.command("inpaint")
def inpaint(
    source: Path = typer.Argument(..., help="An image, or a folder of images (searched recursively)."),
    checkpoint: str = typer.Option(..., "--checkpoint", help="Pretrain run folder (runs/NAME) or one of its checkpoint files."),
    output: Path = typer.Option(..., "-o", "--output", help="Output .png for one image, or a folder (mirrors the input folder)."),
    mask: Optional[Path] = typer.Option(
        None, "--mask", help="Hole mask PNG of the image's size (white = hole; with transparency: transparent = hole), "
        "or a folder of masks named like the images (NAME.png or NAME_mask.png)."
    ),
    box: List[str] = typer.Option([], "--box", help="Hole as x,y,w,h in pixels; repeat for several holes (instead of --mask)."),
    batch_size: int = typer.Option(16, help="Images loaded, and hole windows filled, per batch."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("fp32", help=f"{', '.join(PRECISIONS)} (fp16: CUDA only)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace output files that exist already."),
) -> None:
    """Fill holes in your images with a trained generator, at any size; known pixels are kept byte for byte."""
    check_range("batch_size", batch_size, PLAIN_RANGES[("inpaint", "batch_size")])
    run_inpaint(source, checkpoint, output, mask, box, batch_size, device, precision, overwrite)


def report(line: str, always: bool = False) -> None:
    """Print ``error: line`` and exit with status 2. In a distributed run every process meets an error
    found before the processes connect (an option, a recipe) alike, so only rank 0 reports it; an
    error met later is this process's own (an image only its shard holds), so it reports it, with its
    rank, whichever rank it is."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        print(f"error: {line}", file=sys.stderr)
    elif joined_a_group() or always or os.environ.get("RANK", "0") == "0":
        print(f"error: [rank {os.environ.get('RANK', '?')}] {line}", file=sys.stderr)
    sys.exit(2)


def peer_failed(exc: RuntimeError) -> bool:
    """A collective that broke because another process of the run exited (its own error is reported
    there): Gloo's 'Connection closed by peer', NCCL's remote errors, a store that went away."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) == 1 or not joined_a_group():
        return False
    text = str(exc)
    return isinstance(exc, getattr(dist, "DistBackendError", ())) or any(
        marker in text for marker in ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL", "gloo")
    )


def usage_error(exc: Exception) -> None:
    """A flag of the wrong type, an unknown flag or a missing argument: one ``error:`` line (through
    UserError) pointing at --help. ``ssl`` or ``ssl CMD`` alone prints the help, as click does."""
    ctx = getattr(exc, "ctx", None)
    if exc.__class__.__name__ == "NoArgsIsHelpError" and ctx is not None:
        print(ctx.get_help())
        sys.exit(0)
    where = f"; see {ctx.command_path} --help" if ctx is not None else ""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    raise UserError(f"{message.rstrip('.')}{where}") from None


def error_line(exc: BaseException) -> str:
    """One line for the user. Errors raised in DataLoader workers arrive wrapped with the worker's
    traceback; keep only the original message."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text.splitlines()[0] if text else exc.__class__.__name__


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        try:
            load_plugins()  # the user's own mask families, encoders, datasets (SSL_INPAINT_PLUGINS)
            code = app(standalone_mode=False, prog_name="ssl")
        except typer.TyperException as exc:  # click's usage errors: one line instead of a box
            usage_error(exc)
        except typer.Abort:  # end of input at a prompt
            sys.exit(1)
        # click returns a status (--help: 0, Ctrl-C: 130) or the command's own result (a path, rows): success
        sys.exit(code if isinstance(code, int) else 0)
    except UserError as exc:
        report(error_line(exc))
    except OSError as exc:  # the filesystem said no: not writable, full, a file where a folder must be
        report(cannot_use(None, exc))
    except RuntimeError as exc:
        if not peer_failed(exc):
            raise
        report("stopped because another process of this run failed (see that process's error line)", always=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
