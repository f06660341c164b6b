"""``ssl pixelcnn``: seed 002's PixelCNN++ completing the lower half of images.

A likelihood model, not a GAN: the loss is the negative log-likelihood of the lower half's pixels
given everything before them in raster order (the whole upper half, and the lower half's earlier
pixels), reported in bits per dimension (nats / (lower-half pixels x channels x ln 2)). The
validation images get their lower half sampled pixel by pixel.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.utils import make_grid, save_image

from ssl_inpaint.checkpoint import PIXELCNN_FORMAT, last_checkpoint, save_atomic
from ssl_inpaint.config import RunOptions, RuntimeOptions, check_choices, option, save_config
from ssl_inpaint.data import DATASETS, SourceOptions, SubsetSource, create_source
from ssl_inpaint.masks import PretextDataset
from ssl_inpaint.distributed import select_device
from ssl_inpaint.runs import RunLogger, run_folder_lock, stop_if_not_finite
from ssl_inpaint.runtime import console, epoch_order, seed_everything
from ssl_inpaint.runtime import configure_threads, resolve_workers
from ssl_inpaint.errors import UserError
from ssl_inpaint.models.pixelcnn import mixture_log_prob
from ssl_inpaint.masks import create_mask_generator
from ssl_inpaint.metrics import to_unit
from ssl_inpaint.models.pixelcnn import PixelCNNPP, quantize, sample_lower_half


@dataclass
class PixelCNNConfig(SourceOptions, RuntimeOptions, RunOptions):
    dataset: str = option("folder", f"Dataset kind: {', '.join(DATASETS)}.")
    split: str = option("train", "Split to train on.")
    val_images: int = option(16, "Held-out images for validation bits/dim and samples.")
    image_size: int = option(32, "Image side in pixels (a multiple of 4; seed 002: 32).")
    filters: int = option(160, "Channels of every convolution.")
    blocks: int = option(5, "Gated ResNet blocks per stage.")
    components: int = option(10, "Logistic mixture components per pixel.")
    dropout: float = option(0.5, "Dropout inside the gated ResNet blocks.")
    batch_size: int = option(12, "Images per step.")
    epochs: int = option(1, "Passes over the training images.")
    max_steps: int = option(0, "Stop after this many steps (0: run all epochs).")
    lr: float = option(1e-3, "Adam learning rate.")
    lr_decay: float = option(0.999995, "Learning rate multiplied by this after every step.")
    log_every: int = option(10, "Log the training bits/dim every N steps.")
    sample_every: int = option(1000, "Validation bits/dim and sampled lower halves every N steps (and at the end).")
    sample_images: int = option(4, "Validation images whose lower half is sampled (one forward pass per pixel each time).")

    def validate(self) -> None:
        check_choices(self, {"dataset": DATASETS})
        if self.image_size < 4 or self.image_size % 4:
            raise UserError(f"--image-size must be a positive multiple of 4, got {self.image_size}")
        if min(self.filters, self.blocks, self.components, self.batch_size, self.epochs) < 1 or self.max_steps < 0:
            raise UserError("--filters, --blocks, --components, --batch-size and --epochs must be at least 1")
        if not 0 <= self.dropout < 1 or not 0 < self.lr_decay <= 1:
            raise UserError("--dropout must be in [0, 1) and --lr-decay in (0, 1]")
        if self.sample_images > self.val_images:
            raise UserError("--sample-images cannot exceed --val-images")


def lower_half_nll(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Per-image negative log-likelihood (nats) of the lower half given the pixels before it."""
    log_prob = mixture_log_prob(images, model(images))  # (B, H, W)
    return -log_prob[:, images.shape[-2] // 2 :].flatten(1).sum(1)


def bits_per_dim(nll: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    dims = images.shape[1] * (images.shape[-2] - images.shape[-2] // 2) * images.shape[-1]
    return nll / (dims * math.log(2))


def _datasets(config: PixelCNNConfig) -> tuple[PretextDataset, PretextDataset, int]:
    source = create_source(config.dataset, config.data, config.split, config.year)
    if len(source) <= config.val_images:
        raise UserError(f"{source.name} has {len(source)} images, not more than --val-images {config.val_images}; lower --val-images")
    order = epoch_order(len(source), seed=12345, epoch=0)  # the same held-out images as ssl pretrain
    lower_half, fill = create_mask_generator("lower_half"), torch.zeros(source.channels)
    train = PretextDataset(SubsetSource(source, order[config.val_images :]), config.image_size, lower_half, fill, config.seed, True, config.strict)
    val = PretextDataset(SubsetSource(source, order[: config.val_images]), config.image_size, lower_half, fill, config.seed + 1, False, config.strict)
    return train, val, source.channels


@torch.inference_mode()
def validation_bits(model: torch.nn.Module, images: torch.Tensor, config: PixelCNNConfig, seed: int) -> tuple[float, torch.Tensor]:
    """(mean bits/dim of the lower half, a grid of original | upper half | sampled rows)."""
    model.eval()
    bpd = float(bits_per_dim(lower_half_nll(model, images), images).mean())
    shown = images[: config.sample_images]
    sampled = sample_lower_half(model, shown, torch.Generator(images.device).manual_seed(seed))
    upper_only = shown.clone()
    upper_only[:, :, shown.shape[-2] // 2 :] = 0
    rows = torch.stack([shown, upper_only, sampled], dim=1).flatten(0, 1)
    model.train()
    return bpd, make_grid(to_unit(rows).cpu(), nrow=3, padding=2, pad_value=1.0)


def run_pixelcnn(config: PixelCNNConfig) -> Path:
    """Train PixelCNN++ on the lower halves of ``config``'s images; returns the run folder."""
    with run_folder_lock(Path(config.output_dir) / config.name):
        return _run_pixelcnn(config)


def _run_pixelcnn(config: PixelCNNConfig) -> Path:
    run_dir = Path(config.output_dir) / config.name
    last = last_checkpoint(run_dir)
    if last.exists():
        raise UserError(f"{run_dir} already holds a PixelCNN++ run (ssl pixelcnn does not resume); pick another --name")
    device = select_device(config.device)
    config = dataclasses.replace(config, num_workers=resolve_workers(config.num_workers, device))
    configure_threads(config.num_workers, device)
    seed_everything(config.seed)
    train, val, channels = _datasets(config)
    steps_per_epoch = len(train) // config.batch_size
    if steps_per_epoch == 0:
        raise UserError(f"{len(train)} training images are fewer than one batch of {config.batch_size}; lower --batch-size")
    total_steps = config.epochs * steps_per_epoch
    total_steps = min(total_steps, config.max_steps) if config.max_steps else total_steps

    model = PixelCNNPP(channels, config.filters, config.blocks, config.components, config.dropout).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    decay = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    val_images = quantize(next(iter(DataLoader(val, batch_size=len(val))))["image"].to(device))
    save_config(config, run_dir / "config.yaml")
    (run_dir / "samples").mkdir(exist_ok=True)
    console.print(
        f"pixelcnn {config.name}: {len(train)} images of {config.dataset} at {config.image_size}px, lower half; "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; {total_steps} steps on {device.type}"
    )
    step, val_bpd = 0, float("nan")
    with RunLogger(run_dir, total_steps, f"pixelcnn {config.name}", log_every=config.log_every) as logger:
        logger.config(dataclasses.asdict(config))
        model.train()
        while step < total_steps:
            train.set_epoch(step // steps_per_epoch)
            order = torch.Generator().manual_seed(config.seed * 100_003 + step // steps_per_epoch)
            loader = DataLoader(train, config.batch_size, shuffle=True, generator=order, drop_last=True, num_workers=config.num_workers)
            for batch in loader:
                images = quantize(batch["image"].to(device))
                bpd = bits_per_dim(lower_half_nll(model, images), images).mean()
                stop_if_not_finite({"bits_per_dim": bpd.item()}, step + 1, last, "lower --lr")
                optimizer.zero_grad(set_to_none=True)
                bpd.backward()
                optimizer.step()
                decay.step()
                step += 1
                logger.count_images(config.batch_size)
                if step % config.log_every == 0 or step == total_steps:
                    logger.scalars({"loss/bits_per_dim": bpd.item(), "lr": optimizer.param_groups[0]["lr"], "perf/img_per_s": logger.throughput()}, step)
                    logger.advance(step, f"{bpd.item():.3f} bits/dim")
                else:
                    logger.advance(step, "")
                if step % config.sample_every == 0 or step == total_steps:
                    val_bpd, grid = validation_bits(model, val_images, config, config.seed + step)
                    logger.scalars({"val/bits_per_dim": val_bpd}, step)
                    logger.image("val/original|upper_half|sampled", grid, step)
                    save_image(grid, run_dir / "samples" / f"step_{step:07d}.png")
                    logger.print(f"step {step}: validation {val_bpd:.3f} bits/dim (lower half given the upper half)")
                if step == total_steps:
                    break
        save_atomic(
            {"format": PIXELCNN_FORMAT, "version": 1, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "step": step, "image_channels": channels, "config": dataclasses.asdict(config)},
            last,
        )
    console.print(f"done: {step} steps; validation {val_bpd:.4f} bits/dim; checkpoint: {last}")
    return run_dir
