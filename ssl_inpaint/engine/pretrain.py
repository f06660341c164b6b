"""``ssl pretrain``: train the inpainting pretext (a generator and optionally local + global
discriminators) and write the run folder: checkpoints, samples, TensorBoard, encoder.pt.

``setup_pretrain`` builds a ``PretrainRun`` (data, networks, optimizers, resume) in a fixed order,
``train_one_epoch`` runs its steps, each one ``gan_step.train_step``. The GLCIC schedule (seed 000) runs phases: reconstruction only (G), discriminators only, then joint.
The two-stage schedule (seed 004) trains jointly, then the generator alone against the frozen
discriminators; approx_then_refine (seed 001) trains ApproxNet alone, then the refiner with the GAN.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.utils.data import DataLoader

from ssl_inpaint.checkpoint import ENCODER_FORMAT, PRETRAIN_FORMAT, last_checkpoint, load_checkpoint
from ssl_inpaint.storage import save_atomic, save_png_atomic
from ssl_inpaint.config import save_config
from ssl_inpaint.data import DATASETS, ImageSource, SubsetSource, create_source
from ssl_inpaint.data.transforms import UNREADABLE
from ssl_inpaint.distributed import (
    Distributed,
    any_flag,
    broadcast_module,
    setup,
    teardown,
)
from ssl_inpaint.runs import RunLogger, changed_settings, record_resume_changes, refuse_changes, refuse_lost_checkpoint, refuse_without_resume, run_folder_lock, stop_if_not_finite
from ssl_inpaint.runtime import check_precision, configure_threads, console, epoch_order, grad_scaler, multi_tensor, resolve_workers, seed_everything
from ssl_inpaint.runtime import prepare_module, ResumableSampler, rng_state, set_rng_state, StopSignal, unwrap
from ssl_inpaint.errors import UserError
from ssl_inpaint.losses import LossWeights
from ssl_inpaint.masks import PretextDataset, channel_mean, check_object_source, degenerate_holes
from ssl_inpaint.pretext_validation import attention_grid, validate
from ssl_inpaint.probe import RepresentationProbe, make_probe
from ssl_inpaint.gan_step import STAGES, Optimizers, phase_at, train_step
from ssl_inpaint.models import InpaintingModels, make_models
from ssl_inpaint.models.init_from import initialise_encoder
from ssl_inpaint.options.pretrain import PretrainConfig, RESUMABLE
from ssl_inpaint.models.vgg import load_vgg16_features, read_vgg16_trunk


def phase_for(config: PretrainConfig, step: int, position: int, steps_per_epoch: int, total_steps: int) -> str:
    """The training phase of a step under ``config.schedule``."""
    if config.schedule == "joint":
        return "joint"
    if config.schedule == "glcic":
        if config.phase_scope == "epoch":
            return phase_at(config.fractions, position, steps_per_epoch)
        return phase_at(config.fractions, step, total_steps)
    first, second = STAGES[config.schedule]
    return first if step < config.stage_fraction * total_steps else second


def encoder_payload(generator: nn.Module, config: PretrainConfig, image_channels: int, fill: torch.Tensor, step: int) -> dict:
    encoder = unwrap(generator).encoder
    return {
        "format": ENCODER_FORMAT,
        "version": 1,
        "arch": dict(encoder.arch),
        "image_channels": image_channels,
        "fill": fill.tolist(),
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "step": step,
        "pretrain_config": dataclasses.asdict(config),
    }


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return {
        k: v.to(device, non_blocking=True).contiguous(memory_format=memory_format) if torch.is_tensor(v) and v.dim() == 4
        else v.to(device, non_blocking=True) if torch.is_tensor(v) else v
        for k, v in batch.items()
    }


@dataclass
class PretextData:
    train: PretextDataset
    val: PretextDataset
    image_channels: int
    fill: torch.Tensor


def readable_prefix(source: ImageSource, order: list[int], count: int) -> list[int]:
    """The first ``count`` indices of ``order`` whose images decode (the held-out validation images:
    a fixed batch must not be made of files that cannot be read)."""
    chosen: list[int] = []
    for index in order:
        try:
            source.load(index)
        except UNREADABLE:
            continue
        chosen.append(index)
        if len(chosen) == count:
            return chosen
    raise UserError(f"{source.name} has {len(chosen)} readable images, not the --val-images {count} needed; lower --val-images")


def prepare_data(config: PretrainConfig) -> PretextData:
    mask_generator = config.mask_generator()  # fails early on bad mask options
    source = create_source(config.dataset, config.data, config.split, config.year)
    if config.val_split:
        train_source, val_source = source, create_source(config.dataset, config.data, config.val_split, config.year)
    else:
        if len(source) <= config.val_images:
            raise UserError(
                f"{source.name} has {len(source)} images, not more than --val-images {config.val_images}; "
                f"lower --val-images or pass --val-split"
            )
        order = epoch_order(len(source), seed=12345, epoch=0)  # fixed, independent of --seed
        held_out = readable_prefix(source, order, config.val_images)
        val_source = SubsetSource(source, held_out)
        chosen = set(held_out)
        train_source = SubsetSource(source, [i for i in order if i not in chosen])
    channels = source.channels
    fill = channel_mean(train_source, config.image_size) if config.fill == "mean" else torch.zeros(channels)
    use_objects = config.mask_needs_objects
    if use_objects:
        check_object_source(source)
    common = dict(strict=config.strict, use_objects=use_objects, reduced_decode=config.reduced_decode, cache_mb=config.cache_mb)
    train = PretextDataset(train_source, config.image_size, mask_generator, fill, config.seed, True, crop_scale=config.crop_scale, **common)
    val = PretextDataset(val_source, config.image_size, mask_generator, fill, config.seed + 1, False, **common)
    return PretextData(train, val, channels, fill)


def make_optimizers(config: PretrainConfig, models: InpaintingModels, device: torch.device) -> Optimizers:
    betas = (config.beta1, config.beta2)
    common = dict(opt=config.optimizer, weight_decay=config.weight_decay, betas=betas, eps=config.adam_eps, **multi_tensor(device))
    opt_g = create_optimizer_v2(models.generator, lr=config.lr_g, **common)
    opt_d = (
        create_optimizer_v2(nn.ModuleList(models.discriminators), lr=config.lr_d, **common)
        if config.adversarial
        else None
    )
    return Optimizers(opt_g, opt_d, grad_scaler(config.precision, device), grad_scaler(config.precision, device))


def load_resume_state(config: PretrainConfig, path: Path, global_batch: int) -> tuple[dict[str, Any], dict[str, tuple]]:
    """The checkpoint to resume from and the accepted setting changes {key: (old, new)}; refuses
    every other change, naming each key."""
    state = load_checkpoint(path, PRETRAIN_FORMAT)
    differing = changed_settings(PretrainConfig.saved_values(state["config"]), config)
    # --split cannot change what a run reads from a kind that ignores it (a folder run saved before the
    # split default became the kind's own has split train2017), so resuming accepts it there.
    ignored = () if DATASETS.get(config.dataset).reads_split else ("split",)
    refuse_changes(path, differing, (*RESUMABLE, *ignored))
    if state.get("global_batch") != global_batch:
        raise UserError(
            f"cannot resume {path} exactly: its global batch was {state.get('global_batch')}, now {global_batch} "
            f"(batch size x processes x accumulation); keep it or start a new --name"
        )
    return state, {k: v for k, v in differing.items() if k not in ("resume",)}


def run_pretrain(config: PretrainConfig) -> Path:
    """Train the pretext model described by ``config``; returns the run folder."""
    dist = setup(config.device)
    try:
        with run_folder_lock(Path(config.output_dir) / config.name, "pretrain", enabled=dist.is_main):
            return _run_pretrain(config, dist)
    finally:
        teardown()


@dataclass
class PretrainRun:
    """What one ``ssl pretrain`` process holds while it trains: built by ``setup_pretrain``, advanced by
    ``train_one_epoch``, closed by ``finish``."""

    config: PretrainConfig
    dist: Distributed
    data: PretextData
    sampler: ResumableSampler
    loader: DataLoader
    models: InpaintingModels
    opts: Optimizers
    schedulers: list[CosineLRScheduler]
    weights: LossWeights
    val_batch: dict[str, torch.Tensor]
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    threads: int
    step: int = 0
    resume_changes: dict[str, tuple] = dataclasses.field(default_factory=dict)
    probe: Optional[RepresentationProbe] = None
    probe_seconds: float = 0.0
    skipped_total: int = 0
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def run_dir(self) -> Path:
        return Path(self.config.output_dir) / self.config.name

    @property
    def last(self) -> Path:
        return last_checkpoint(self.run_dir)

    def save(self, path: Path) -> None:
        if self.dist.is_main:
            save_atomic(
                {
                    "format": PRETRAIN_FORMAT,
                    "version": 1,
                    **self.models.state_dicts(),
                    **self.opts.state_dict(),
                    "step": self.step,
                    "epoch": self.step // self.steps_per_epoch,
                    "global_batch": self.global_batch,
                    "rng": rng_state(),
                    "fill": self.data.fill.tolist(),
                    "image_channels": self.data.image_channels,
                    "config": dataclasses.asdict(self.config),
                },
                path,
            )

    def run_probe(self, logger: RunLogger) -> None:
        if self.probe is not None:
            results = self.probe(unwrap(self.models.generator).encoder)
            self.probe_seconds += results.pop("probe/seconds")
            logger.scalars(results, self.step)


def step_count(config: PretrainConfig, data: PretextData, sampler: ResumableSampler, world_size: int) -> tuple[int, int, int]:
    """(global batch, steps per epoch, total steps)."""
    global_batch = config.batch_size * world_size * config.accumulate
    steps_per_epoch = len(sampler) // (config.batch_size * config.accumulate)
    if steps_per_epoch == 0:
        raise UserError(
            f"{len(data.train)} training images are fewer than one global batch of {global_batch}; "
            f"lower --batch-size or --accumulate"
        )
    total_steps = config.epochs * steps_per_epoch
    return global_batch, steps_per_epoch, min(total_steps, config.max_steps) if config.max_steps else total_steps


def place_models(config: PretrainConfig, image_channels: int, dist: Distributed) -> InpaintingModels:
    """The networks on the device, identical on every process, with the perceptual loss network."""
    models = make_models(config, image_channels)
    models.generator = prepare_module(models.generator, dist, config.sync_bn, config.channels_last)
    models.global_d = prepare_module(models.global_d, dist, config.sync_bn, config.channels_last) if models.global_d else None
    models.local_d = prepare_module(models.local_d, dist, config.sync_bn, config.channels_last) if models.local_d else None
    for m in (models.generator, *models.discriminators):
        broadcast_module(m, dist.world_size)
    if config.w_perceptual or config.w_style:  # a loss network, not part of the model: never checkpointed
        models.features = load_vgg16_features(config.vgg_weights).to(dist.device)
    return models


def loss_weights(config: PretrainConfig) -> LossWeights:
    return LossWeights(
        config.w_known, config.w_hole, config.w_adv_global, config.w_adv_local, config.w_perceptual, config.w_style,
        norm_pix_patch=config.patch_size if config.norm_pix_loss else 0,
    )


def resume_or_start(run: PretrainRun) -> None:
    """Load the run's last checkpoint if there is one (a new run loads --init-from's encoder and a
    vgg16 discriminator's ImageNet trunk instead), then compile the networks if asked."""
    config, models, last = run.config, run.models, run.last
    if config.discriminator == "vgg16" and not last.exists():
        unwrap(models.global_d).load_trunk(read_vgg16_trunk(config.vgg_weights))
    if config.init_from and not last.exists():  # every process loads the same file: they stay identical
        loaded = initialise_encoder(unwrap(models.generator), config.init_from)
        if run.dist.is_main:
            console.print(loaded)
    if last.exists():
        state, run.resume_changes = load_resume_state(config, last, run.global_batch)
        models.load_state_dicts(state)
        run.opts.load_state_dict(state)
        set_rng_state(state["rng"])
        run.step = state["step"]
        if run.dist.is_main:
            console.print(f"resuming {run.run_dir} from step {run.step}")
    if config.compile:
        models.generator = torch.compile(models.generator)
        models.global_d = torch.compile(models.global_d) if models.global_d else None
        models.local_d = torch.compile(models.local_d) if models.local_d else None


