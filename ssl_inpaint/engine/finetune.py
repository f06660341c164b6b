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
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from timm.data import Mixup
from torch.utils.data import DataLoader

from ssl_inpaint.checkpoint import FINETUNE_FORMAT, last_checkpoint, load_checkpoint
from ssl_inpaint.config import save_config
from ssl_inpaint.data.classification import ClassificationDataset, LabelledImages, label_budget, validation_subset
from ssl_inpaint.data.datasets import create_classification_dataset
from ssl_inpaint.distributed import Distributed, any_flag, average_gradients, broadcast_module, setup, teardown
from ssl_inpaint.runs import RunLogger, changed_settings, refuse_changes, refuse_without_resume, run_folder_lock, stop_if_not_finite
from ssl_inpaint.runtime import autocast, check_precision, configure_threads, console, grad_scaler, resolve_workers, seed_everything
from ssl_inpaint.runtime import prepare_module, ResumableSampler, rng_state, set_rng_state, StopSignal, unwrap
from ssl_inpaint.errors import UserError
from ssl_inpaint.losses import StartingPointPenalty
from ssl_inpaint.storage import save_atomic, write_json_atomic
from ssl_inpaint.transfer_result import TransferResult
from ssl_inpaint.models.transfer import make_classifier
from ssl_inpaint.models import EncoderClassifier
from ssl_inpaint.models.classifier import encoder_maps, reestimate_batchnorm, rescale_convs_to_init_norm
from ssl_inpaint.models.datadep import data_dependent_init
from ssl_inpaint.models.svm import train_svm
from ssl_inpaint.transfer_scoring import extract_features, predict, Scoring
from ssl_inpaint.options.finetune import DATADEP_IMAGES, FinetuneConfig, protocol_settings, run_prefix


def build_classifier(config: FinetuneConfig, num_classes: int, image_channels: int) -> nn.Module:
    """The same architecture for every init (``models.make_classifier``); only the pretrained one loads
    the encoder weights."""
    return make_classifier(config.classifier_spec(), num_classes, image_channels)


def classification_loss(logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor, multilabel: bool) -> torch.Tensor:
    if not multilabel:
        return F.cross_entropy(logits, target)
    weight = (~ignore).float()  # difficult-only classes of an image teach nothing either way
    loss = F.binary_cross_entropy_with_logits(logits, target.float(), weight=weight, reduction="sum")
    return loss / weight.sum().clamp_min(1)


def make_optimizer(params, config: FinetuneConfig) -> torch.optim.Optimizer:
    """SGD or Adam at --lr; parameter groups given as dicts with an ``lr_scale`` get lr x lr_scale."""
    params = list(params)
    if params and isinstance(params[0], dict):
        params = [{"params": g["params"], "lr": config.lr * g["lr_scale"]} for g in params]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def run_finetune(config: FinetuneConfig) -> list[Path]:
    """Run the configured transfer experiment once per seed; returns the run folders."""
    dist = setup(config.device)
    config = dataclasses.replace(config, num_workers=resolve_workers(config.num_workers, dist.device))
    configure_threads(config.num_workers, dist.device)
    try:
        runs = []
        for seed in config.seed_list:
            base = config.name or f"{config.dataset}_{config.mode}_{config.budget}"
            single = dataclasses.replace(config, seed=seed, seeds="", name=f"{base}_{config.init_label}_s{seed}")
            runs.append(finetune_once(single, dist))
        return runs
    finally:
        teardown()


def reestimate_encoder_batchnorm(model: nn.Module, train_all: LabelledImages, config: FinetuneConfig, dist: Distributed) -> int:
    """``--bn-stats clean``: the encoder's BatchNorm running statistics averaged over the first
    ``--bn-images`` images of the training split in a fixed order (labels unused), identically for
    both inits. Every process computes them on the same images, so they agree without communication."""
    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise UserError("--bn-stats clean needs --encoder unet (timm classifiers keep their statistics)")
    order = np.sort(np.random.default_rng(config.data_seed).permutation(len(train_all))[: config.bn_images])
    images = ClassificationDataset(train_all.subset(order), config.image_size)
    loader = DataLoader(images, batch_size=max(config.batch_size, 64), num_workers=config.num_workers)
    return reestimate_batchnorm(encoder, (batch.to(dist.device) for batch, _, _ in loader), config.features)


