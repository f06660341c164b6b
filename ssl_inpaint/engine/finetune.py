"""Transfer: train and evaluate a classifier on top of the pretext encoder, or of the same encoder
from random initialisation, under identical data, labels, schedule and seeds.

Modes:
  finetune  every layer trained (seed 003 section 6.2: SGD momentum 0.9, lr 0.005, batch 64, 14 epochs)
  linear    frozen encoder; a linear layer on features computed once (centre crops)
  svm       frozen encoder; L2-normalised features, one LinearSVC per class with the cost chosen by
            3-fold cross-validated AP, then refit on all training images (the VOC07 SVM protocol of
            self-supervised benchmark suites); one-vs-rest for multi-class data
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ssl_inpaint.checkpoint import ENCODER_FORMAT, load_checkpoint
from ssl_inpaint.config import check_choices, option, save_config
from ssl_inpaint.data.classification import (
    CLASSIFICATION_DATASETS,
    ClassificationDataset,
    LabelledImages,
    create_classification_dataset,
    label_budget,
)
from ssl_inpaint.engine.common import RunLogger, console, seed_everything, select_device
from ssl_inpaint.errors import UserError
from ssl_inpaint.metrics import mean_average_precision, top1_accuracy
from ssl_inpaint.models import EncoderClassifier, UNetEncoder, encoder_from_arch, load_pretrained_encoder
from ssl_inpaint.models.classifier import FEATURES

MODES = ("finetune", "linear", "svm")


@dataclass
class FinetuneConfig:
    # run
    name: str = option("", "Run name prefix: runs are NAME_<init>_s<seed> (default NAME: the recipe's file name, else <dataset>_<mode>_<budget>).")
    output_dir: str = option("runs", "Folder holding all runs.")
    seed: int = option(0, "Seed for the head's initialisation, shuffling and augmentation.")
    seeds: str = option("", "Comma-separated seeds: one run per seed (overrides --seed).")
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    # data
    dataset: str = option("voc", f"Dataset: {', '.join(CLASSIFICATION_DATASETS)}.")
    data: str = option("", "Dataset root (VOCdevkit, Fashion-MNIST files, or an ImageFolder root).")
    year: str = option("2007", "VOC year.")
    train_split: str = option("trainval", "Training split (VOC trainval, Fashion-MNIST train, folder sub-folder).")
    test_split: str = option("test", "Evaluation split.")
    voc_labels: str = option("xml", "VOC targets from the xml annotations or ImageSets/Main/<class>_<split>.txt (imagesets).")
    image_size: int = option(128, "Crop side in pixels; must equal the pretraining image size.")
    num_workers: int = option(2, "DataLoader worker processes.")
    # model
    init: str = option("pretrained", "pretrained (the encoder of --checkpoint) or random (same architecture, default init).")
    checkpoint: str = option("", "A pretrain run folder or its encoder.pt (for random init: only its architecture is used).")
    bottleneck_channels: int = option(4000, "Latent channels of a random encoder built without --checkpoint.")
    features: str = option("latent", f"Features for the head: {', '.join(FEATURES)}.")
    hidden: int = option(512, "Hidden units of the finetune head.")
    dropout: float = option(0.5, "Dropout of the finetune head.")
    # protocol
    mode: str = option("finetune", f"{', '.join(MODES)}.")
    labels_per_class: int = option(0, "Label budget: training images per class (0: all).")
    label_fraction: float = option(0.0, "Label budget: fraction of each class's training images (0: all).")
    data_seed: int = option(0, "Seed of the label-budget subset (kept fixed across inits and seeds).")
    epochs: int = option(14, "Training epochs (finetune and linear).")
    batch_size: int = option(64, "Images per step.")
    optimizer: str = option("sgd", "sgd (momentum) or adam.")
    lr: float = option(0.005, "Learning rate.")
    momentum: float = option(0.9, "SGD momentum.")
    weight_decay: float = option(5e-4, "Weight decay.")
    lr_schedule: str = option("constant", "constant or cosine.")
    svm_costs: str = option("0.01,0.1,1,10,100", "svm: cost grid searched per class by 3-fold cross-validated AP.")
    eval_every: int = option(1, "Evaluate on the test split every N epochs (and at the end).")

    def validate(self) -> None:
        choices = {
            "dataset": CLASSIFICATION_DATASETS, "init": ("pretrained", "random"), "mode": MODES,
            "features": FEATURES, "optimizer": ("sgd", "adam"), "lr_schedule": ("constant", "cosine"),
            "voc_labels": ("xml", "imagesets"),
        }
        check_choices(self, choices)
        if self.init == "pretrained" and not self.checkpoint:
            raise UserError("--init pretrained needs --checkpoint runs/<pretrain run> (or its encoder.pt)")
        if self.labels_per_class and self.label_fraction:
            raise UserError("give either --labels-per-class or --label-fraction, not both")
        if self.batch_size < 2:
            raise UserError("--batch-size must be at least 2")
        self.seed_list  # parses --seeds
        self.cost_grid  # parses --svm-costs

    @property
    def seed_list(self) -> list[int]:
        if not self.seeds:
            return [self.seed]
        try:
            return [int(s) for s in self.seeds.split(",") if s.strip()]
        except ValueError:
            raise UserError(f"--seeds must be comma-separated integers, got {self.seeds!r}") from None

    @property
    def cost_grid(self) -> list[float]:
        try:
            costs = [float(c) for c in self.svm_costs.split(",")]
        except ValueError:
            costs = []
        if not costs or min(costs) <= 0:
            raise UserError(f"--svm-costs must be positive numbers, got {self.svm_costs!r}")
        return costs

    @property
    def budget(self) -> str:
        if self.labels_per_class:
            return f"{self.labels_per_class}-per-class"
        if self.label_fraction:
            return f"{self.label_fraction:g}-fraction"
        return "all"


def resolve_encoder_file(checkpoint: str) -> Path:
    path = Path(checkpoint)
    if path.is_dir():
        path = path / "encoder.pt"
    if not path.is_file():
        raise UserError(f"no encoder at {path}: pass a pretrain run folder (with encoder.pt) or the file itself")
    return path


def build_classifier(config: FinetuneConfig, num_classes: int, image_channels: int) -> EncoderClassifier:
    """The same architecture for both inits; only the pretrained one loads the encoder weights."""
    payload: Optional[dict[str, Any]] = None
    if config.checkpoint:
        encoder_file = resolve_encoder_file(config.checkpoint)
        payload = load_checkpoint(encoder_file, ENCODER_FORMAT)
        encoder = encoder_from_arch(payload["arch"], config.image_size, image_channels)
    else:
        encoder = UNetEncoder(image_channels + 1, config.image_size, bottleneck_channels=config.bottleneck_channels)
    model = EncoderClassifier(
        encoder, num_classes, config.features, config.hidden, config.dropout, linear=config.mode == "linear"
    )
    if config.init == "pretrained":
        assert payload is not None
        load_pretrained_encoder(model, payload, str(encoder_file))
    return model


@torch.no_grad()
def extract_features(model: EncoderClassifier, dataset: ClassificationDataset, config: FinetuneConfig, device) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    feats, targets = [], []
    loader = DataLoader(dataset, batch_size=config.batch_size, num_workers=config.num_workers)
    for images, target, _ in loader:
        feats.append(model.extract(images.to(device)).float().cpu())
        targets.append(target)
    return torch.cat(feats), torch.cat(targets)


@torch.no_grad()
def predict(model: nn.Module, dataset: ClassificationDataset, config: FinetuneConfig, device) -> np.ndarray:
    model.eval()
    loader = DataLoader(dataset, batch_size=config.batch_size, num_workers=config.num_workers)
    return torch.cat([model(images.to(device)).float().cpu() for images, _, _ in loader]).numpy()


def evaluate(scores: np.ndarray, labelled: LabelledImages) -> dict[str, Any]:
    """VOC mAP + per-class AP (difficult excluded) for multi-label data, top-1 accuracy otherwise."""
    if labelled.multilabel:
        value, per_class = mean_average_precision(scores, labelled.targets, labelled.ignore)
        return {"metric": "mAP", "value": value, "per_class": dict(zip(labelled.classes, per_class))}
    return {"metric": "top1", "value": top1_accuracy(scores, labelled.targets)}


def classification_loss(logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor, multilabel: bool) -> torch.Tensor:
    if not multilabel:
        return F.cross_entropy(logits, target)
    weight = (~ignore).float()  # difficult-only classes of an image teach nothing either way
    loss = F.binary_cross_entropy_with_logits(logits, target.float(), weight=weight, reduction="sum")
    return loss / weight.sum().clamp_min(1)


def make_optimizer(params, config: FinetuneConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def train_svm(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, labelled: LabelledImages, train_ignore: Optional[np.ndarray], costs: list[float], seed: int) -> tuple[np.ndarray, list[float]]:
    """One LinearSVC per class on L2-normalised features; each class's cost is the grid value with
    the best mean average precision over 3 stratified folds, then the SVM is refit on all data."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.preprocessing import normalize
    from sklearn.svm import LinearSVC

    train_x, test_x = normalize(train_x), normalize(test_x)
    num_classes = len(labelled.classes)
    scores = np.zeros((len(test_x), num_classes))
    chosen = []
    for k in range(num_classes):
        keep = np.ones(len(train_x), bool) if train_ignore is None else ~train_ignore[:, k]
        x = train_x[keep]
        y = (train_y[keep, k] > 0) if labelled.multilabel else (train_y[keep] == k)
        y = y.astype(int)
        positives = int(y.sum())
        best_cost = 1.0
        if positives == 0 or positives == len(y):
            chosen.append(float("nan"))
            scores[:, k] = -1.0 if positives == 0 else 1.0
            continue
        folds = min(3, positives, len(y) - positives)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if folds >= 2:
                cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
                results = [
                    cross_val_score(LinearSVC(C=c, class_weight={0: 1.0, 1: 2.0}, dual="auto", max_iter=5000), x, y, cv=cv, scoring="average_precision").mean()
                    for c in costs
                ]
                best_cost = costs[int(np.argmax(results))]
            svm = LinearSVC(C=best_cost, class_weight={0: 1.0, 1: 2.0}, dual="auto", max_iter=5000).fit(x, y)
        chosen.append(best_cost)
        scores[:, k] = svm.decision_function(test_x)
    return scores, chosen


