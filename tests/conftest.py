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
    from tests.helpers import run_ssl

    out = tmp_path_factory.mktemp("generator")
    run_ssl(*[
        "pretrain", "--dataset", "folder", "--data", str(tiny_data / "images"), "--name", "gen", "--output-dir", str(out),
        "--image-size", "32", "--bottleneck-channels", "16", "--batch-size", "2", "--val-images", "2", "--max-steps", "1",
        "--mask", "rect", "--rect-min", "0.25", "--rect-max", "0.5", "--no-global-d", "--no-local-d", "--num-workers", "0",
    ])
    return out / "gen"


# Where each command starts to train: a test that reaches one of these trains through the CLI.
TRAINING_ENTRY_POINTS = [
    ("ssl_inpaint.engine.pretrain", "train_one_epoch"),
    ("ssl_inpaint.engine.finetune", "transfer_epoch"),
    ("ssl_inpaint.engine.finetune", "train_svm"),
    ("ssl_inpaint.engine.pixelcnn", "lower_half_nll"),
]
TRAINING_FIXTURES = {"tiny_generator"}


@pytest.fixture(autouse=True)
def fast_tier_does_not_train(request, monkeypatch):
    """Keep ``-m "not slow"`` a fast tier: a test without the ``slow`` mark that trains through a
    command, or uses a fixture that does, fails with the fix."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    fix = "mark it @pytest.mark.slow (or test the function below the command)"
    used = TRAINING_FIXTURES & set(request.fixturenames)
    if used:
        pytest.fail(f"{request.node.nodeid} uses the training fixture {', '.join(sorted(used))}: {fix}")
    import importlib

    for module_name, function in TRAINING_ENTRY_POINTS:
        def refuse(*args, _where=f"{module_name}.{function}", **kwargs):
            raise AssertionError(f"{request.node.nodeid} trains through the CLI ({_where}): {fix}")

        monkeypatch.setattr(importlib.import_module(module_name), function, refuse)
    yield