def initialise_from_data(model: EncoderClassifier, train_all: LabelledImages, config: FinetuneConfig) -> None:
    """``--init datadep``: the encoder initialised from DATADEP_IMAGES unlabelled training images (the
    first of --bn-stats clean's fixed order), then its BatchNorm statistics estimated on them."""
    order = np.sort(np.random.default_rng(config.data_seed).permutation(len(train_all))[: min(config.bn_images, DATADEP_IMAGES)])
    loader = DataLoader(ClassificationDataset(train_all.subset(order), config.image_size), batch_size=len(order), num_workers=0)
    images = next(iter(loader))[0]
    encoder = model.encoder
    data_dependent_init(encoder, images, lambda inputs: encoder_maps(encoder, inputs, config.features), config.data_seed)
    reestimate_batchnorm(encoder, [images], config.features)


def layerwise_param_groups(model: nn.Module, config: FinetuneConfig) -> list[dict[str, Any]]:
    """Parameter groups for layer-wise learning-rate decay: the head at --lr, the deepest encoder
    stage (and anything after the stages, e.g. the latent conv) at lr x decay, each shallower stage
    one more factor of decay. Without decay, one group."""
    if config.layer_decay == 1 or not hasattr(getattr(model, "encoder", None), "stages"):
        return [{"params": list(model.parameters()), "lr_scale": 1.0}]
    stages = list(model.encoder.stages)
    depth = len(stages)
    groups = [
        {"params": list(stage.parameters()), "lr_scale": config.layer_decay ** (depth - i + 1)}  # i = 0: shallowest
        for i, stage in enumerate(stages)
    ]
    in_stages = {id(p) for g in groups for p in g["params"]}
    rest = [p for p in model.encoder.parameters() if id(p) not in in_stages]
    head = [p for name, p in model.named_parameters() if not name.startswith("encoder.")]
    groups += [{"params": rest, "lr_scale": config.layer_decay}, {"params": head, "lr_scale": 1.0}]
    return [g for g in groups if g["params"]]


def finetune_once(config: FinetuneConfig, dist: Distributed) -> Path:
    """One seed's transfer run, holding its run folder's lock."""
    with run_folder_lock(Path(config.output_dir) / config.name, "finetune", enabled=dist.is_main):
        return _finetune_once(config, dist)


