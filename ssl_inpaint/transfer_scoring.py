"""How a transfer model is scored: its outputs (features or class scores) for every image of a
dataset, computed in shares across processes and gathered in dataset order; top-1 or VOC mAP; and
``Scoring``, the test split plus the held-out training images of ``--val-per-class``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ssl_inpaint.data.classification import ClassificationDataset, LabelledImages
from ssl_inpaint.distributed import Distributed, gather_rows
from ssl_inpaint.metrics import mean_average_precision, top1_accuracy
from ssl_inpaint.models import EncoderClassifier
from ssl_inpaint.options.finetune import FinetuneConfig
from ssl_inpaint.runtime import autocast, ResumableSampler


@torch.inference_mode()
def per_sample_outputs(fn, dataset: ClassificationDataset, config: FinetuneConfig, dist: Distributed,
                       generator: Optional[torch.Generator] = None) -> np.ndarray:
    """``fn(images)`` for every image of ``dataset``, in dataset order. Each process takes a share
    (DistributedSampler without shuffling) and the rows are gathered, dropping the sampler's padding
    repeats, so the result equals a single process's. ``generator``: what the loader draws its base
    seed from (default: the global generator), so a pass that must not move the training's random
    stream (the validation images) brings its own."""
    sampler = ResumableSampler(dataset, dist, seed=0, shuffle=False, drop_last=False)
    indices = np.asarray(list(iter(sampler)), dtype=np.int64)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=indices.tolist(), num_workers=config.num_workers,
                        pin_memory=dist.device.type == "cuda", generator=generator)
    rows = []
    for images, _, _ in loader:
        with autocast(config.precision, dist.device):
            rows.append(fn(images.to(dist.device)).float().cpu())
    local = torch.cat(rows).numpy() if rows else np.zeros((0,), np.float32)
    return gather_rows(local, indices, dist.world_size, len(dataset))


def extract_features(model: EncoderClassifier, dataset: ClassificationDataset, config: FinetuneConfig, dist: Distributed,
                     generator: Optional[torch.Generator] = None) -> np.ndarray:
    model.eval()
    return per_sample_outputs(model.extract, dataset, config, dist, generator)


def predict(model: nn.Module, dataset: ClassificationDataset, config: FinetuneConfig, dist: Distributed,
            generator: Optional[torch.Generator] = None) -> np.ndarray:
    model.eval()
    return per_sample_outputs(model, dataset, config, dist, generator)


def score_predictions(scores: np.ndarray, labelled: LabelledImages) -> dict[str, Any]:
    """VOC mAP + per-class AP (difficult excluded) for multi-label data, top-1 accuracy otherwise."""
    if labelled.multilabel:
        value, per_class = mean_average_precision(scores, labelled.targets, labelled.ignore)
        return {"metric": "mAP", "value": value, "per_class": dict(zip(labelled.classes, per_class))}
    return {"metric": "top1", "value": top1_accuracy(scores, labelled.targets)}


@dataclass
class Scoring:
    """What a transfer run is scored on: the test split and, with --val-per-class, held-out images of
    the training split. Each validation pass draws from its own generator, so asking for a validation
    score leaves the training's random stream, and so every test figure, exactly as without it."""

    test: LabelledImages
    test_set: ClassificationDataset
    val: Optional[LabelledImages] = None
    val_set: Optional[ClassificationDataset] = None

    def val_outputs(self, outputs: Callable[[ClassificationDataset, torch.Generator], np.ndarray]) -> Optional[np.ndarray]:
        """``outputs(val_set, generator)``, or None without a validation set."""
        return None if self.val_set is None else outputs(self.val_set, torch.Generator())

    def score(self, test_scores: np.ndarray, val_scores: Optional[np.ndarray] = None) -> dict[str, Any]:
        """The test result; with validation scores, the same metric on them as ``val_value``."""
        result = score_predictions(test_scores, self.test)
        if val_scores is not None and self.val is not None:
            result["val_value"] = score_predictions(val_scores, self.val)["value"]
        return result
