"""Online representation probe: how good the encoder's frozen features are for classification, measured
while the pretext trains (the instrument solo-learn and lightly users look at first).

A fixed small labelled train/test split is decoded once. At each probe the encoder, in eval mode and
without gradients, maps both to features (``encoder_features``), and two classifiers that need no
tuning score them: a cosine k-nearest-neighbour vote (k = 20) and a logistic-regression linear
probe on standardised features. Multi-class data gives top-1 accuracy, multi-label data (VOC) mAP.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ssl_inpaint.config import at_least, check_choices, option
from ssl_inpaint.data.classification import ClassificationDataset, LabelledImages, label_budget
from ssl_inpaint.data.datasets import DATASETS, SourceOptions, create_classification_dataset
from ssl_inpaint.errors import UserError
from ssl_inpaint.metrics import mean_average_precision, top1_accuracy
from ssl_inpaint.models.classifier import BN_STATS, FEATURES, encoder_features, reestimate_batchnorm

KNN_K = 20


def stack_images(labelled: LabelledImages, image_size: int) -> torch.Tensor:
    """(N, C, S, S) images in [-1, 1], the evaluation view (resize, centre crop), of every labelled image."""
    loader = DataLoader(ClassificationDataset(labelled, image_size), batch_size=256, num_workers=0)
    return torch.cat([images for images, _, _ in loader])


def probe_training_indices(train: LabelledImages, images: int, seed: int) -> np.ndarray:
    """About ``images`` training images, stratified (the same number per class), fixed by ``seed``."""
    if images < len(train.classes):
        raise UserError(f"--probe-images must be at least the number of classes ({len(train.classes)}), got {images}")
    return label_budget(train, seed, per_class=max(1, images // len(train.classes)), at_most=True)  # a probe takes what a small set has


def probe_subsets(train: LabelledImages, test: LabelledImages, images: int, seed: int = 0) -> tuple[LabelledImages, LabelledImages]:
    """About ``images`` training images, stratified (the same number per class), and ``images`` test
    images drawn at random, both fixed by ``seed``."""
    train_indices = probe_training_indices(train, images, seed)
    test_indices = np.sort(np.random.default_rng(seed).permutation(len(test))[: min(images, len(test))])
    return train.subset(train_indices), test.subset(test_indices)


def heldout_probe_subsets(train: LabelledImages, images: int, seed: int = 0) -> tuple[LabelledImages, LabelledImages]:
    """The probe's training images as ``probe_subsets`` draws them, and up to ``images`` other images of
    the same training split, drawn at random, to score on (``--probe-heldout``): no test image is read."""
    train_indices = probe_training_indices(train, images, seed)
    rest = np.setdiff1d(np.arange(len(train)), train_indices)
    if not len(rest):
        raise UserError(
            f"--probe-heldout: all {len(train)} images of {train.source.name} are among the probe's {len(train_indices)} "
            f"training images, none is left to score on; lower --probe-images"
        )
    heldout = np.sort(np.random.default_rng(seed).permutation(rest)[:images])
    return train.subset(train_indices), train.subset(heldout)


def knn_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int, multilabel: bool, classes: int) -> np.ndarray:
    """Cosine k-nearest-neighbour scores: per class, the share of the k nearest training features
    that belong to it (multi-label: the share that contain it), ties broken by similarity."""
    a = train_x / np.linalg.norm(train_x, axis=1, keepdims=True).clip(1e-12)
    b = test_x / np.linalg.norm(test_x, axis=1, keepdims=True).clip(1e-12)
    similarity = b @ a.T
    k = min(k, len(a))
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    sims = np.take_along_axis(similarity, nearest, axis=1)
    if multilabel:
        return train_y[nearest].mean(axis=1)
    votes = np.zeros((len(b), classes))
    np.add.at(votes, (np.arange(len(b))[:, None], train_y[nearest]), 1.0 + 1e-6 * sims)
    return votes


def linear_scores(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, multilabel: bool) -> np.ndarray:
    """Logistic regression (L2, C = 1) on features standardised with the training statistics."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(max_iter=500)
    if multilabel:
        keep = (train_y.min(axis=0) == 0) & (train_y.max(axis=0) == 1)  # a class needs both outcomes
        scores = np.zeros((len(test_x), train_y.shape[1]))
        if keep.any():
            fitted = OneVsRestClassifier(model).fit(scaler.transform(train_x), train_y[:, keep])
            scores[:, keep] = fitted.decision_function(scaler.transform(test_x))
        return scores
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(scaler.transform(train_x), train_y)
    decision = model.decision_function(scaler.transform(test_x))
    if decision.ndim == 1:  # two classes: sklearn returns the positive class's margin only
        decision = np.stack([-decision, decision], axis=1)
    scores = np.full((len(test_x), int(train_y.max()) + 1), -np.inf)
    scores[:, model.classes_] = decision
    return scores


