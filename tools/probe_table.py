"""The online probe of pretrain runs: kNN and linear top-1 (or mAP) of the frozen encoder at step 0
(the random init) and at the run's last probe, read from TensorBoard, as a markdown table; with
``--figure PNG`` also both curves over the pretext steps, one line per run (matplotlib).

    .venv/bin/python tools/probe_table.py runs/quickstart_pretrain runs/study/*/
    .venv/bin/python tools/probe_table.py --figure docs/figures/probe.png --title "Imagenette, 64 px" runs/photo_levers_imagenette/*/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ssl_inpaint.storage import save_figure_atomic

KINDS = ("knn", "linear")


def probe_curves(run: Path) -> dict[str, tuple[str, list[int], list[float]]]:
    """{kind: (tag, steps, values in %)} of a run's online probe; empty when it has none."""
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    curves = {}
    for kind in KINDS:
        tag = next((t for t in events.Tags()["scalars"] if t.startswith(f"probe/{kind}_")), None)
        if tag is None:
            return {}
        values = events.Scalars(tag)
        curves[kind] = (tag, [v.step for v in values], [100 * v.value for v in values])
    return curves


def table_row(run: Path, curves: dict) -> str:
    cells = []
    for kind in KINDS:
        _, steps, values = curves[kind]
        cells += [f"{values[0]:.1f}", f"{values[-1]:.1f} (step {steps[-1]})"]
    return f"| {run.name} | " + " | ".join(cells) + " |"


def draw(runs: dict[str, dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    for axis, kind, label in zip(axes, KINDS, ("kNN (k = 20)", "linear (logistic regression)")):
        for name, curves in runs.items():
            tag, steps, values = curves[kind]
            axis.plot(steps, values, marker="o", markersize=3, label=name)
        metric = "mAP" if tag.endswith("mAP") else "top-1"
        axis.set(title=f"online probe: {label}", xlabel="pretext step (0: the random init)", ylabel=f"{metric} (%)")
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="best")
    figure.suptitle(title)
    figure.tight_layout()
    save_figure_atomic(figure, path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="pretrain run folders")
    parser.add_argument("--figure", default="", help="also draw the curves into this PNG")
    parser.add_argument("--title", default="the encoder during the pretext")
    args = parser.parse_args()
    found = {}
    print("| pretrain run | kNN, step 0 | kNN, end | linear, step 0 | linear, end |")
    print("|---|---|---|---|---|")
    for arg in args.runs:
        run = Path(arg)
        curves = probe_curves(run)
        if curves:
            found[run.name] = curves
            print(table_row(run, curves))
    if args.figure and found:
        draw(found, Path(args.figure), args.title)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
