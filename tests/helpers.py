"""What the tests share besides fixtures: running the ``ssl`` command in-process, and decoding given
encoder maps (the masked-skip tests)."""

from click.testing import Result
from typer.testing import CliRunner

from ssl_inpaint.cli import app


def decode_maps(generator, x, maps):
    """``generator(x)`` with its encoder returning ``maps`` instead of computing them."""
    original = generator.encoder.forward
    generator.encoder.forward = lambda _: maps
    try:
        return generator(x)
    finally:
        generator.encoder.forward = original


def disturb_inside_hole(features, hole):
    """Every map but the deepest, changed at every position that touches ``hole`` (B, 1, H, W)."""
    import torch

    disturbed = []
    for f in features[:-1]:
        inside = torch.nn.functional.adaptive_max_pool2d(hole, f.shape[-2:]) > 0
        disturbed.append(torch.where(inside, f + 100 * torch.randn_like(f), f))
    return [*disturbed, features[-1]]


def run_ssl(*args: str) -> Result:
    """``ssl ARGS`` in this process; a Python exception inside the command is re-raised with its
    traceback, and any other non-zero exit fails the test with the command's output."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result
