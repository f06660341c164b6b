"""What every engine needs: device choice, seeding, and the run's logger (TensorBoard + progress)."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.tensorboard import SummaryWriter

from ssl_inpaint.errors import UserError

console = Console(stderr=True)


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} requested but no CUDA GPU is visible; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_order(num_items: int, seed: int, epoch: int) -> list[int]:
    """The shuffled sample order of an epoch, a pure function of (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_items, generator=generator).tolist()


class RunLogger:
    """TensorBoard scalars/images/text plus a rich progress bar with the loss and throughput."""

    def __init__(self, run_dir: Path, total_steps: int, description: str):
        self.writer = SummaryWriter(log_dir=str(run_dir))
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task(description, total=total_steps, status="")
        self._images_since = 0
        self._clock = time.perf_counter()

    def __enter__(self) -> "RunLogger":
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()
        self.writer.close()

    def count_images(self, n: int) -> None:
        self._images_since += n

    def throughput(self) -> float:
        """Images per second since the last call."""
        now = time.perf_counter()
        rate = self._images_since / max(now - self._clock, 1e-9)
        self._images_since, self._clock = 0, now
        return rate

    def scalars(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def advance(self, step: int, status: str) -> None:
        self.progress.update(self.task, completed=step, status=status)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)

    def config(self, config: dict[str, Any]) -> None:
        self.text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "```")

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        self.writer.add_image(tag, image, step)

    def print(self, message: str, *, style: Optional[str] = None) -> None:
        self.progress.console.print(message, style=style)
