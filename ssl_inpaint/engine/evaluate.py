"""``ssl evaluate``: completion quality of a trained generator next to classical inpainting.

Every method fills the same holes in the same images: crops as in pretext validation (shorter side to
the generator's side, centre crop), holes drawn from ``--mask`` with seeds (run seed, image index), so
two evaluations with the same seed are comparable number for number. All methods start from the same
8-bit pixels and are scored on 8-bit results, i.e. on what a user would save.
"""

from __future__ import annotations

import csv
import io
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from ssl_inpaint.models.baselines import create_baseline, keep_known
from ssl_inpaint.config import save_config
from ssl_inpaint.data import ImageSource, create_source
from ssl_inpaint.runs import RunLogger, run_folder_lock
from ssl_inpaint.storage import save_figure_atomic, write_json_atomic, write_text_atomic
from ssl_inpaint.runtime import console
from ssl_inpaint.runtime import configure_threads, resolve_workers
from ssl_inpaint.errors import UserError
from ssl_inpaint.completion import Inpainter, load_inpainter
from ssl_inpaint.masks import PretextDataset, check_object_source, degenerate_holes
from ssl_inpaint.metrics import HIGHER_IS_BETTER, image_quality, to_unit
from ssl_inpaint.options.evaluate import EvaluateConfig


def default_run_name(config: EvaluateConfig) -> str:
    path = Path(config.checkpoint)
    run = path if path.is_dir() else path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return f"evaluate_{run.name or 'model'}_{config.mask}"


def _quantize(x: torch.Tensor) -> torch.Tensor:
    """What saving as 8-bit does to values in [0, 1]."""
    return x.clamp(0, 1).mul(255).round().div(255)


def complete_batch(
    images: torch.Tensor, masks: torch.Tensor, inpainter: Inpainter, baselines: dict[str, Callable]
) -> dict[str, torch.Tensor]:
    """Completed 8-bit images in [0, 1], per method, for ground truth ``images`` (8-bit values in [0, 1])."""
    results = {"model": images * (1 - masks) + _quantize(inpainter.predict(images, masks)) * masks}
    pixels = images.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    holes = masks[:, 0].numpy() > 0.5
    for name, method in baselines.items():
        filled = np.stack([keep_known(p, method(p, h), h) for p, h in zip(pixels, holes)])
        results[name] = torch.from_numpy(filled).permute(0, 3, 1, 2).float().div(255)
    return results


def markdown_table(means: dict[str, dict[str, float]], count: int, caption: str) -> str:
    metrics = list(next(iter(means.values())))
    header = " | ".join(f"{m.replace('_', ' ')} {'↑' if HIGHER_IS_BETTER[m] else '↓'}" for m in metrics)
    lines = [f"| method | {header} |", "|---|" + "---:|" * len(metrics)]
    for method, values in means.items():
        cells = " | ".join(f"{values[m]:.4f}" if m.startswith(("ssim", "l1")) else f"{values[m]:.2f}" for m in metrics)
        lines.append(f"| {method} | {cells} |")
    return f"{caption} ({count} images; PSNR in dB, L1 on [0, 1] pixels)\n\n" + "\n".join(lines) + "\n"


