"""What the tests share besides fixtures: running the ``ssl`` command in-process."""

from click.testing import Result
from typer.testing import CliRunner

from ssl_inpaint.cli import app


def run_ssl(*args: str) -> Result:
    """``ssl ARGS`` in this process; a Python exception inside the command is re-raised with its
    traceback, and any other non-zero exit fails the test with the command's output."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result