def _finetune_once(config: FinetuneConfig, dist: Distributed) -> Path:
    run_dir = Path(config.output_dir) / config.name
    if (run_dir / "metrics.json").exists():
        if not config.resume:
            raise UserError(f"{run_dir} already holds a finished run and --no-resume was given; pick another --name")
        if dist.is_main:
            console.print(f"{run_dir} is finished already: kept as it is")
        return run_dir
    refuse_without_resume(run_dir, config.resume, "an interrupted run")
    last = last_checkpoint(run_dir)
    if last.exists():  # refused before anything is written: the folder keeps the config it was trained with
        refuse_changes(last, changed_settings(load_checkpoint(last, FINETUNE_FORMAT)["config"], config))
    check_precision(config.precision, dist.device)
    seed_everything(config.seed)

    train_all = create_classification_dataset(config.dataset, config.data, config.train_split, config.year, config.voc_labels)
    test = create_classification_dataset(config.dataset, config.data, config.test_split, config.year, config.voc_labels)
    chosen = label_budget(train_all, config.data_seed, config.labels_per_class, config.label_fraction)
    train = train_all.subset(chosen)
    val = train_all.subset(validation_subset(train_all, chosen, config.data_seed, config.val_per_class)) if config.val_per_class else None
    if len(train) < 2 * dist.world_size:
        raise UserError(f"the label budget leaves {len(train)} training image(s); raise --labels-per-class")
    model = build_classifier(config, len(train.classes), train.source.channels)
    if config.init == "datadep":  # every process computes the same init from the same images
        initialise_from_data(model, train_all, config)
    if config.weight_scale == "init" and config.mode == "finetune":
        rescale_convs_to_init_norm(model.encoder if hasattr(model, "encoder") else model)
    model = prepare_module(model, dist, config.sync_bn and config.mode == "finetune", channels_last=False)
    broadcast_module(model, dist.world_size)
    if dist.is_main:
        save_config(config, run_dir / "config.yaml")
        console.print(
            f"finetune {config.name}: {config.mode}, encoder={config.encoder}, init={config.init_label}, {len(train)} of {len(train_all)} labelled "
            f"{config.dataset} {config.train_split} images ({config.budget}), test on {len(test)} {config.test_split} "
            f"images{f', validation on {len(val)} other {config.train_split} images' if val is not None else ''}, {dist.world_size} process(es)"
        )
    train_set = ClassificationDataset(train, config.image_size, config.augmentations if config.mode == "finetune" else ())
    scoring = Scoring(test, ClassificationDataset(test, config.image_size), val,
                      ClassificationDataset(val, config.image_size) if val is not None else None)
    if config.bn_stats == "clean":  # deterministic, so a resumed linear probe gets the same features
        seen = reestimate_encoder_batchnorm(model, train_all, config, dist)
        if dist.is_main:
            console.print(
                f"BatchNorm statistics of the encoder re-estimated on {seen} clean {config.train_split} images" if seen
                else "the encoder has no BatchNorm layers: --bn-stats clean changes nothing"
            )
    history: list[dict[str, Any]] = []

    if config.mode == "svm":
        with RunLogger(run_dir, 2, f"svm {config.name}", enabled=dist.is_main) as logger:
            logger.config(dataclasses.asdict(config))
            train_x = extract_features(model, train_set, config, dist)
            logger.advance(1, "features")
            test_x = extract_features(model, scoring.test_set, config, dist)
            val_x = scoring.val_outputs(lambda data, generator: extract_features(model, data, config, dist, generator))
            held_out = test_x if val_x is None else np.concatenate([test_x, val_x])
            scores, costs = train_svm(train_x, train.targets, held_out, train, train.ignore, config.cost_grid, config.seed)
            result = scoring.score(scores[: len(test_x)], None if val_x is None else scores[len(test_x):])
            result["svm_costs"] = dict(zip(train.classes, costs))
            logger.advance(2, f"{result['metric']} {result['value']:.4f}")
            _log_final(logger, config, result)
    else:
        result = _train_head_or_network(config, model, train, train_set, scoring, run_dir, dist, history)

    if dist.is_main:
        write_metrics(config, model, result, history, len(train), len(test), run_dir, dist.world_size, len(val) if val is not None else None)
    return run_dir


def write_metrics(
    config: FinetuneConfig, model: nn.Module, result: dict[str, Any], history: list[dict[str, Any]],
    n_train: int, n_test: int, run_dir: Path, world_size: int, n_val: Optional[int] = None,
) -> None:
    """RUN/metrics.json: the ``TransferResult`` with everything ``ssl compare`` pairs and groups runs by."""
    metrics = TransferResult(
        dataset=config.dataset,
        data_root=str(Path(config.data).resolve()),  # with the splits, year and data seed of the protocol: the dataset's identity
        mode=config.mode,
        init=config.init_label,
        init_weights=config.init if config.init_label.startswith("weights-") else "",
        encoder=config.encoder,
        budget=config.budget,
        labels_per_class=config.labels_per_class,
        label_fraction=config.label_fraction,
        data_seed=config.data_seed,
        seed=config.seed,
        checkpoint=config.checkpoint,
        n_train=n_train,
        n_test=n_test,
        n_val=n_val,
        world_size=world_size,
        run_prefix=run_prefix(config),
        protocol=protocol_settings(config),
        arch=dict(getattr(unwrap(model).encoder, "arch", {})) if hasattr(unwrap(model), "encoder") else {"timm": config.encoder},
        history=history,
        **result,
    )
    write_json_atomic(metrics.to_json(), run_dir / "metrics.json")
    held_out = f" (validation {result['val_value']:.4f} on {n_val} held-out {config.train_split} images)" if "val_value" in result else ""
    console.print(f"{config.name}: {result['metric']} = {result['value']:.4f}{held_out}")
    if "per_class" in result:
        console.print("  " + "  ".join(f"{k} {v:.3f}" for k, v in result["per_class"].items() if not math.isnan(v)))


