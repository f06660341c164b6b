"""The inpainting pretext: train a generator (and optionally local + global discriminators).

One training step:
  1. the generator fills the hole; the *completed* image keeps the known pixels of the input and
     takes the hole from the generator (that is what the discriminators judge);
  2. discriminator step on real vs completed (generator output detached);
  3. generator step on reconstruction + adversarial terms, with the discriminators frozen so this
     step leaves no gradients in them.
The GLCIC schedule (seed 000) runs phases: reconstruction only (G), discriminators only, then joint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.utils.data import DataLoader
from torchvision.utils import make_grid, save_image

from ssl_inpaint.checkpoint import ENCODER_FORMAT, PRETRAIN_FORMAT, save_atomic
from ssl_inpaint.config import check_choices, option, save_config
from ssl_inpaint.data import DATASETS, PretextDataset, SubsetSource, channel_mean, create_source
from ssl_inpaint.engine.common import RunLogger, console, epoch_order, seed_everything, select_device
from ssl_inpaint.errors import UserError
from ssl_inpaint.losses import LossWeights, discriminator_loss, generator_loss
from ssl_inpaint.masks import MASK_KINDS, MaskGenerator, create_mask_generator
from ssl_inpaint.metrics import completion_metrics, to_unit
from ssl_inpaint.models import (
    GENERATORS,
    crop_boxes,
    create_generator,
    global_discriminator,
    hole_boxes,
    local_discriminator,
)

PHASES = ("reconstruction", "discriminator", "joint")


@dataclass
class PretrainConfig:
    # run
    name: str = option("", "Run name: outputs go to OUTPUT_DIR/NAME (default: the recipe's file name).")
    output_dir: str = option("runs", "Folder holding all runs (point TensorBoard here).")
    seed: int = option(0, "Seed for initialisation, shuffling, crops and masks.")
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    # data
    dataset: str = option("coco", f"Dataset kind: {', '.join(DATASETS)}.")
    data: str = option("", "Dataset root (COCO root, VOCdevkit, image folder, Fashion-MNIST files).")
    split: str = option("train2017", "Split to train on (COCO train2017, VOC train, Fashion-MNIST train).")
    year: str = option("2012", "VOC year (with --dataset voc).")
    val_split: str = option("", "Split for the fixed validation batch; empty: hold out --val-images training images.")
    val_images: int = option(16, "Size of the fixed validation batch (PSNR/SSIM/L1 and image grids).")
    image_size: int = option(128, "Training crop side in pixels (a multiple of 32).")
    strict: bool = option(False, "Stop on an unreadable image instead of skipping it.")
    num_workers: int = option(2, "DataLoader worker processes.")
    # masks
    mask: str = option("centre", f"Hole family: {', '.join(MASK_KINDS)}.")
    fill: str = option("zero", "Value in the hole of the input: zero (0 in the [-1,1] input, mid-grey) or mean (dataset mean).")
    centre_size: float = option(0.5, "centre: hole side as a fraction of the image side.")
    rect_min: float = option(20 / 64, "rect: smallest hole side (fraction of the image side).")
    rect_max: float = option(25 / 64, "rect: largest hole side (fraction of the image side).")
    rect_count: int = option(1, "rect: number of rectangles per image.")
    gauss_mean: float = option(25 / 64, "gaussian_rect: mean of the top-left corner (fraction of the side).")
    gauss_std: float = option(10 / 64, "gaussian_rect: std of the top-left corner (fraction of the side).")
    gauss_min: float = option(10 / 64, "gaussian_rect: smallest side (fraction of the side).")
    gauss_max: float = option(20 / 64, "gaussian_rect: largest side (fraction of the side).")
    region_min: float = option(0.2, "region: smallest fraction of the image covered.")
    region_max: float = option(0.3, "region: largest fraction of the image covered.")
    brush_strokes: int = option(4, "brush: most strokes per image.")
    object_min_area: float = option(0.02, "coco_object: smallest eligible object (fraction of the crop).")
    object_max_area: float = option(0.5, "coco_object: largest eligible object (fraction of the crop).")
    # models
    generator: str = option("unet", f"Generator architecture: {', '.join(GENERATORS)}.")
    bottleneck_channels: int = option(4000, "Channels of the generator's 1x1 latent.")
    skip_connections: bool = option(True, "U-Net skip connections (off for seed 003 model M3).")
    predict: str = option("image", "image: the generator outputs the whole image; hole: only the centre square (M3).")
    global_d: bool = option(True, "Use the global discriminator.")
    local_d: bool = option(True, "Use the local discriminator (on a crop around the hole).")
    local_size: int = option(0, "Local discriminator crop side in pixels (0: half the image side).")
    # losses
    recon_loss: str = option("mse", "Reconstruction loss: mse or l1.")
    w_known: float = option(0.9, "Weight w1 of the reconstruction loss on known pixels.")
    w_hole: float = option(0.1, "Weight w2 of the reconstruction loss in the hole.")
    w_adv_global: float = option(1e-5, "Weight w3 of the global adversarial loss.")
    w_adv_local: float = option(1e-5, "Weight w4 of the local adversarial loss.")
    # optimisation
    batch_size: int = option(64, "Images per step.")
    epochs: int = option(10, "Passes over the training images.")
    max_steps: int = option(0, "Stop after this many steps (0: run all epochs).")
    lr_g: float = option(2e-3, "Generator learning rate (Adam).")
    lr_d: float = option(1e-3, "Discriminators' learning rate (Adam).")
    beta1: float = option(0.5, "Adam beta1.")
    beta2: float = option(0.999, "Adam beta2.")
    weight_decay: float = option(0.0, "Weight decay of both optimizers.")
    lr_schedule: str = option("constant", "constant or cosine (with --warmup-steps linear warm-up).")
    warmup_steps: int = option(0, "Linear learning-rate warm-up steps.")
    schedule: str = option("joint", "joint: G and D every step; glcic: reconstruction, discriminator, joint phases.")
    phase_fractions: str = option("0.2,0.5,0.3", "glcic: fractions of the three phases, comma-separated.")
    phase_scope: str = option("run", "glcic: phases span the whole run, or repeat in every epoch (seed 000).")
    # outputs
    log_every: int = option(10, "Log scalars every N steps.")
    sample_every: int = option(200, "Validation metrics and an image grid every N steps (and at the end).")
    save_every_steps: int = option(1000, "Refresh checkpoints/last.pt every N steps (0: only at epoch ends).")
    save_every_epochs: int = option(5, "Keep checkpoints/epoch_N.pt every N epochs (0: never).")

    def validate(self) -> None:
        choices = {
            "dataset": DATASETS,
            "mask": tuple(MASK_KINDS),
            "fill": ("zero", "mean"),
            "generator": tuple(GENERATORS),
            "predict": ("image", "hole"),
            "recon_loss": ("mse", "l1"),
            "lr_schedule": ("constant", "cosine"),
            "schedule": ("joint", "glcic"),
            "phase_scope": ("run", "epoch"),
        }
        check_choices(self, choices)
        if self.batch_size < 2:
            raise UserError("--batch-size must be at least 2 (BatchNorm needs two samples per step)")
        if self.image_size % 32 or self.image_size < 32:
            raise UserError(f"--image-size must be a positive multiple of 32, got {self.image_size}")
        if self.local_d and self.resolved_local_size % 32:
            raise UserError(f"--local-size must be a multiple of 32, got {self.resolved_local_size}")
        if self.local_d and self.resolved_local_size > self.image_size:
            raise UserError("--local-size cannot exceed --image-size")
        if min(self.w_known, self.w_hole, self.w_adv_global, self.w_adv_local) < 0:
            raise UserError("loss weights must be non-negative")
        if self.predict == "hole" and not (self.mask == "centre" and self.centre_size == 0.5):
            raise UserError("--predict hole decodes the centre square only: use --mask centre --centre-size 0.5")
        if self.predict == "hole" and self.skip_connections:
            raise UserError("--predict hole is the no-skip model M3: add --no-skip-connections")
        if self.mask == "coco_object" and self.dataset != "coco":
            raise UserError("--mask coco_object needs COCO annotations: use --dataset coco")
        if self.schedule == "glcic" and not self.adversarial:
            raise UserError("--schedule glcic needs a discriminator: enable --global-d or --local-d")
        self.fractions  # parses and checks --phase-fractions
        if self.warmup_steps and self.lr_schedule == "constant":
            raise UserError("--warmup-steps needs --lr-schedule cosine")
        if self.epochs < 1 or self.max_steps < 0:
            raise UserError("--epochs must be >= 1 and --max-steps >= 0")

    @property
    def adversarial(self) -> bool:
        return self.global_d or self.local_d

    @property
    def resolved_local_size(self) -> int:
        return self.local_size or self.image_size // 2

    @property
    def fractions(self) -> tuple[float, float, float]:
        try:
            values = tuple(float(v) for v in self.phase_fractions.split(","))
        except ValueError:
            values = ()
        if len(values) != 3 or min(values) < 0 or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
            raise UserError(f"--phase-fractions must be three non-negative numbers summing to 1, got {self.phase_fractions!r}")
        return values  # type: ignore[return-value]

    def mask_generator(self) -> MaskGenerator:
        params = {
            "centre": dict(size=self.centre_size),
            "rect": dict(min_size=self.rect_min, max_size=self.rect_max, count=self.rect_count),
            "gaussian_rect": dict(mean=self.gauss_mean, std=self.gauss_std, min_side=self.gauss_min, max_side=self.gauss_max),
            "lower_half": {},
            "region": dict(min_coverage=self.region_min, max_coverage=self.region_max),
            "brush": dict(max_strokes=self.brush_strokes),
            "coco_object": dict(min_area=self.object_min_area, max_area=self.object_max_area),
        }[self.mask]
        return create_mask_generator(self.mask, **params)


def phase_at(fractions: tuple[float, float, float], position: int, length: int) -> str:
    """Which GLCIC phase step ``position`` of ``length`` falls in."""
    progress = position / max(length, 1)
    bounds = (fractions[0], fractions[0] + fractions[1])
    return PHASES[0] if progress < bounds[0] else PHASES[1] if progress < bounds[1] else PHASES[2]


@contextlib.contextmanager
def frozen(*modules: Optional[nn.Module]) -> Iterator[None]:
    """Gradients flow *through* the modules but are not accumulated *into* their parameters."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    previous = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, previous):
            p.requires_grad_(flag)


