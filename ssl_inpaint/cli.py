"""The ``ssl`` command line: thin entry points over the engines.

Every command's options are generated from its config dataclass (see :mod:`ssl_inpaint.config`), so
``--help`` lists every recipe key. Problems with the user's input end in one ``error:`` line.
"""

from __future__ import annotations

import logging
import sys

import typer

from ssl_inpaint.config import typer_command
from ssl_inpaint.engine.pretrain import PretrainConfig, run_pretrain
from ssl_inpaint.errors import UserError

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


def _pretrain(config: PretrainConfig) -> None:
    run_pretrain(config)


app.command(
    "pretrain",
    help="Inpainting pretext: U-Net generator + local/global discriminators; writes runs/NAME/.",
)(typer_command(PretrainConfig, _pretrain, "Inpainting pretext pretraining.", default_name="pretrain"))


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
        app()
    except UserError as exc:
        print(f"error: {error_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