def plain_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every SyncBatchNorm replaced by a BatchNorm2d holding the same tensors, so a
    copy can run in train mode on one process without waiting for the others."""
    if isinstance(module, nn.SyncBatchNorm):
        plain = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        plain.load_state_dict(module.state_dict())
        return plain.to(next(iter(module.state_dict().values())).device)
    for name, child in module.named_children():
        setattr(module, name, plain_batchnorm(child))
    return module


@dataclass
class RepresentationProbe:
    """The fixed labelled split and the probe protocol; call it with an encoder."""

    train_images: torch.Tensor
    train_labels: np.ndarray
    test_images: torch.Tensor
    test_labels: np.ndarray
    multilabel: bool
    classes: int
    features: str = "pooled"
    bn_stats: str = "running"
    batch_size: int = 256

    @classmethod
    def from_datasets(
        cls, train: LabelledImages, test: Optional[LabelledImages], image_size: int, images: int, features: str, bn_stats: str
    ) -> "RepresentationProbe":
        """The probe on ``images`` of ``train`` and of ``test``; with no ``test``, on held-out ``train`` images."""
        if bn_stats not in BN_STATS:
            raise UserError(f"--probe-bn-stats must be one of {', '.join(BN_STATS)}, got {bn_stats!r}")
        train, test = probe_subsets(train, test, images) if test is not None else heldout_probe_subsets(train, images)
        return cls(
            stack_images(train, image_size), train.targets, stack_images(test, image_size), test.targets,
            train.multilabel, len(train.classes), features, bn_stats,
        )

    @property
    def metric(self) -> str:
        return "mAP" if self.multilabel else "top1"

    @torch.inference_mode()
    def _features(self, encoder: nn.Module, images: torch.Tensor, device: torch.device) -> np.ndarray:
        rows = [
            encoder_features(encoder, images[i : i + self.batch_size].to(device), self.features).float().cpu()
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(rows).numpy().astype(np.float64)

    def _score(self, scores: np.ndarray, targets: np.ndarray) -> float:
        if self.multilabel:
            return mean_average_precision(scores, targets)[0]
        return top1_accuracy(scores, targets)

    def __call__(self, encoder: nn.Module) -> dict[str, float]:
        """``probe/knn_<metric>`` and ``probe/linear_<metric>`` of the encoder's frozen features
        (the encoder itself is left as it was: a copy is used when its BatchNorm statistics are
        re-estimated), plus ``probe/seconds``."""
        start = time.perf_counter()
        device = next(encoder.parameters()).device
        was_training = encoder.training
        if self.bn_stats == "clean":
            encoder = plain_batchnorm(copy.deepcopy(encoder))
            batches = (self.train_images[i : i + self.batch_size].to(device) for i in range(0, len(self.train_images), self.batch_size))
            reestimate_batchnorm(encoder, batches, self.features)
        encoder.eval()
        try:
            train_x = self._features(encoder, self.train_images, device)
            test_x = self._features(encoder, self.test_images, device)
        finally:
            encoder.train(was_training)
        if not (np.isfinite(train_x).all() and np.isfinite(test_x).all()):
            raise UserError("the encoder's features are not finite; the pretext has diverged (lower the learning rates)")
        knn = knn_scores(train_x, self.train_labels, test_x, KNN_K, self.multilabel, self.classes)
        linear = linear_scores(train_x, self.train_labels, test_x, self.multilabel)
        return {
            f"probe/knn_{self.metric}": self._score(knn, self.test_labels),
            f"probe/linear_{self.metric}": self._score(linear, self.test_labels),
            "probe/seconds": time.perf_counter() - start,
        }


def probe_kinds() -> tuple[str, ...]:
    """The dataset kinds the probe can read: labelled ones with default probe splits."""
    return tuple(name for name in DATASETS if DATASETS.get(name).labelled and DATASETS.get(name).probe_splits)


@dataclass
class ProbeOptions:
    """The online representation probe of ``ssl pretrain`` as config fields."""

    probe_every: int = option(500, "Probe the frozen encoder (kNN and linear top-1, or mAP) every N steps and at step 0; 0: off. Off when no labels are found (see --probe-data).", at_least(0), resume=True)
    probe_data: str = option("", "Labelled dataset for the probe (default: --data when --dataset is fashion_mnist, cifar10 or voc).", resume=True)
    probe_dataset: str = option("", f"Kind of --probe-data: {', '.join(probe_kinds())} (default: --dataset).", resume=True)
    probe_train_split: str = option("", "Probe training split (default: train).", resume=True)
    probe_test_split: str = option("", "Probe test split (default: test for fashion_mnist and cifar10, val otherwise).", resume=True)
    probe_images: int = option(1000, "Images in each probe split (the training ones stratified by class).", at_least(1, 100000), resume=True)
    probe_features: str = option("pooled", f"Features probed: {', '.join(FEATURES)} (as ssl finetune --features).", resume=True)
    probe_heldout: bool = option(False, "Score the probe on training images held out from the ones it fits instead of --probe-test-split (not read), so that choosing a pretext by its probe reads no test image.", resume=True)
    probe_bn_stats: str = option("running", f"BatchNorm statistics for the probe: {', '.join(BN_STATS)} (re-estimated on the clean probe images).", resume=True)

    def check_probe(self) -> None:
        check_choices(self, {"probe_features": FEATURES, "probe_bn_stats": BN_STATS})
        if self.probe_dataset and self.probe_dataset not in probe_kinds():
            raise UserError(f"--probe-dataset must be one of {', '.join(probe_kinds())}, got {self.probe_dataset!r}")


def make_probe(options: ProbeOptions, source: SourceOptions, image_size: int, image_channels: int) -> tuple[Optional[RepresentationProbe], str]:
    """The probe that ``options`` ask for beside the pretext's ``source`` (its labels by default),
    and a line saying what it measures; or None and why it is off."""
    if not options.probe_every:
        return None, "representation probe off (--probe-every 0)"
    kind = options.probe_dataset or source.dataset
    data = options.probe_data or (source.data if kind == source.dataset else "")
    if kind not in probe_kinds() or not data or (kind == "folder" and not options.probe_data):
        return None, f"representation probe off: --dataset {source.dataset} has no class labels; pass --probe-data (and --probe-dataset)"
    train_split, test_split = DATASETS.get(kind).probe_splits
    train_split, test_split = options.probe_train_split or train_split, options.probe_test_split or test_split
    if options.probe_heldout:
        test_split = f"held-out {train_split}"
    train = create_classification_dataset(kind, data, train_split, source.year)
    test = None if options.probe_heldout else create_classification_dataset(kind, data, test_split, source.year)
    if train.source.channels != image_channels:
        raise UserError(
            f"--probe-data has {train.source.channels}-channel images but the pretext sees {image_channels}; "
            f"probe with a dataset of the same colour mode"
        )
    probe = RepresentationProbe.from_datasets(
        train, test, image_size, options.probe_images, options.probe_features, options.probe_bn_stats
    )
    return probe, (
        f"representation probe: {kind} {train_split} ({len(probe.train_labels)} images) -> {test_split} "
        f"({len(probe.test_labels)}), {options.probe_features} features, every {options.probe_every} steps"
    )