@dataclass
class Cases:
    """The worst and best images by the model's hole PSNR, kept while streaming through the data."""

    keep: int
    worst: list[tuple[float, torch.Tensor]] = dataclasses.field(default_factory=list)
    best: list[tuple[float, torch.Tensor]] = dataclasses.field(default_factory=list)

    def add(self, scores: list[float], rows: torch.Tensor) -> None:
        entries = list(zip(scores, rows))
        self.worst = sorted(self.worst + entries, key=lambda e: e[0])[: self.keep]
        self.best = sorted(self.best + entries, key=lambda e: -e[0])[: self.keep]

    @staticmethod
    def figure(entries: list[tuple[float, torch.Tensor]], columns: list[str], title: str) -> Any:
        """A matplotlib figure: one row per case (the model's hole PSNR on its left), one titled
        column per image: the original, the holed input, the model's completion, each baseline's."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = len(entries)
        figure, axes = plt.subplots(rows, len(columns), figsize=(1.6 * len(columns), 1.6 * rows + 0.5), squeeze=False)
        for r, (psnr, images) in enumerate(entries):
            for c, image in enumerate(images):
                pixels = image.permute(1, 2, 0).clamp(0, 1).numpy()
                axis = axes[r][c]
                axis.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0, vmax=1)
                axis.set_xticks([])
                axis.set_yticks([])
                if r == 0:
                    axis.set_title(columns[c], fontsize=9)
            axes[r][0].set_ylabel(f"model: {psnr:.1f} dB", fontsize=8)
        figure.suptitle(title, fontsize=10)
        figure.tight_layout()
        return figure


def run_evaluate(config: EvaluateConfig) -> Path:
    config.validate()
    config.name = config.name or default_run_name(config)
    with run_folder_lock(Path(config.output_dir) / config.name, "evaluate"):
        return _run_evaluate(config)


def evaluation_images(config: EvaluateConfig, inpainter: Inpainter) -> tuple[ImageSource, torch.utils.data.Subset]:
    """The source and the first ``--max-images`` of its items, each with its seeded hole, at the
    generator's size and in its colour mode."""
    source = create_source(config.dataset, config.data, config.resolved_split, config.year)
    if source.channels != inpainter.channels:
        raise UserError(
            f"the generator takes {inpainter.channels}-channel images but {source.name} has {source.channels}; "
            f"evaluate it on data like its training data"
        )
    if config.mask_needs_objects:
        check_object_source(source)
    dataset = PretextDataset(
        source, inpainter.image_size, config.mask_generator(), torch.zeros(source.channels), config.seed,
        train=False, strict=config.strict, use_objects=config.mask_needs_objects,
        reduced_decode=False,  # scores are for the images as they are: every pixel decoded
    )
    count = min(len(dataset), config.max_images) if config.max_images else len(dataset)
    return source, torch.utils.data.Subset(dataset, range(count))


@dataclass
class Scores:
    """Per-image metrics of every method, and what was left out."""

    per_image: dict[str, dict[str, list[float]]]
    cases: Cases
    scored: list[int] = dataclasses.field(default_factory=list)  # dataset index of every scored image, in order
    skipped: int = 0  # unreadable files
    unscored_holes: int = 0  # empty or whole-image holes


def score_images(config: EvaluateConfig, loader: DataLoader, inpainter: Inpainter, baselines: dict, logger: RunLogger) -> Scores:
    scores = Scores({m: {} for m in ["model", *baselines]}, Cases(config.show_cases))
    seen = 0
    for step, batch in enumerate(loader, start=1):
        # An item whose own file is unreadable arrives as the next readable image (the training
        # policy); here it is dropped, so no file is scored under another's name or twice.
        readable = batch["skipped"] == 0
        degenerate = degenerate_holes(batch["mask"]) & readable  # an empty hole would score PSNR inf
        keep = readable & ~degenerate
        indices = torch.arange(seen, seen + len(keep))[keep].tolist()
        seen += len(keep)
        scores.skipped += int((~readable).sum())
        scores.unscored_holes += int(degenerate.sum())
        if not indices:
            continue
        images, masks = _quantize(to_unit(batch["image"][keep])), batch["mask"][keep]
        results = complete_batch(images, masks, inpainter, baselines)
        for method, completed in results.items():
            for metric, values in image_quality(completed, images, masks).items():
                scores.per_image[method].setdefault(metric, []).extend(values.tolist())
        if config.show_cases:
            holed = images * (1 - masks) + 0.5 * masks
            rows = torch.stack([images, holed, *results.values()], dim=1)
            scores.cases.add(scores.per_image["model"]["psnr_hole"][len(scores.scored):], rows)
        scores.scored += indices
        logger.advance(step, f"{len(scores.scored)} images")
    return scores


