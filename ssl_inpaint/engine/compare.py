"""``ssl compare``: pretrained vs each baseline (random init, data-dependent init), mean ± std over seeds,
paired by seed, from the runs' metrics.json. A row is one dataset (kind and data root), transfer
protocol, encoder architecture and pretrain run."""

from __future__ import annotations

import functools
import glob
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from rich.console import Console
from rich.table import Table
from torch.utils.tensorboard import SummaryWriter

from ssl_inpaint.runtime import console
from ssl_inpaint.errors import UserError
from ssl_inpaint.storage import cannot_use, check_output_path, save_figure_atomic, write_text_atomic
from ssl_inpaint.transfer_result import TransferResult

# The columns of a row: the pretext (or weights file) under test, and the baselines it is set against.
PRETRAINED = "pretrained"
BASELINES = ("random", "datadep")  # PyTorch's default init; a data-dependent init with no pretext
INITS = (PRETRAINED, *BASELINES)


@dataclass
class Row:
    dataset: str
    mode: str
    budget: str
    metric: str
    pretrain: str  # where the non-random weights came from: a pretrain run, or weights-<file> ("—": none)
    values: dict[str, dict[int, float]]  # init -> seed -> value
    protocol: str = ""  # the runs' --name prefix: one transfer protocol and encoder architecture
    val: dict[str, dict[int, float]] = field(default_factory=dict)  # init -> seed -> validation value (--val-per-class)

    def stats(self, init: str) -> tuple[float, float, int]:
        return mean_std(self.values.get(init, {}))

    def val_stats(self, init: str) -> tuple[float, float, int]:
        return mean_std(self.val.get(init, {}))

    def difference(self, baseline: str = "random") -> tuple[float, float, int]:
        """Mean and std over seeds of (pretrained - baseline), pairing runs by seed."""
        pre, base = self.values.get(PRETRAINED, {}), self.values.get(baseline, {})
        common = sorted(set(pre) & set(base))
        diffs = [pre[s] - base[s] for s in common]
        if not diffs:
            return float("nan"), float("nan"), 0
        return float(np.mean(diffs)), float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0, len(diffs)


def mean_std(by_seed: dict[int, float]) -> tuple[float, float, int]:
    """Mean, sample std and count of one init's values over seeds (nan, nan, 0 for none)."""
    vals = list(by_seed.values())
    if not vals:
        return float("nan"), float("nan"), 0
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)


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


def protocol_key(result: TransferResult) -> str:
    """What must be equal for two runs to be compared: every protocol setting and the encoder's
    architecture (a random baseline with another latent size or schedule is another experiment).
    Results written before these were recorded share the empty key."""
    if result.protocol is None:
        return ""
    protocol = {**protocol_defaults(), **result.protocol}  # a setting added later: its default, as the older run had
    return json.dumps([protocol, result.arch], sort_keys=True)


@functools.lru_cache(maxsize=1)
def protocol_defaults() -> dict:  # callers copy it (``{**defaults, ...}``), never change it
    """The default of every protocol setting ssl finetune records today."""
    from ssl_inpaint.options.finetune import FinetuneConfig, protocol_settings

    return protocol_settings(FinetuneConfig())


