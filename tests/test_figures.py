"""The figures the documentation shows are drawn by repository commands from run outputs:
tools/probe_table.py's probe curves (here), ssl compare's bars and accuracy-vs-labels figure
(tests/test_photos.py, tests/test_transfer.py) and ssl evaluate's cases (tests/test_evaluate.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image
from torch.utils.tensorboard import SummaryWriter

REPO = Path(__file__).resolve().parents[1]


def fake_pretext_run(folder: Path, knn: list[float], linear: list[float], every: int = 500) -> Path:
    with SummaryWriter(str(folder)) as writer:
        for i, (k, l) in enumerate(zip(knn, linear)):
            writer.add_scalar("probe/knn_top1", k, i * every)
            writer.add_scalar("probe/linear_top1", l, i * every)
    return folder


def test_probe_table_prints_first_and_last_and_draws_the_curves(tmp_path):
    a = fake_pretext_run(tmp_path / "a", [0.25, 0.30, 0.35], [0.30, 0.32, 0.40])
    b = fake_pretext_run(tmp_path / "b", [0.25, 0.20], [0.30, 0.31], every=1000)
    (tmp_path / "no_probe").mkdir()
    figure = tmp_path / "figs" / "probe.png"
    figure.parent.mkdir()
    done = subprocess.run(
        [sys.executable, str(REPO / "tools" / "probe_table.py"), str(a), str(b), str(tmp_path / "no_probe"), "--figure", str(figure)],
        capture_output=True, text=True, check=True,
    )
    rows = done.stdout.splitlines()
    assert rows[2] == "| a | 25.0 | 35.0 (step 1000) | 30.0 | 40.0 (step 1000) |"
    assert rows[3] == "| b | 25.0 | 20.0 (step 1000) | 30.0 | 31.0 (step 1000) |"
    assert len(rows) == 5 and rows[4] == f"figure: {figure}"
    width, height = Image.open(figure).size
    assert width > 2 * height > 400