def run_finetune(config: FinetuneConfig) -> list[Path]:
    """Run the configured transfer experiment once per seed; returns the run folders."""
    runs = []
    for seed in config.seed_list:
        base = config.name or f"{config.dataset}_{config.mode}_{config.budget}"
        single = dataclasses.replace(config, seed=seed, seeds="", name=f"{base}_{config.init}_s{seed}")
        runs.append(finetune_once(single))
    return runs


def finetune_once(config: FinetuneConfig) -> Path:
    run_dir = Path(config.output_dir) / config.name
    if (run_dir / "metrics.json").exists():
        raise UserError(f"{run_dir} already holds a finished run; pick another --name or delete that folder")
    seed_everything(config.seed)
    device = select_device(config.device)

    train_all = create_classification_dataset(config.dataset, config.data, config.train_split, config.year, config.voc_labels)
    test = create_classification_dataset(config.dataset, config.data, config.test_split, config.year, config.voc_labels)
    chosen = label_budget(train_all, config.data_seed, config.labels_per_class, config.label_fraction)
    train = train_all.subset(chosen)
    if len(train) < 2:
        raise UserError(f"the label budget leaves {len(train)} training image(s); raise --labels-per-class")
    model = build_classifier(config, len(train.classes), train.source.channels).to(device)
    save_config(config, run_dir / "config.yaml")
    console.print(
        f"finetune {config.name}: {config.mode}, init={config.init}, {len(train)} of {len(train_all)} labelled "
        f"{config.dataset} {config.train_split} images ({config.budget}), test on {len(test)} {config.test_split} images"
    )
    train_set = ClassificationDataset(train, config.image_size, train=config.mode == "finetune")
    test_set = ClassificationDataset(test, config.image_size, train=False)
    history: list[dict[str, Any]] = []

    if config.mode == "svm":
        with RunLogger(run_dir, 2, f"svm {config.name}") as logger:
            logger.config(dataclasses.asdict(config))
            train_x, train_y = extract_features(model, train_set, config, device)
            logger.advance(1, "features")
            test_x, _ = extract_features(model, test_set, config, device)
            scores, costs = train_svm(train_x.numpy(), train_y.numpy(), test_x.numpy(), train, train.ignore, config.cost_grid, config.seed)
            result = evaluate(scores, test)
            result["svm_costs"] = dict(zip(train.classes, costs))
            logger.advance(2, f"{result['metric']} {result['value']:.4f}")
            _log_final(logger, config, result)
    else:
        result = _train_head_or_network(config, model, train, train_set, test, test_set, run_dir, device, history)

    metrics = {
        "dataset": config.dataset,
        "mode": config.mode,
        "init": config.init,
        "budget": config.budget,
        "labels_per_class": config.labels_per_class,
        "label_fraction": config.label_fraction,
        "data_seed": config.data_seed,
        "seed": config.seed,
        "checkpoint": config.checkpoint,
        "n_train": len(train),
        "n_test": len(test),
        **result,
        "history": history,
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    console.print(f"{config.name}: {result['metric']} = {result['value']:.4f}")
    if "per_class" in result:
        console.print("  " + "  ".join(f"{k} {v:.3f}" for k, v in result["per_class"].items() if not math.isnan(v)))
    return run_dir


def _train_head_or_network(config, model, train, train_set, test, test_set, run_dir, device, history) -> dict[str, Any]:
    """Finetune (all layers, augmented images) or linear probe (frozen encoder, cached features)."""
    multilabel = train.multilabel
    if config.mode == "linear":
        train_x, train_y = extract_features(model, train_set, config, device)
        test_x, _ = extract_features(model, test_set, config, device)
        train_ignore = torch.as_tensor(train.ignore) if train.ignore is not None else torch.zeros(len(train), 0, dtype=torch.bool)
        feature_data = torch.utils.data.TensorDataset(train_x, train_y, train_ignore)
        params = list(model.head.parameters())
        forward = model.head
        evaluate_inputs = lambda: forward(test_x.to(device)).float().cpu().numpy()  # noqa: E731
        loader_source = feature_data
    else:
        params = list(model.parameters())
        forward = model
        evaluate_inputs = lambda: predict(model, test_set, config, device)  # noqa: E731
        loader_source = train_set
    batch_size = min(config.batch_size, len(loader_source))
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = len(loader_source) // batch_size
    total_steps = steps_per_epoch * config.epochs
    optimizer = make_optimizer(params, config)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
        if config.lr_schedule == "cosine"
        else None
    )
    result: dict[str, Any] = {}
    step = 0
    with RunLogger(run_dir, total_steps, f"{config.mode} {config.name}") as logger:
        logger.config(dataclasses.asdict(config))
        for epoch in range(config.epochs):
            loader = DataLoader(
                loader_source, batch_size=batch_size, shuffle=True, drop_last=True, generator=generator,
                num_workers=config.num_workers if config.mode == "finetune" else 0,
            )
            if config.mode == "finetune":
                model.train()
            else:
                model.head.train()
            losses = []
            for inputs, target, ignore in loader:
                logits = forward(inputs.to(device))
                loss = classification_loss(logits, target.to(device), ignore.to(device), multilabel)
                if not torch.isfinite(loss):
                    raise UserError(f"non-finite training loss at step {step}; lower --lr")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                step += 1
                losses.append(loss.item())
                logger.advance(step, f"loss {loss.item():.4f}")
            logger.scalars({"train/loss": float(np.mean(losses)), "lr": optimizer.param_groups[0]["lr"]}, epoch + 1)
            if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
                with torch.no_grad():
                    model.eval()
                    result = evaluate(evaluate_inputs(), test)
                logger.scalars({f"val/{result['metric']}": result["value"]}, epoch + 1)
                history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), result["metric"]: result["value"]})
                logger.print(f"epoch {epoch + 1}: loss {np.mean(losses):.4f}, {result['metric']} {result['value']:.4f}")
        _log_final(logger, config, result)
    return result


def _log_final(logger: RunLogger, config: FinetuneConfig, result: dict[str, Any]) -> None:
    hparams = {k: v for k, v in dataclasses.asdict(config).items() if isinstance(v, (int, float, str, bool))}
    logger.writer.add_hparams(hparams, {f"hparam/{result['metric']}": result["value"]}, run_name=".")
    if "per_class" in result:
        table = "| class | AP |\n|---|---|\n" + "".join(f"| {k} | {v:.4f} |\n" for k, v in result["per_class"].items())
        logger.text("per_class_AP", table)
