"""``ssl compare``: pretrained vs random init, mean ± std over seeds, from the runs' metrics.json."""

from __future__ import annotations

import glob
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table
from torch.utils.tensorboard import SummaryWriter

from ssl_inpaint.runtime import console
from ssl_inpaint.errors import UserError

INITS = ("pretrained", "random")


@dataclass
class Row:
    dataset: str
    mode: str
    budget: str
    metric: str
    pretrain: str  # where the non-random weights came from: a pretrain run, or weights-<file> ("—": none)
    values: dict[str, dict[int, float]]  # init -> seed -> value
    protocol: str = ""  # the runs' --name prefix: one transfer protocol and encoder architecture

    def stats(self, init: str) -> tuple[float, float, int]:
        vals = list(self.values.get(init, {}).values())
        if not vals:
            return float("nan"), float("nan"), 0
        return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)

    def difference(self) -> tuple[float, float, int]:
        """Mean and std over seeds of (pretrained - random), pairing runs by seed."""
        pre, rand = self.values.get("pretrained", {}), self.values.get("random", {})
        common = sorted(set(pre) & set(rand))
        diffs = [pre[s] - rand[s] for s in common]
        if not diffs:
            return float("nan"), float("nan"), 0
        return float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0, len(diffs)


def find_runs(patterns: Iterable[str]) -> list[Path]:
    """Run folders holding metrics.json; a pattern may be a glob or a folder of runs."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) or [pattern]
        for match in map(Path, matches):
            if (match / "metrics.json").is_file():
                found.append(match)
            elif match.is_dir():
                found += sorted(p.parent for p in match.rglob("metrics.json"))
    unique = list(dict.fromkeys(found))
    if not unique:
        raise UserError(f"no finished runs (folders with metrics.json) in {' '.join(patterns)}; run ssl finetune first")
    return unique


def pretrain_source(checkpoint: str) -> str:
    """The pretrain run a checkpoint argument names (a run folder or its encoder.pt)."""
    path = Path(checkpoint)
    return path.parent.name if path.suffix == ".pt" else path.name


def protocol_key(metrics: dict) -> str:
    """What must be equal for two runs to be compared: every protocol setting and the encoder's
    architecture (a random baseline with another latent size or schedule is another experiment).
    Results written before these were recorded share the empty key."""
    if "protocol" not in metrics:
        return ""
    return json.dumps([metrics["protocol"], metrics.get("arch", {})], sort_keys=True)


def collect(runs: list[Path]) -> list[Row]:
    """Rows of (dataset, mode, label budget, metric, protocol, pretrain run). Random-init runs do not
    depend on a pretrain run, so each random baseline is shown against every pretrain run of the
    same protocol and encoder architecture, and only those."""
    pretrained: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    random: dict[tuple, dict[int, float]] = defaultdict(dict)
    prefixes: dict[tuple, str] = {}
    for run in runs:
        try:
            m = json.loads((run / "metrics.json").read_text())
            key = (m["dataset"], m["mode"], m["budget"], m["metric"], protocol_key(m))
            if m["init"] == "random":
                random[key][int(m["seed"])] = float(m["value"])
                prefixes.setdefault((key, "—"), m.get("run_prefix", ""))
            else:  # the inpainting pretext, or a weights file (e.g. supervised) in the same column
                source = pretrain_source(m["checkpoint"]) if m["init"] == "pretrained" else m["init"]
                pretrained[key][source][int(m["seed"])] = float(m["value"])
                prefixes[(key, source)] = m.get("run_prefix", "")
        except (json.JSONDecodeError, KeyError, ValueError) as exc:
            raise UserError(f"{run / 'metrics.json'} is not an ssl finetune result ({exc})") from None
    rows = []
    for key in sorted(set(pretrained) | set(random), key=lambda k: (*k[:4], k[4])):
        for source, values in sorted(pretrained.get(key, {"—": {}}).items()):
            rows.append(Row(
                *key[:4], pretrain=source, values={"pretrained": dict(values), "random": dict(random.get(key, {}))},
                protocol=prefixes.get((key, source), ""),
            ))
    return sorted(rows, key=lambda r: (r.dataset, r.mode, r.budget, r.metric, r.protocol, r.pretrain))


def _fmt(mean: float, std: float, n: int) -> str:
    return "—" if n == 0 else f"{mean * 100:.2f} ± {std * 100:.2f}"


def table_cells(row: Row) -> list[str]:
    seeds = "/".join(str(row.stats(init)[2]) for init in INITS)
    return [row.dataset, row.mode, row.budget, row.metric, row.protocol or "—", row.pretrain, seeds,
            _fmt(*row.stats("pretrained")), _fmt(*row.stats("random")), _fmt(*row.difference())]


HEADER = ["dataset", "mode", "labels", "metric (%)", "protocol", "pretrain run", "seeds (pre/rand)", "pretrained", "random", "pretrained − random"]


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(table_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[Row], width: int = 640, bar_height: int = 220) -> torch.Tensor:
    """Grouped bars (pretrained, random) with ±1 std whiskers, as a (3, H, W) image in [0, 1]."""
    colours = {"pretrained": (46, 110, 200), "random": (200, 120, 40)}
    height = bar_height + 80
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    bottom = 20 + bar_height
    draw.line([(40, bottom), (width - 10, bottom)], fill="black")
    slot = (width - 60) / max(len(rows), 1)
    for i, row in enumerate(rows):
        for j, init in enumerate(INITS):
            mean, std, n = row.stats(init)
            if n == 0:
                continue
            x0 = 50 + i * slot + j * slot * 0.4
            x1 = x0 + slot * 0.35
            y = bottom - mean * bar_height
            draw.rectangle([x0, y, x1, bottom], fill=colours[init])
            xm = (x0 + x1) / 2
            draw.line([(xm, y - std * bar_height), (xm, y + std * bar_height)], fill="black", width=2)
            draw.text((x0, y - 14 - std * bar_height), f"{mean * 100:.1f}", fill="black")
        draw.text((50 + i * slot, bottom + 6), f"{row.mode} {row.budget}"[:28], fill="black")
        draw.text((50 + i * slot, bottom + 20), f"{row.pretrain}"[:28], fill="black")
    for j, init in enumerate(INITS):
        draw.rectangle([50 + j * 120, height - 22, 62 + j * 120, height - 10], fill=colours[init])
        draw.text((68 + j * 120, height - 22), init, fill="black")
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255


def run_compare(patterns: list[str], output: Path, logdir: Path) -> list[Row]:
    runs = find_runs(patterns)
    rows = collect(runs)
    table = Table(title=f"pretrained vs random init, {len(runs)} runs: mean ± std over seeds; the difference is paired by seed")
    for column in HEADER:
        table.add_column(column)
    for r in rows:
        table.add_row(*table_cells(r))
    Console(width=max(170, Console().width)).print(table)
    text = markdown_table(rows)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    writer = SummaryWriter(str(logdir))
    writer.add_text("compare/table", text)
    chart = bar_chart(rows)
    writer.add_image("compare/bars", chart)
    Image.fromarray((chart.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(output.with_suffix(".png"))
    writer.close()
    console.print(f"table written to {output}; TensorBoard: {logdir}")
    return rows
