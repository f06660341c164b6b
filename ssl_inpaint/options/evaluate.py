"""The options of ``ssl evaluate``: which generator, which test images and holes, which classical
baselines, and the checks across them."""

from __future__ import annotations

from dataclasses import dataclass

from ssl_inpaint.models.baselines import BASELINES
from ssl_inpaint.config import at_least, MAX_WIDTH, option, PrecisionOptions, RunOptions, RuntimeOptions
from ssl_inpaint.data import DATASETS, SourceOptions
from ssl_inpaint.errors import UserError
from ssl_inpaint.masks import MaskOptions


@dataclass
class EvaluateConfig(MaskOptions, SourceOptions, PrecisionOptions, RuntimeOptions, RunOptions):
    checkpoint: str = option("", "The generator: a pretrain run folder (runs/NAME) or one of its checkpoint files.")
    dataset: str = option("folder", f"Dataset kind: {DATASETS.choices()}.")
    split: str = option("", "Split (empty: COCO val2017, VOC val, Fashion-MNIST test).")
    max_images: int = option(0, "Evaluate the first N images only (0: all).", at_least(0))
    baselines: str = option(",".join(BASELINES), f"Classical methods to compare with, comma-separated ({', '.join(BASELINES)}; empty: none).")
    inpaint_radius: int = option(5, "telea / ns: neighbourhood radius in pixels.", at_least(1, 1024))
    batch_size: int = option(32, "Images per generator forward pass.", at_least(1, MAX_WIDTH))
    per_image_csv: bool = option(False, "Also write per_image.csv: one row per image and method.")
    show_cases: int = option(4, "Worst and best cases (by the model's hole PSNR) drawn into TensorBoard and worst.png / best.png.", at_least(0, 64))
    overwrite: bool = option(False, "Replace the results of an earlier evaluation with the same --name.")

    @property
    def baseline_names(self) -> list[str]:
        return [b.strip() for b in self.baselines.split(",") if b.strip()]

    @property
    def resolved_split(self) -> str:
        return self.split or (DATASETS.get(self.dataset).evaluate_split if self.dataset in DATASETS else "")

    def validate(self) -> None:
        if not self.checkpoint:
            raise UserError("no generator given: pass --checkpoint runs/NAME (a pretrain run folder)")
        unknown = [b for b in self.baseline_names if b not in BASELINES]
        if unknown:
            raise UserError(f"unknown baseline {unknown[0]!r} in --baselines; choose from: {', '.join(BASELINES)}")
        if len(set(self.baseline_names)) != len(self.baseline_names):
            raise UserError(f"--baselines lists a method twice: {self.baselines}")
        self.check_precision_name()
        if self.mask_needs_objects and not self.dataset_has_objects:
            raise UserError(f"--mask {self.mask} needs object annotations: use --dataset coco")
        self.mask_generator()