def validation_batch(config: PretrainConfig, data: PretextData, device: torch.device) -> dict[str, torch.Tensor]:
    """The fixed validation batch on the device; refuses holes that cannot be scored."""
    batch = to_device(next(iter(DataLoader(data.val, batch_size=len(data.val), num_workers=0))), device, config.channels_last)
    degenerate = int(degenerate_holes(batch["mask"]).sum())
    if degenerate:
        raise UserError(
            f"{degenerate} of the {len(data.val)} validation holes of --mask {config.mask} at --image-size {config.image_size} "
            f"are empty or cover the whole image, so they cannot be scored; adjust the --mask options"
        )
    return batch


def setup_pretrain(config: PretrainConfig, dist: Distributed) -> PretrainRun:
    """Everything before the first step, in a fixed order: the order decides which random numbers
    go where, so it is part of every seeded result."""
    check_precision(config.precision, dist.device)
    config = dataclasses.replace(config, num_workers=resolve_workers(config.num_workers, dist.device))
    threads = configure_threads(config.num_workers, dist.device)
    seed_everything(config.seed)
    data = prepare_data(config)
    sampler = ResumableSampler(data.train, dist, seed=config.seed)
    # One loader for the whole run: its workers (and the images they keep, --cache-mb) live across
    # epochs; the dataset's epoch reaches them through shared memory (PretextDataset.set_epoch).
    loader = DataLoader(
        data.train,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        pin_memory=dist.device.type == "cuda",
        drop_last=True,
        persistent_workers=config.num_workers > 0,
    )
    global_batch, steps_per_epoch, total_steps = step_count(config, data, sampler, dist.world_size)
    models = place_models(config, data.image_channels, dist)
    opts = make_optimizers(config, models, dist.device)
    schedulers = [
        CosineLRScheduler(opt, t_initial=total_steps, warmup_t=config.warmup_steps, warmup_lr_init=0.0, t_in_epochs=False)
        for opt in (opts.g, opts.d)
        if opt is not None and config.lr_schedule == "cosine"
    ]
    run = PretrainRun(
        config, dist, data, sampler, loader, models, opts, schedulers, loss_weights(config), {}, global_batch,
        steps_per_epoch, total_steps, threads,
    )
    resume_or_start(run)
    if dist.is_main:
        save_config(config, run.run_dir / "config.yaml")
        (run.run_dir / "samples").mkdir(exist_ok=True)
    run.val_batch = validation_batch(config, data, dist.device)
    return run


