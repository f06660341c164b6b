"""``ssl pixelcnn``: seed 002's PixelCNN++ completing the lower half of images.

A likelihood model, not a GAN: the loss is the negative log-likelihood of the lower half's pixels
given everything before them in raster order (the whole upper half, and the lower half's earlier
pixels), reported in bits per dimension (nats / (lower-half pixels x channels x ln 2)). The
validation images get their lower half sampled pixel by pixel.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.utils import make_grid

from ssl_inpaint.checkpoint import PIXELCNN_FORMAT, last_checkpoint, load_checkpoint
from ssl_inpaint.storage import save_atomic, save_png_atomic
from ssl_inpaint.config import save_config
from ssl_inpaint.data import SubsetSource, create_source
from ssl_inpaint.masks import PretextDataset
from ssl_inpaint.distributed import select_device
from ssl_inpaint.runs import RunLogger, changed_settings, refuse_changes, refuse_lost_checkpoint, refuse_without_resume, run_folder_lock, stop_if_not_finite
from ssl_inpaint.runtime import console, epoch_order, seed_everything
from ssl_inpaint.runtime import StopSignal, configure_threads, resolve_workers, rng_state, set_rng_state
from ssl_inpaint.errors import UserError
from ssl_inpaint.models.pixelcnn import mixture_log_prob
from ssl_inpaint.masks import create_mask_generator
from ssl_inpaint.metrics import to_unit
from ssl_inpaint.models.pixelcnn import PixelCNNPP, quantize, sample_lower_half
from ssl_inpaint.options.pixelcnn import PixelCNNConfig, RESUMABLE


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
    with run_folder_lock(Path(config.output_dir) / config.name, "pixelcnn"):
        return _run_pixelcnn(config)


@dataclass
class PixelCNNRun:
    """What one ``ssl pixelcnn`` run holds while it trains; ``checkpoint()`` is all of its state."""

    config: PixelCNNConfig
    run_dir: Path
    model: PixelCNNPP
    optimizer: torch.optim.Optimizer
    decay: torch.optim.lr_scheduler.ExponentialLR
    val_images: torch.Tensor
    channels: int
    steps_per_epoch: int
    total_steps: int
    step: int = 0
    val_bpd: float = float("nan")

    @property
    def last(self) -> Path:
        return last_checkpoint(self.run_dir)

    def checkpoint(self) -> dict:
        return {
            "format": PIXELCNN_FORMAT, "version": 2, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "decay": self.decay.state_dict(), "rng": rng_state(), "step": self.step, "image_channels": self.channels,
            "config": dataclasses.asdict(self.config),
        }

    def resume(self) -> None:
        """Continue from RUN/checkpoints/last.pt under the one resume policy (only RESUMABLE settings may differ)."""
        state = load_checkpoint(self.last, PIXELCNN_FORMAT)
        if "rng" not in state:
            raise UserError(f"{self.last} was written by an older ssl pixelcnn that could not resume; pick another --name")
        refuse_changes(self.last, changed_settings(state["config"], self.config), RESUMABLE)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.decay.load_state_dict(state["decay"])
        set_rng_state(state["rng"])
        self.step = state["step"]


def log_validation(run: PixelCNNRun, logger: RunLogger) -> None:
    run.val_bpd, grid = validation_bits(run.model, run.val_images, run.config, run.config.seed + run.step)
    logger.scalars({"val/bits_per_dim": run.val_bpd}, run.step)
    logger.image("val/original|upper_half|sampled", grid, run.step)
    save_png_atomic(grid, run.run_dir / "samples" / f"step_{run.step:07d}.png")
    logger.print(f"step {run.step}: validation {run.val_bpd:.3f} bits/dim (lower half given the upper half)")


def pixelcnn_epoch(run: PixelCNNRun, train: PretextDataset, logger: RunLogger, stop: StopSignal) -> bool:
    """Steps from ``run.step`` to the end of its epoch or of the run; True when a signal stopped it.
    A resumed epoch skips the batches it had done, so every later batch is the one an uninterrupted
    run draws (the shuffling is seeded by epoch, crops and holes by image)."""
    config, device = run.config, run.val_images.device
    epoch, position = divmod(run.step, run.steps_per_epoch)
    train.set_epoch(epoch)
    order = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    loader = DataLoader(train, config.batch_size, shuffle=True, generator=order, drop_last=True, num_workers=config.num_workers)
    for batch in itertools.islice(loader, position, None):
        images = quantize(batch["image"].to(device))
        bpd = bits_per_dim(lower_half_nll(run.model, images), images).mean()
        stop_if_not_finite({"bits_per_dim": bpd.item()}, run.step + 1, run.last, "lower --lr")
        run.optimizer.zero_grad(set_to_none=True)
        bpd.backward()
        run.optimizer.step()
        run.decay.step()
        run.step += 1
        logger.count_images(config.batch_size)
        if run.step % config.log_every == 0 or run.step == run.total_steps:
            logger.scalars({"loss/bits_per_dim": bpd.item(), "lr": run.optimizer.param_groups[0]["lr"], "perf/img_per_s": logger.throughput()}, run.step)
            logger.advance(run.step, f"{bpd.item():.3f} bits/dim")
        else:
            logger.advance(run.step, "")
        if run.step % config.sample_every == 0 or run.step == run.total_steps:
            log_validation(run, logger)
        if run.step == run.total_steps:
            return False
        if stop.received is not None:
            return True
    return False


def setup_pixelcnn(config: PixelCNNConfig, run_dir: Path) -> tuple[PixelCNNRun, PretextDataset]:
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
    run = PixelCNNRun(config, run_dir, model, optimizer, decay, val_images, channels, steps_per_epoch, total_steps)
    if run.last.exists():
        run.resume()
        console.print(f"resuming {run_dir} from step {run.step}")
    save_config(config, run_dir / "config.yaml")
    (run_dir / "samples").mkdir(exist_ok=True)
    console.print(
        f"pixelcnn {config.name}: {len(train)} images of {config.dataset} at {config.image_size}px, lower half; "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; {total_steps} steps on {device.type}"
    )
    return run, train


def _run_pixelcnn(config: PixelCNNConfig) -> Path:
    run_dir = Path(config.output_dir) / config.name
    refuse_without_resume(run_dir, config.resume, "a PixelCNN++ run")
    refuse_lost_checkpoint(run_dir, ("samples",), "pixelcnn")
    run, train = setup_pixelcnn(config, run_dir)
    with RunLogger(run_dir, run.total_steps, f"pixelcnn {config.name}", start=run.step, log_every=config.log_every) as logger, StopSignal() as stop:
        logger.config(dataclasses.asdict(run.config))
        run.model.train()
        while run.step < run.total_steps:
            if pixelcnn_epoch(run, train, logger, stop):
                save_atomic(run.checkpoint(), run.last)
                logger.print(f"stopped at step {run.step} by a signal; {run.last} saved - rerun the same command to resume")
                return run_dir
        save_atomic(run.checkpoint(), run.last)
    console.print(f"done: {run.step} steps; validation {run.val_bpd:.4f} bits/dim; checkpoint: {run.last}")
    return run_dir
