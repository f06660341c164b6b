import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """The tiny COCO / VOCdevkit / image-folder datasets, written by the project's own tool."""
    out = tmp_path_factory.mktemp("tiny")
    subprocess.run(
        [sys.executable, str(REPO / "tools" / "make_tiny_datasets.py"), "--out", str(out)],
        check=True, capture_output=True,
    )
    return out


@pytest.fixture(scope="session")
def tiny_generator(tiny_data, tmp_path_factory) -> Path:
    """A pretrain run (32 px, a 16-channel latent, one step) whose generator the inpaint/evaluate tests use."""
    from typer.testing import CliRunner

    from ssl_inpaint.cli import app

    out = tmp_path_factory.mktemp("generator")
    result = CliRunner().invoke(app, [
        "pretrain", "--dataset", "folder", "--data", str(tiny_data / "images"), "--name", "gen", "--output-dir", str(out),
        "--image-size", "32", "--bottleneck-channels", "16", "--batch-size", "2", "--val-images", "2", "--max-steps", "1",
        "--mask", "rect", "--rect-min", "0.25", "--rect-max", "0.5", "--no-global-d", "--no-local-d", "--num-workers", "0",
    ])
    assert result.exit_code == 0, result.output
    return out / "gen"