def describe(run: PretrainRun) -> str:
    config = run.config
    discs = "+".join(n for n, on in (("global", config.global_d), ("local", config.local_d)) if on) or "none"
    if config.discriminator != "table2":
        discs = config.discriminator
    return (
        f"pretrain {config.name}: {len(run.data.train)} images of {config.dataset} at {config.image_size}px, "
        f"generator={config.generator}, mask={config.mask}, discriminators={discs}, schedule={config.schedule}; {run.total_steps} steps, "
        f"global batch {run.global_batch} = {config.batch_size} per process x {run.dist.world_size} processes x "
        f"{config.accumulate} accumulation, {config.precision} on {run.dist.device.type} "
        f"({run.threads} compute threads, {config.num_workers} loader workers per process)"
    )


def start_logging(run: PretrainRun, logger: RunLogger, probe_note: str) -> None:
    """The run's config and notes in TensorBoard and on the console; the probe of the random init."""
    config = run.config
    logger.config(dataclasses.asdict(config))
    logger.text("global_batch", f"{run.global_batch} = {config.batch_size} x {run.dist.world_size} x {config.accumulate}")
    if run.dist.is_main:
        logger.print(probe_note)
    if run.resume_changes and run.dist.is_main:
        changes = record_resume_changes(run.run_dir, run.resume_changes, run.step)
        logger.text("resume/changes", f"step {run.step}: {changes}", run.step)
        logger.print(f"resumed with changed settings (recorded in {run.run_dir / 'resume_changes.yaml'}): {changes}")
    if run.step == 0:  # the random-init encoder: where the probe curve starts
        run.run_probe(logger)
        if run.probe is not None:
            logger.print(f"probe at step 0 took {run.probe_seconds:.1f} s")