@dataclass
class TransferTraining:
    """What one fine-tuning or linear-probe run trains and how it is scored. The linear probe's
    features are computed once, sharded over the processes and gathered, and every process then
    trains the same small head on all of them (no further communication): ``shard`` is False."""

    inputs: Any  # the training set: images (finetune) or a TensorDataset of features (linear)
    trained: nn.Module  # the module whose state is checkpointed
    params: list[nn.Parameter]
    forward: Callable[[torch.Tensor], torch.Tensor]
    test_outputs: Callable[[], np.ndarray]
    val_outputs: Callable[[], Optional[np.ndarray]]  # None without --val-per-class
    shard: bool
    mix: Optional[Mixup] = None  # --mixup / --cutmix: mixes each training batch and its labels
    penalty: Optional[StartingPointPenalty] = None  # --l2sp: added to each batch's loss


def transfer_training(config: FinetuneConfig, model: nn.Module, train: LabelledImages, train_set, scoring: Scoring, dist: Distributed) -> TransferTraining:
    if config.mode == "linear":
        train_x = torch.from_numpy(extract_features(model, train_set, config, dist))
        test_x = torch.from_numpy(extract_features(model, scoring.test_set, config, dist))
        val_x = scoring.val_outputs(lambda data, generator: extract_features(model, data, config, dist, generator))
        train_ignore = torch.as_tensor(train.ignore) if train.ignore is not None else torch.zeros(len(train), 0, dtype=torch.bool)
        features = torch.utils.data.TensorDataset(train_x, torch.as_tensor(train.targets), train_ignore)
        head = model.head
        def head_outputs(x: Optional[np.ndarray]) -> Optional[np.ndarray]:
            return None if x is None else head(torch.as_tensor(x).to(dist.device)).float().cpu().numpy()

        return TransferTraining(
            features, head, list(head.parameters()), head, lambda: head_outputs(test_x), lambda: head_outputs(val_x), False
        )
    penalty = StartingPointPenalty(unwrap(model).encoder.parameters(), config.l2sp) if config.l2sp else None  # anchors: the weights before any resume
    return TransferTraining(
        train_set, model, list(model.parameters()), model, lambda: predict(model, scoring.test_set, config, dist),
        lambda: scoring.val_outputs(lambda data, generator: predict(model, data, config, dist, generator)), True, make_mixup(config, train),
        penalty,
    )


def make_mixup(config: FinetuneConfig, train: LabelledImages) -> Optional[Mixup]:
    """timm's Mixup / CutMix for --mixup / --cutmix (no label smoothing: that would be a second change)."""
    if not config.mixes:
        return None
    if train.multilabel:
        raise UserError(f"--mixup and --cutmix need single-label data; {config.dataset} {config.train_split} is multi-label: drop them")
    return Mixup(mixup_alpha=config.mixup, cutmix_alpha=config.cutmix, label_smoothing=0.0, num_classes=len(train.classes))