@dataclass
class InpaintingModels:
    generator: nn.Module
    global_d: Optional[nn.Module]
    local_d: Optional[nn.Module]
    local_size: int

    @property
    def discriminators(self) -> list[nn.Module]:
        return [d for d in (self.global_d, self.local_d) if d is not None]

    def train(self, mode: bool = True) -> None:
        for m in (self.generator, *self.discriminators):
            m.train(mode)


def build_models(config: PretrainConfig, image_channels: int) -> InpaintingModels:
    generator = create_generator(
        config.generator,
        image_channels=image_channels,
        image_size=config.image_size,
        bottleneck_channels=config.bottleneck_channels,
        skip_connections=config.skip_connections,
        predict=config.predict,
    )
    return InpaintingModels(
        generator=generator,
        global_d=global_discriminator(image_channels, config.image_size) if config.global_d else None,
        local_d=local_discriminator(image_channels, config.resolved_local_size) if config.local_d else None,
        local_size=config.resolved_local_size,
    )


def composite(image: torch.Tensor, prediction: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Known pixels from the real image, the hole from the generator."""
    return image * (1 - mask) + prediction * mask


def discriminator_logits(
    models: InpaintingModels, images: torch.Tensor, boxes: torch.Tensor
) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    global_logits = models.global_d(images) if models.global_d is not None else None
    local_logits = (
        models.local_d(crop_boxes(images, boxes, models.local_size)) if models.local_d is not None else None
    )
    return global_logits, local_logits


def train_step(
    models: InpaintingModels,
    batch: dict[str, torch.Tensor],
    opt_g: torch.optim.Optimizer,
    opt_d: Optional[torch.optim.Optimizer],
    weights: LossWeights,
    recon: str,
    phase: str,
) -> dict[str, float]:
    """One optimisation step of the given phase; returns the scalars to log."""
    image, mask, inputs = batch["image"], batch["mask"], batch["input"]
    train_g = phase in ("reconstruction", "joint")
    use_d = opt_d is not None and phase in ("discriminator", "joint")
    stats: dict[str, float] = {}

    with torch.set_grad_enabled(train_g):
        prediction = models.generator(inputs)
    completed = composite(image, prediction, mask)
    boxes = hole_boxes(mask, models.local_size) if models.local_d is not None else None

    if use_d:
        real_g, real_l = discriminator_logits(models, image, boxes)
        fake_g, fake_l = discriminator_logits(models, completed.detach(), boxes)
        loss_d = torch.zeros((), device=image.device)
        for label, real, fake in (("global", real_g, fake_g), ("local", real_l, fake_l)):
            if real is None:
                continue
            term = discriminator_loss(real, fake)
            loss_d = loss_d + term
            stats[f"loss/d_{label}"] = term.item()
            stats[f"d/{label}_real"] = torch.sigmoid(real).mean().item()
            stats[f"d/{label}_fake"] = torch.sigmoid(fake).mean().item()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

    if train_g:
        adversarial = phase == "joint" and opt_d is not None
        with frozen(*models.discriminators):
            global_logits, local_logits = (
                discriminator_logits(models, completed, boxes) if adversarial else (None, None)
            )
        terms = generator_loss(prediction, image, mask, weights, recon, global_logits, local_logits)
        opt_g.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt_g.step()
        stats.update({f"loss/g_{k}": v.item() for k, v in terms.items()})
    return stats


@torch.no_grad()
def validate(generator: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[dict[str, float], torch.Tensor]:
    """Metrics on the fixed validation batch and a grid of (original | holed input | completed) rows."""
    was_training = generator.training
    generator.eval()
    image, mask, inputs = batch["image"], batch["mask"], batch["input"]
    completed = composite(image, generator(inputs), mask)
    generator.train(was_training)
    metrics = {k: v.mean().item() for k, v in completion_metrics(completed, image, mask).items()}
    shown = min(8, image.shape[0])
    holed = inputs[:shown, :-1]
    rows = torch.stack([image[:shown], holed, completed[:shown]], dim=1).flatten(0, 1)
    grid = make_grid(to_unit(rows.float()).cpu(), nrow=3, padding=2, pad_value=1.0)
    return metrics, grid


def encoder_payload(generator: nn.Module, config: PretrainConfig, image_channels: int, fill: torch.Tensor, step: int) -> dict:
    encoder = generator.encoder
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


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def _describe_run(config: PretrainConfig, n_train: int, steps: int) -> str:
    discs = [n for n, on in (("global", config.global_d), ("local", config.local_d)) if on] or ["none"]
    return (
        f"pretrain {config.name}: {n_train} images of {config.dataset} at {config.image_size}px, "
        f"mask={config.mask}, discriminators={'+'.join(discs)}, schedule={config.schedule}, "
        f"{steps} steps of batch {config.batch_size}"
    )


def run_pretrain(config: PretrainConfig) -> Path:
    """Train the pretext model described by ``config``; returns the run folder."""
    run_dir = Path(config.output_dir) / config.name
    if (run_dir / "checkpoints" / "last.pt").exists():
        raise UserError(
            f"{run_dir} already holds a trained run; pick another --name or delete that folder"
        )
    seed_everything(config.seed)
    device = select_device(config.device)
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
        val_source = SubsetSource(source, order[: config.val_images])
        train_source = SubsetSource(source, order[config.val_images :])
    image_channels = source.channels
    fill = (
        channel_mean(train_source, config.image_size)
        if config.fill == "mean"
        else torch.zeros(image_channels)
    )
    use_objects = config.mask == "coco_object"
    train_set = PretextDataset(train_source, config.image_size, mask_generator, fill, config.seed, True, config.strict, use_objects)
    val_set = PretextDataset(val_source, config.image_size, mask_generator, fill, config.seed + 1, False, config.strict, use_objects)

    steps_per_epoch = len(train_set) // config.batch_size
    if steps_per_epoch == 0:
        raise UserError(
            f"{len(train_set)} training images are fewer than --batch-size {config.batch_size}; lower the batch size"
        )
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    epochs = math.ceil(total_steps / steps_per_epoch)

    models = build_models(config, image_channels)
    for m in (models.generator, *models.discriminators):
        m.to(device)
    opt_g = create_optimizer_v2(
        models.generator, opt="adam", lr=config.lr_g, weight_decay=config.weight_decay, betas=(config.beta1, config.beta2)
    )
    opt_d = (
        create_optimizer_v2(
            nn.ModuleList(models.discriminators), opt="adam", lr=config.lr_d,
            weight_decay=config.weight_decay, betas=(config.beta1, config.beta2),
        )
        if config.adversarial
        else None
    )
    schedulers = [
        CosineLRScheduler(opt, t_initial=total_steps, warmup_t=config.warmup_steps, warmup_lr_init=0.0, t_in_epochs=False)
        for opt in (opt_g, opt_d)
        if opt is not None and config.lr_schedule == "cosine"
    ]
    weights = LossWeights(config.w_known, config.w_hole, config.w_adv_global, config.w_adv_local)

    save_config(config, run_dir / "config.yaml")
    (run_dir / "samples").mkdir(exist_ok=True)
    val_batch = _to_device(next(iter(DataLoader(val_set, batch_size=len(val_set), num_workers=0))), device)

    def checkpoint(step: int, epoch: int) -> dict:
        return {
            "format": PRETRAIN_FORMAT,
            "version": 1,
            "generator": models.generator.state_dict(),
            "global_d": models.global_d.state_dict() if models.global_d is not None else None,
            "local_d": models.local_d.state_dict() if models.local_d is not None else None,
            "opt_g": opt_g.state_dict(),
            "opt_d": opt_d.state_dict() if opt_d is not None else None,
            "step": step,
            "epoch": epoch,
            "fill": fill.tolist(),
            "image_channels": image_channels,
            "config": dataclasses.asdict(config),
        }

    console.print(_describe_run(config, len(train_set), total_steps))
    step, skipped_total = 0, 0
    with RunLogger(run_dir, total_steps, f"pretrain {config.name}") as logger:
        logger.config(dataclasses.asdict(config))
        models.train()
        for epoch in range(epochs):
            train_set.set_epoch(epoch)
            loader = DataLoader(
                train_set,
                batch_size=config.batch_size,
                sampler=epoch_order(len(train_set), config.seed, epoch),
                num_workers=config.num_workers,
                pin_memory=device.type == "cuda",
                drop_last=True,
            )
            skipped_epoch = 0
            for position, batch in enumerate(loader):
                if step >= total_steps:
                    break
                phase = "joint" if config.schedule == "joint" else (
                    phase_at(config.fractions, position, steps_per_epoch)
                    if config.phase_scope == "epoch"
                    else phase_at(config.fractions, step, total_steps)
                )
                for scheduler in schedulers:
                    scheduler.step_update(step)
                skipped_epoch += int(batch["skipped"].sum())
                stats = train_step(models, _to_device(batch, device), opt_g, opt_d, weights, config.recon_loss, phase)
                if any(not math.isfinite(v) for v in stats.values()):
                    raise UserError(
                        f"non-finite loss at step {step} ({stats}); lower the learning rates. "
                        f"The last good checkpoint is kept in {run_dir / 'checkpoints'}"
                    )
                step += 1
                logger.count_images(config.batch_size)
                if step % config.log_every == 0 or step == total_steps:
                    stats["perf/img_per_s"] = logger.throughput()
                    stats["lr/g"] = opt_g.param_groups[0]["lr"]
                    if opt_d is not None:
                        stats["lr/d"] = opt_d.param_groups[0]["lr"]
                    stats["data/skipped_images"] = skipped_total + skipped_epoch
                    logger.scalars(stats, step)
                    loss = stats.get("loss/g_total", stats.get("loss/d_global", stats.get("loss/d_local", 0.0)))
                    logger.advance(step, f"{phase[:5]} loss {loss:.4f} {stats['perf/img_per_s']:.1f} img/s")
                else:
                    logger.advance(step, "")
                if step % config.sample_every == 0 or step == total_steps:
                    metrics, grid = validate(models.generator, val_batch)
                    logger.scalars({f"val/{k}": v for k, v in metrics.items()}, step)
                    logger.image("val/original|holed|completed", grid, step)
                    save_image(grid, run_dir / "samples" / f"step_{step:07d}.png")
                if config.save_every_steps and step % config.save_every_steps == 0:
                    save_atomic(checkpoint(step, epoch), run_dir / "checkpoints" / "last.pt")
            skipped_total += skipped_epoch
            if skipped_epoch:
                logger.print(f"warning: skipped {skipped_epoch} unreadable images in epoch {epoch} (see the log for their names)", style="yellow")
            state = checkpoint(step, epoch + 1)
            save_atomic(state, run_dir / "checkpoints" / "last.pt")
            if config.save_every_epochs and (epoch + 1) % config.save_every_epochs == 0:
                save_atomic(state, run_dir / "checkpoints" / f"epoch_{epoch + 1:04d}.pt")
        metrics, _ = validate(models.generator, val_batch)
        save_atomic(encoder_payload(models.generator, config, image_channels, fill, step), run_dir / "encoder.pt")
    summary = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
    console.print(f"done: {step} steps; validation {summary}; encoder: {run_dir / 'encoder.pt'}")
    return run_dir