def log_step(run: PretrainRun, logger: RunLogger, stats: dict[str, float], phase: str, skipped: int) -> None:
    config, opts = run.config, run.opts
    if run.step % config.log_every == 0 or run.step == run.total_steps:
        stats["perf/img_per_s"] = logger.throughput()
        stats["lr/g"] = opts.g.param_groups[0]["lr"]
        if opts.d is not None:
            stats["lr/d"] = opts.d.param_groups[0]["lr"]
        stats["data/skipped_images"] = skipped
        logger.scalars(stats, run.step)
        loss = stats.get("loss/g_total", stats.get("loss/d_global", stats.get("loss/d_local", 0.0)))
        logger.advance(run.step, f"{phase[:5]} loss {loss:.4f} {stats['perf/img_per_s']:.1f} img/s")
    else:
        logger.advance(run.step, "")


def validate_and_probe(run: PretrainRun, logger: RunLogger) -> None:
    """Validation metrics and image grids every --sample-every steps, the probe every --probe-every."""
    config, step = run.config, run.step
    if step % config.sample_every == 0 or step == run.total_steps:
        run.metrics, grid = validate(run.models.generator, run.val_batch, run.dist, config.precision)
        logger.scalars({f"val/{k}": v for k, v in run.metrics.items()}, step)
        if grid is not None:
            logger.image("val/original|holed|completed", grid, step)
            attention = attention_grid(run.models.generator, run.val_batch, config.precision)
            if attention is not None:
                logger.image("val/original|hole_attention", attention, step)
            save_png_atomic(grid, run.run_dir / "samples" / f"step_{step:07d}.png")
    if config.probe_every and (step % config.probe_every == 0 or step == run.total_steps):
        run.run_probe(logger)