@dataclass
class TransferState:
    """The optimisation state of a transfer run, all of it in its checkpoint."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler]
    generator: torch.Generator  # the shuffling of the unsharded loader
    step: int = 0
    epoch: int = 0
    result: dict[str, Any] = dataclasses.field(default_factory=dict)

    def checkpoint(self, config: FinetuneConfig, trained: nn.Module, history: list[dict[str, Any]],
                   penalty: Optional[StartingPointPenalty] = None) -> dict[str, Any]:
        return {
            "format": FINETUNE_FORMAT, "version": 1, "model": trained.state_dict(),
            # --l2sp's anchors: a resume is pulled towards the weights the run started from, even if the
            # pretext's encoder.pt has changed since
            "l2sp_anchors": list(penalty.anchors) if penalty is not None else None,
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "generator": self.generator.get_state(), "rng": rng_state(), "step": self.step, "epoch": self.epoch,
            "result": self.result, "history": list(history), "config": dataclasses.asdict(config),
        }

    def restore(self, config: FinetuneConfig, trained: nn.Module, last: Path, history: list[dict[str, Any]],
                penalty: Optional[StartingPointPenalty] = None) -> None:
        """Continue an interrupted run after its last finished epoch (changed options were refused
        before the run started: ``_finetune_once``)."""
        state = load_checkpoint(last, FINETUNE_FORMAT)
        trained.load_state_dict(state["model"])
        if penalty is not None:
            for anchor, saved in zip(penalty.anchors, state["l2sp_anchors"], strict=True):
                anchor.copy_(saved)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        self.step, self.epoch, self.result = state["step"], state["epoch"], state["result"]
        history[:] = state["history"]


def transfer_epoch(config: FinetuneConfig, model: nn.Module, job: TransferTraining, loader: DataLoader, state: TransferState,
                   logger: RunLogger, dist: Distributed, multilabel: bool, last: Path) -> list[float]:
    """One pass over the labelled training data; returns the batch losses. ``last``: the checkpoint
    that a NaN stop keeps."""
    world = dist.world_size if job.shard else 1
    job.trained.train()
    if config.head_warmup_epochs and config.mode == "finetune":
        set_encoder_frozen(model, state.epoch < config.head_warmup_epochs)
    losses = []
    for inputs, target, ignore in loader:
        inputs, target = inputs.to(dist.device), target.to(dist.device)
        if job.mix is not None:
            inputs, target = job.mix(inputs, target)  # target: class probabilities, which cross_entropy takes as they are
        with autocast(config.precision, dist.device):
            logits = job.forward(inputs)
        loss = classification_loss(logits.float(), target, ignore.to(dist.device), multilabel)
        value = loss.item()  # the classification loss; the curve stays comparable with and without --l2sp
        stop_if_not_finite({"loss": value}, state.step + 1, last, "lower --lr")
        if job.penalty is not None:
            loss = loss + job.penalty()
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        average_gradients(job.params, world)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        if state.scheduler is not None:
            state.scheduler.step()
        state.step += 1
        losses.append(value)
        logger.advance(state.step, f"loss {value:.4f}")
    return losses


def _train_head_or_network(
    config: FinetuneConfig, model: nn.Module, train: LabelledImages, train_set, scoring: Scoring, run_dir: Path,
    dist: Distributed, history: list[dict[str, Any]],
) -> dict[str, Any]:
    """Finetune (all layers, augmented images) or linear probe (frozen encoder, cached features)."""
    job = transfer_training(config, model, train, train_set, scoring, dist)
    world = dist.world_size if job.shard else 1
    batch_size = min(config.batch_size, len(job.inputs) // world)
    if job.mix is not None:  # timm mixes a batch with itself reversed, in pairs
        batch_size -= batch_size % 2
        if batch_size < 2:
            raise UserError(f"--mixup / --cutmix need batches of at least 2 images per process; {len(job.inputs)} training images is too few")
    sampler = ResumableSampler(job.inputs, dist, seed=config.seed) if job.shard else None
    generator = torch.Generator().manual_seed(config.seed)
    total_steps = (len(sampler) if job.shard else len(job.inputs)) // batch_size * config.epochs
    optimizer = make_optimizer(layerwise_param_groups(model, config) if job.shard else job.params, config)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1)) if config.lr_schedule == "cosine" else None
    state = TransferState(optimizer, grad_scaler(config.precision, dist.device), scheduler, generator)
    last = last_checkpoint(run_dir)
    if last.exists():
        state.restore(config, job.trained, last, history, job.penalty)
        if dist.is_main:
            console.print(f"resuming {run_dir} after epoch {state.epoch}")
    with RunLogger(run_dir, total_steps, f"{config.mode} {config.name}", enabled=dist.is_main, start=state.step, log_every=config.log_every) as logger, StopSignal() as stop:
        logger.config(dataclasses.asdict(config))
        for epoch in range(state.epoch, config.epochs):
            if sampler is not None:
                sampler.start_at(epoch, 0)
            loader = DataLoader(
                job.inputs, batch_size=batch_size, sampler=sampler, shuffle=sampler is None, drop_last=True,
                generator=generator, num_workers=config.num_workers if job.shard else 0, pin_memory=dist.device.type == "cuda",
            )
            state.epoch = epoch
            losses = transfer_epoch(config, model, job, loader, state, logger, dist, train.multilabel, last)
            state.epoch = epoch + 1
            logger.scalars({"train/loss": float(np.mean(losses)), "lr": optimizer.param_groups[0]["lr"]}, epoch + 1)
            if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
                with torch.inference_mode():
                    model.eval()
                    state.result = scoring.score(job.test_outputs(), job.val_outputs())
                record_evaluation(state.result, epoch + 1, float(np.mean(losses)), history, logger)
            if dist.is_main and epoch + 1 < config.epochs:
                save_atomic(state.checkpoint(config, job.trained, history, job.penalty), last)
            if any_flag([stop.received is not None], dist.world_size, dist.device)[0] and epoch + 1 < config.epochs:
                raise UserError(f"stopped by a signal after epoch {epoch + 1}; rerun the same command to resume from {last}")
        _log_final(logger, config, state.result)
    last.unlink(missing_ok=True)  # finished: metrics.json is the result
    return state.result


def record_evaluation(result: dict[str, Any], epoch: int, loss: float, history: list[dict[str, Any]], logger: RunLogger) -> None:
    """One evaluation in the learning curve, TensorBoard and the log. The test score keeps its old tag,
    val/<metric>; the held-out training images of --val-per-class are heldout/<metric>."""
    metric, value = result["metric"], result["value"]
    entry = {"epoch": epoch, "train_loss": loss, metric: value}
    scalars = {f"val/{metric}": value}
    line = f"epoch {epoch}: loss {loss:.4f}, {metric} {value:.4f}"
    if "val_value" in result:
        entry[f"val_{metric}"] = scalars[f"heldout/{metric}"] = result["val_value"]
        line += f", validation {metric} {result['val_value']:.4f}"
    logger.scalars(scalars, epoch)
    history.append(entry)
    logger.print(line)


def set_encoder_frozen(model: nn.Module, frozen: bool) -> None:
    """Head warm-up: the encoder neither learns nor updates its BatchNorm statistics while frozen."""
    encoder = model.encoder if hasattr(model, "encoder") else model
    for p in encoder.parameters():
        p.requires_grad_(not frozen)
    if frozen:
        encoder.eval()


def _log_final(logger: RunLogger, config: FinetuneConfig, result: dict[str, Any]) -> None:
    hparams = {k: v for k, v in dataclasses.asdict(config).items() if isinstance(v, (int, float, str, bool))}
    logger.hparams(hparams, {f"hparam/{result['metric']}": result["value"]})
    if "per_class" in result:
        table = "| class | AP |\n|---|---|\n" + "".join(f"| {k} | {v:.4f} |\n" for k, v in result["per_class"].items())
        logger.text("per_class_AP", table)
