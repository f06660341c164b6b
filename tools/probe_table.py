"""Print the online probe of pretrain runs as a markdown table: kNN and linear top-1 (or mAP) of the
frozen encoder at step 0 (the random init) and at the run's last probe, read from TensorBoard.

    .venv/bin/python tools/probe_table.py runs/quickstart_pretrain runs/study/*/
"""

from __future__ import annotations

import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def probe_rows(run: Path) -> list[str]:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    cells = []
    for kind in ("knn", "linear"):
        tag = next((t for t in events.Tags()["scalars"] if t.startswith(f"probe/{kind}_")), None)
        if tag is None:
            return []
        values = events.Scalars(tag)
        first, last = values[0], values[-1]
        cells += [f"{100 * first.value:.1f}", f"{100 * last.value:.1f} (step {last.step})"]
    return cells


def main() -> None:
    print("| pretrain run | kNN, step 0 | kNN, end | linear, step 0 | linear, end |")
    print("|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        run = Path(arg)
        cells = probe_rows(run)
        if cells:
            print(f"| {run.name} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")


if __name__ == "__main__":
    main()