def dataset_labels(identities: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """A short, unambiguous label per dataset: the kind, and as many of the root's last path parts as
    tell it apart from the other roots of that kind in the table (none when the kind has one root)."""
    labels = {}
    for kind, root in identities:
        others = [r for k, r in identities if k == kind and r != root]
        if not others or not root:
            labels[(kind, root)] = kind
            continue
        parts = Path(root).parts
        for n in range(1, len(parts) + 1):
            suffix = parts[-n:]
            if all(Path(o).parts[-n:] != suffix for o in others):
                break
        labels[(kind, root)] = f"{kind}:{'/'.join(suffix)}"
    return labels


def collect(runs: list[Path]) -> list[Row]:
    """Rows of (dataset, mode, label budget, metric, protocol, pretrain run). Baseline runs (random,
    datadep) do not depend on a pretrain run, so each baseline is shown against every pretrain run
    of the same dataset, protocol and encoder architecture, and only those. Two runs that would fill
    the same cell (same dataset, protocol, init, pretrain run and seed) are an error naming both."""
    pretrained: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    baselines: dict[tuple, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    val: dict[tuple, dict[int, float]] = defaultdict(dict)  # (key, init column, source) -> seed -> validation value
    prefixes: dict[tuple, str] = {}
    cells: dict[tuple, Path] = {}
    for run in runs:
        r = TransferResult.read(run)
        key = (r.dataset_identity, r.mode, r.budget, r.metric, protocol_key(r))
        if r.init in BASELINES:
            column, source = r.init, "—"
            baselines[key][column][r.seed] = r.value
            prefixes.setdefault((key, "—"), r.run_prefix)
        else:  # the inpainting pretext, or a weights file (e.g. supervised) in the same column
            column, source = PRETRAINED, pretrain_source(r.checkpoint) if r.init == PRETRAINED else r.init
            pretrained[key][source][r.seed] = r.value
            prefixes[(key, source)] = r.run_prefix
        if r.val_value is not None:
            val[(key, column, source)][r.seed] = r.val_value
        cell = (key, column, source, r.seed)
        if cell in cells:
            raise UserError(
                f"{cells[cell]} and {run} are the same experiment ({r.init} init, seed {r.seed}, same dataset and protocol); "
                f"compare one of them"
            )
        cells[cell] = run
    labels = dataset_labels({key[0] for key in (*pretrained, *baselines)})
    rows = []
    for key in set(pretrained) | set(baselines):
        for source, values in sorted(pretrained.get(key, {"—": {}}).items()):
            rows.append(Row(
                labels[key[0]], *key[1:4], pretrain=source,
                values={PRETRAINED: dict(values), **{b: dict(v) for b, v in baselines.get(key, {}).items()}},
                protocol=prefixes.get((key, source), ""),
                val={init: dict(val[cell]) for init in INITS if (cell := (key, init, source if init == PRETRAINED else "—")) in val},
            ))
    return sorted(rows, key=lambda r: (r.dataset, r.mode, r.budget, r.metric, r.protocol, r.pretrain))


def _fmt(mean: float, std: float, n: int) -> str:
    return "—" if n == 0 else f"{mean * 100:.2f} ± {std * 100:.2f}"


def baselines_present(rows: list[Row]) -> list[str]:
    """The baseline columns a table needs: random always, the others when some run has them."""
    return [b for b in BASELINES if b == "random" or any(r.values.get(b) for r in rows)]


def header(rows: list[Row]) -> list[str]:
    short = {PRETRAINED: "pre", "random": "rand", "datadep": "datadep"}
    seeds = "/".join(short[i] for i in [PRETRAINED, *baselines_present(rows)])
    cells = ["dataset", "mode", "labels", "metric (%)", "protocol", "pretrain run", f"seeds ({seeds})", PRETRAINED]
    for baseline in baselines_present(rows):
        cells += [baseline, f"pretrained − {baseline}"]
    return cells


def table_cells(row: Row, baselines: list[str]) -> list[str]:
    seeds = "/".join(str(row.stats(init)[2]) for init in [PRETRAINED, *baselines])
    cells = [row.dataset, row.mode, row.budget, row.metric, row.protocol or "—", row.pretrain, seeds, _fmt(*row.stats(PRETRAINED))]
    for baseline in baselines:
        cells += [_fmt(*row.stats(baseline)), _fmt(*row.difference(baseline))]
    return cells


def markdown_table(rows: list[Row]) -> str:
    columns, baselines = header(rows), baselines_present(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(table_cells(r, baselines)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


@dataclass
class Choice:
    """Each init's protocol chosen by its own mean validation score (ssl finetune --val-per-class) among
    the rows of one dataset, mode, label budget and pretrain run: best against best, with the test
    split never looked at to choose."""

    dataset: str
    mode: str
    budget: str
    metric: str
    pretrain: str
    chosen: dict[str, Row]  # init -> the row whose protocol it takes

    def difference(self, baseline: str) -> tuple[float, float, int]:
        """pretrained - baseline, each under its own chosen protocol, paired by seed."""
        pairing = Row(self.dataset, self.mode, self.budget, self.metric, self.pretrain, {
            init: self.chosen[init].values[init] for init in (PRETRAINED, baseline) if init in self.chosen
        })
        return pairing.difference(baseline)


def choose_by_validation(rows: list[Row]) -> list[Choice]:
    """For every init, the protocol row with the best mean validation score, among rows whose runs of
    that init all have one."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        if row.pretrain != "—":
            groups[(row.dataset, row.mode, row.budget, row.metric, row.pretrain)].append(row)
    choices = []
    for key, group in sorted(groups.items()):
        chosen = {}
        for init in INITS:
            candidates = [r for r in group if r.values.get(init) and set(r.val.get(init, {})) == set(r.values[init])]
            if candidates:
                chosen[init] = max(candidates, key=lambda r: (r.val_stats(init)[0], r.protocol))
        if PRETRAINED in chosen:
            choices.append(Choice(*key, chosen))
    if not choices:
        raise UserError("--choose-by-val: no run has a validation score; run ssl finetune with --val-per-class N (every init, every protocol)")
    return choices


def choice_table(choices: list[Choice]) -> str:
    """Markdown: each init's chosen protocol, its validation and test scores, and the paired differences."""
    baselines = [b for b in BASELINES if any(b in c.chosen for c in choices)]
    columns = ["dataset", "mode", "labels", "metric (%)", "pretrain run", "pretrained: protocol (val)", PRETRAINED]
    for baseline in baselines:
        columns += [f"{baseline}: protocol (val)", baseline, f"pretrained − {baseline}"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for c in choices:
        cells = [c.dataset, c.mode, c.budget, c.metric, c.pretrain]
        for init in [PRETRAINED, *baselines]:
            row = c.chosen.get(init)
            cells += ["—", "—"] if row is None else [f"{row.protocol or '—'} ({100 * row.val_stats(init)[0]:.2f})", _fmt(*row.stats(init))]
            if init != PRETRAINED:
                cells.append(_fmt(*c.difference(init)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def validation_table(rows: list[Row]) -> str:
    """Markdown: every protocol's mean ± std validation score per init, what the choice was made on."""
    inits = [i for i in INITS if any(r.val.get(i) for r in rows)]
    columns = ["dataset", "mode", "labels", "metric (%)", "protocol", "pretrain run", *(f"{i}: validation" for i in inits)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        if row.pretrain == "—" or not any(row.val.values()):
            continue
        lines.append("| " + " | ".join([row.dataset, row.mode, row.budget, row.metric, row.protocol or "—", row.pretrain,
                                         *(_fmt(*row.val_stats(i)) for i in inits)]) + " |")
    return "\n".join(lines) + "\n"


CHOICE_HEADING = "### Each init's protocol chosen on validation"


COLOURS = {PRETRAINED: "#2e6ec8", "random": "#c87828", "datadep": "#5a9a46"}


def bar_chart(rows: list[Row]):
    """A matplotlib figure: one group of bars per row (pretrained and each baseline), mean ± 1 std
    over seeds as error bars, the value on each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inits = [PRETRAINED, *baselines_present(rows)]
    figure, axes = plt.subplots(figsize=(max(6.0, 1.3 * len(rows) + 2), 4.2), layout="constrained")
    width = 0.8 / len(inits)
    for j, init in enumerate(inits):
        stats = [row.stats(init) for row in rows]
        xs = [i + (j - (len(inits) - 1) / 2) * width for i in range(len(rows))]
        means = [100 * m if n else 0.0 for m, _, n in stats]
        errors = [100 * s if n else 0.0 for _, s, n in stats]
        bars = axes.bar(xs, means, width, yerr=errors, capsize=3, color=COLOURS[init], label=init)
        axes.bar_label(bars, labels=[f"{m:.1f}" if n else "" for m, (_, _, n) in zip(means, stats)], fontsize=7, padding=2)
    axes.set_xticks(range(len(rows)), [f"{r.dataset}\n{r.mode} {r.budget}\n{r.pretrain}"[:60] for r in rows], fontsize=7)
    axes.set_ylabel(f"{rows[0].metric if rows else 'score'} (%), mean ± std over seeds")
    axes.set_title("ssl compare: pretrained vs baselines")
    axes.legend(fontsize=8)
    return figure


def labels_per_class(budget: str) -> Optional[int]:
    """The label budget as labels per class ("10-per-class" -> 10); None for fractions and "all"."""
    head, _, tail = budget.partition("-")
    return int(head) if tail == "per-class" and head.isdigit() else None


def budget_curves(rows: list[Row]):
    """A matplotlib figure, or None when no (dataset, mode, protocol family) has two budgets: the
    metric against labels per class, one line per init (pretrained runs of each pretrain run, and
    each baseline), mean ± std over seeds as error bars; one panel per dataset and mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple[str, str], dict[str, dict[int, tuple[float, float]]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        budget = labels_per_class(row.budget)
        if budget is None:
            continue
        for init in INITS:
            mean, std, n = row.stats(init)
            if n:
                label = f"{PRETRAINED} ({row.pretrain})" if init == PRETRAINED else init
                panels[(row.dataset, row.mode)][label][budget] = (100 * mean, 100 * std)
    panels = {k: v for k, v in panels.items() if any(len(points) > 1 for points in v.values())}
    if not panels:
        return None
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), layout="constrained", squeeze=False)
    for ax, ((dataset, mode), lines) in zip(axes[0], sorted(panels.items())):
        for label, points in sorted(lines.items()):
            budgets = sorted(points)
            colour = COLOURS[PRETRAINED] if label.startswith(PRETRAINED) else COLOURS.get(label)
            ax.errorbar(budgets, [points[b][0] for b in budgets], yerr=[points[b][1] for b in budgets],
                        marker="o", capsize=3, label=label, color=colour if len(lines) <= len(INITS) else None)
        ax.set_xscale("log")
        ticks = sorted({b for points in lines.values() for b in points})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("labelled images per class")
        ax.set_ylabel(f"{rows[0].metric} (%), mean ± std over seeds")
        ax.set_title(f"{dataset}: {mode}")
        ax.legend(fontsize=7)
    return figure


TABLE_HEADER = "| dataset | mode |"  # how a table written by ssl compare begins


def chart_paths(output: Path) -> tuple[Path, Path]:
    """The bar chart and the budget curves, written beside the table."""
    return output.with_suffix(".png"), output.with_name(output.stem + "_budgets.png")


def check_outputs(output: Path, logdir: Path, runs: list[Path], overwrite: bool) -> None:
    """The table and its charts replace only what an earlier ssl compare wrote (or anything with
    --overwrite), never a run's file, and nothing lands inside another command's run folder."""
    if output.suffix != ".md":
        raise UserError(f"--output {output} must name a Markdown file (.md): the charts are written beside it as .png")
    files = [output, *chart_paths(output)]
    for path in files:
        check_output_path(path, [run / "metrics.json" for run in runs], "compare", "--output")
    check_output_path(logdir / "events", [], "compare", "--logdir")
    if overwrite:
        return
    ours = output.is_file() and _first_line(output).startswith(TABLE_HEADER)
    for path in files:
        if path.exists() and not ours:
            raise UserError(f"{path} exists and was not written by ssl compare; pass --overwrite to replace it or choose another --output")


def _first_line(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            return handle.readline(200).decode("utf-8", "replace")
    except OSError as exc:
        raise UserError(cannot_use(path, exc)) from None


def run_compare(patterns: list[str], output: Path, logdir: Path, overwrite: bool = False, choose_by_val: bool = False) -> list[Row]:
    runs = find_runs(patterns)
    check_outputs(output, logdir, runs, overwrite)
    rows = collect(runs)
    choices = choose_by_validation(rows) if choose_by_val else []
    table = Table(title=f"pretrained vs baselines, {len(runs)} runs: mean ± std over seeds; each difference is paired by seed")
    for column in header(rows):
        table.add_column(column)
    for r in rows:
        table.add_row(*table_cells(r, baselines_present(rows)))
    Console(width=max(170, Console().width)).print(table)
    text = markdown_table(rows)
    if choices:
        chosen = choice_table(choices)
        console.print(f"{CHOICE_HEADING} (best mean validation score per init; test scores, paired by seed)\n{chosen}")
        text += (f"\n{CHOICE_HEADING}\n\nEach init takes the protocol (run prefix) with its best mean validation score "
                 f"(ssl finetune --val-per-class); its test score is reported, and differences pair the chosen runs by seed.\n\n{chosen}"
                 f"\nThe validation scores every choice was made on:\n\n{validation_table(rows)}")
    write_text_atomic(text, output)
    bars_png, budgets_png = chart_paths(output)
    figure = bar_chart(rows)
    save_figure_atomic(figure, bars_png, dpi=120)
    writer = SummaryWriter(str(logdir))
    writer.add_text("compare/table", text)
    writer.add_figure("compare/bars", figure)  # closes the figure
    curves = budget_curves(rows)
    if curves is not None:
        save_figure_atomic(curves, budgets_png, dpi=120)
        writer.add_figure("compare/budgets", curves)
    writer.close()
    console.print(f"table written to {output}; TensorBoard: {logdir}")
    return rows