def write_results(config: EvaluateConfig, run_dir: Path, scores: Scores, source: ImageSource, image_size: int, logger: RunLogger) -> str:
    """results.md / results.json / per_image.csv / best.png / worst.png and TensorBoard; returns the table."""
    methods = list(scores.per_image)
    means = {m: {k: float(np.mean(v)) for k, v in scores.per_image[m].items()} for m in methods}
    stds = {m: {k: float(np.std(v)) for k, v in scores.per_image[m].items()} for m in methods}
    caption = f"`{config.name}`: mask {config.mask}, seed {config.seed}, {source.name}"
    table = markdown_table(means, len(scores.scored), caption)
    write_text_atomic(table, run_dir / "results.md")
    summary = {
        "checkpoint": config.checkpoint,
        "data": source.name,
        "images": len(scores.scored),
        "skipped_unreadable": scores.skipped,
        "skipped_degenerate_holes": scores.unscored_holes,
        "image_size": image_size,
        "mask": config.mask,
        "seed": config.seed,
        "columns": ["original", "holed input", *methods],
        "mean": means,
        "std": stds,
    }
    write_json_atomic(summary, run_dir / "results.json")
    if config.per_image_csv:
        _write_csv(run_dir / "per_image.csv", scores.per_image, source, scores.scored)
    logger.text("results", table)
    logger.scalars({f"eval/{m}/{k}": v for m, values in means.items() for k, v in values.items()}, 0)
    if config.show_cases and scores.cases.worst:
        columns = ["original", "holed input", *methods]
        for label, entries in (("worst", scores.cases.worst), ("best", scores.cases.best)):
            title = f"the {len(entries)} {label} images by the model's hole PSNR ({config.mask} holes, {source.name})"
            save_figure_atomic(Cases.figure(entries, columns, title), run_dir / f"{label}.png", dpi=120)
            logger.figure(f"cases/{label}", Cases.figure(entries, columns, title), 0)
    return table


def _run_evaluate(config: EvaluateConfig) -> Path:
    run_dir = Path(config.output_dir) / config.name
    if (run_dir / "results.json").exists() and not config.overwrite:
        raise UserError(f"{run_dir} holds the results of an earlier evaluation; pass --overwrite to replace them or choose another --name")
    baselines = {name: create_baseline(name, config.inpaint_radius) for name in config.baseline_names}
    inpainter = load_inpainter(config.checkpoint, config.device, config.precision)
    source, subset = evaluation_images(config, inpainter)
    count = len(subset)
    config.num_workers = resolve_workers(config.num_workers, inpainter.device)
    configure_threads(config.num_workers, inpainter.device)
    loader = DataLoader(subset, batch_size=config.batch_size, num_workers=config.num_workers)
    save_config(config, run_dir / "config.yaml")
    console.print(
        f"evaluate {config.checkpoint} on {count} images of {source.name} at {inpainter.image_size}px, "
        f"mask={config.mask} (seed {config.seed}), methods: {', '.join(['model', *baselines])}"
    )
    with RunLogger(run_dir, len(loader), f"evaluate {config.name}") as logger:
        scores = score_images(config, loader, inpainter, baselines, logger)
        if not scores.scored:
            raise UserError(
                f"no image of {source.name} could be scored: {scores.skipped} of {count} unreadable, {scores.unscored_holes} "
                f"with an empty or whole-image hole (check the dataset and the --mask options)"
            )
        table = write_results(config, run_dir, scores, source, inpainter.image_size, logger)
    if scores.skipped:
        console.print(f"warning: {scores.skipped} unreadable images were left out of the scores (their names are in the log above)", style="yellow")
    if scores.unscored_holes:
        console.print(f"warning: {scores.unscored_holes} images whose hole was empty or the whole image were left out of the scores", style="yellow")
    console.print(table, markup=False, highlight=False, soft_wrap=True)
    console.print(f"results: {run_dir / 'results.md'}, {run_dir / 'results.json'}")
    return run_dir


def _write_csv(path: Path, per_image: dict[str, dict[str, list[float]]], source, scored: list[int]) -> None:
    rows = io.StringIO(newline="")
    writer = csv.writer(rows)
    metrics = list(next(iter(per_image.values())))
    writer.writerow(["index", "image", "method", *metrics])
    for method, values in per_image.items():
        for row, index in enumerate(scored):
            writer.writerow([index, source.describe(index), method, *(f"{values[m][row]:.6g}" for m in metrics)])
    write_text_atomic(rows.getvalue(), path)
