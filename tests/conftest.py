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