def train_one_epoch(run: PretrainRun, logger: RunLogger, stop: StopSignal) -> bool:
    """Steps from ``run.step`` to the end of its epoch (or of the run); True when a signal stopped it."""
    config, dist = run.config, run.dist
    epoch, position = divmod(run.step, run.steps_per_epoch)
    run.data.train.set_epoch(epoch)
    run.sampler.start_at(epoch, position * config.batch_size * config.accumulate)
    batches = iter(run.loader)
    skipped_epoch = fallback_holes = holes = 0
    while position < run.steps_per_epoch and run.step < run.total_steps:
        micro = [next(batches) for _ in range(config.accumulate)]
        phase = phase_for(config, run.step, position, run.steps_per_epoch, run.total_steps)
        for scheduler in run.schedulers:
            scheduler.step_update(run.step)
        skipped_epoch += sum(int(mb["skipped"].sum()) for mb in micro)
        fallback_holes += sum(int(mb["fallback_hole"].sum()) for mb in micro)
        holes += sum(len(mb["fallback_hole"]) for mb in micro)
        micro = [to_device(mb, dist.device, config.channels_last) for mb in micro]
        stats = train_step(run.models, micro, run.opts, run.weights, config.recon_loss, phase, config.precision, dist.world_size)
        nonfinite = any(not math.isfinite(v) for v in stats.values())
        stop_now, nonfinite = any_flag([stop.received is not None, nonfinite], dist.world_size, dist.device)
        stop_if_not_finite(stats, run.step + 1, run.last, "lower the learning rates or use --precision fp32", nonfinite)
        run.step += 1
        position += 1
        logger.count_images(run.global_batch)
        log_step(run, logger, stats, phase, run.skipped_total + skipped_epoch)
        validate_and_probe(run, logger)
        if stop_now:
            run.save(run.last)
            logger.print(f"stopped at step {run.step} by a signal; {run.last} saved - rerun the same command to resume")
            return True
        if config.save_every_steps and run.step % config.save_every_steps == 0:
            run.save(run.last)
    run.skipped_total += skipped_epoch
    if skipped_epoch:
        logger.print(f"warning: skipped {skipped_epoch} unreadable images in epoch {epoch} (see the log for their names)", style="yellow")
    if fallback_holes:  # this process's share; the other processes see the same proportion
        logger.scalars({"data/fallback_hole_fraction": fallback_holes / holes}, run.step)
        logger.print(f"note: {fallback_holes} of {holes} coco_object holes in epoch {epoch} were rectangles: no object of the crop "
                     f"covered --object-min-area to --object-max-area of it", style="yellow")
    run.save(run.last)
    epoch_done = run.step // run.steps_per_epoch
    if position == run.steps_per_epoch and config.save_every_epochs and epoch_done % config.save_every_epochs == 0:
        run.save(run.run_dir / "checkpoints" / f"epoch_{epoch_done:04d}.pt")
    return False


def _run_pretrain(config: PretrainConfig, dist: Distributed) -> Path:
    run_dir = Path(config.output_dir) / config.name
    refuse_without_resume(run_dir, config.resume)
    refuse_lost_checkpoint(run_dir, ("encoder.pt", "checkpoints"), "pretrain")
    run = setup_pretrain(config, dist)
    config = run.config
    if dist.is_main:
        console.print(describe(run))
    run.probe, probe_note = make_probe(config, config, config.image_size, run.data.image_channels) if dist.is_main else (None, "")
    logger = RunLogger(run_dir, run.total_steps, f"pretrain {config.name}", enabled=dist.is_main, start=run.step, log_every=config.log_every)
    with logger, StopSignal() as stop:
        start_logging(run, logger, probe_note)
        run.models.train()
        while run.step < run.total_steps:
            if train_one_epoch(run, logger, stop):
                return run_dir
        if not run.metrics:
            run.metrics, _ = validate(run.models.generator, run.val_batch, dist, config.precision)
        if dist.is_main:
            encoder = encoder_payload(run.models.generator, config, run.data.image_channels, run.data.fill, run.step)
            save_atomic(encoder, run_dir / "encoder.pt")
    if dist.is_main:
        summary = ", ".join(f"{k} {v:.4g}" for k, v in run.metrics.items())
        console.print(f"done: {run.step} steps; validation {summary}; encoder: {run_dir / 'encoder.pt'}")
        if run.probe is not None:
            console.print(f"representation probe: {run.probe_seconds:.1f} s in all, {100 * run.probe_seconds / logger.elapsed():.1f} % of the run")
    return run_dir
