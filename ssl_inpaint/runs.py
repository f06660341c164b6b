"""What every command that trains shares while it writes a run folder: the lock that keeps a second
process out, the run's logger (TensorBoard scalars, images and text, with a progress bar or plain
progress lines), the one resume policy (``refuse_without_resume``, ``refuse_lost_checkpoint``,
``changed_settings``, ``refuse_changes``) and the NaN stop (``stop_if_not_finite``). Seeding and preemption signals are
in ``runtime.py``; where ``last.pt`` lives and how it is written atomically, in ``checkpoint.py``."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Collection, Iterator, Optional

import torch
import yaml
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.tensorboard import SummaryWriter

from ssl_inpaint.checkpoint import last_checkpoint
from ssl_inpaint.errors import UserError
from ssl_inpaint.runtime import console
from ssl_inpaint.storage import LOCK_FILE, cannot_use, check_run_folder, claim_run_folder, make_folder, remove_if_unused, append_yaml_atomic

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

@contextlib.contextmanager
def run_folder_lock(run_dir: Path, command: str, enabled: bool = True) -> Iterator[None]:
    """Claim ``run_dir`` for ``command`` and hold an exclusive lock on it while the run writes there.

    A folder made by another command, or holding files no command marked, is refused before
    anything is written (``storage.check_run_folder``); otherwise the run's marker is its first file.
    The lock keeps a second process out: it stops with the first one's PID instead of interleaving
    checkpoints. It is ``flock`` on RUN/.lock: the kernel drops it when its holder exits, even after
    kill -9, so a crashed run never leaves a stale lock. (No locking where fcntl is missing, i.e. on
    Windows.) A folder this call created is removed again when the run is refused (``UserError``)
    before writing anything but its marker. With ``enabled=False`` (the other processes of a
    distributed run) nothing happens."""
    if not enabled:
        yield
        return
    check_run_folder(run_dir, command)
    created = not run_dir.exists()
    make_folder(run_dir)
    try:
        with _exclusive(run_dir, command):
            yield
    except UserError:
        if created:  # a run refused before it wrote anything leaves no folder behind
            remove_if_unused(run_dir)
        raise


@contextlib.contextmanager
def _exclusive(run_dir: Path, command: str) -> Iterator[None]:
    if fcntl is None:
        claim_run_folder(run_dir, command)
        yield
        return
    try:
        handle = open(run_dir / LOCK_FILE, "a+")
    except OSError as exc:
        raise UserError(cannot_use(run_dir / LOCK_FILE, exc)) from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UserError(
                f"{run_dir} is in use by another process (PID {holder}); wait for it to finish, or choose another --name"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        claim_run_folder(run_dir, command)  # checked again under the lock
        yield
    finally:
        handle.close()  # releases the lock


class RunLogger:
    """TensorBoard scalars/images/text plus a rich progress bar with the loss and throughput.

    In a distributed run only the main process logs; on the others (``enabled=False``) every method
    returns without doing anything.
    """

    def __init__(
        self, run_dir: Path, total_steps: int, description: str, enabled: bool = True, start: int = 0, log_every: int = 10
    ):
        self.enabled = enabled
        self.log_every = max(1, log_every)
        self._images_since = 0
        self._clock = self._started = time.perf_counter()
        self.description, self.total_steps, self._start_step = description, total_steps, start
        # A live bar only makes sense on a terminal; in a log file (nohup, SLURM) it would be one line
        # cropped to 80 columns at the end, so there each logged step prints a plain line instead.
        self.live = console.is_terminal
        if not enabled:
            return
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
        self.task = self.progress.add_task(description, total=total_steps, completed=start, status="")

    def __enter__(self) -> "RunLogger":
        if self.enabled and self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            if self.live:
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

    def elapsed(self) -> float:
        """Seconds since the logger was created."""
        return time.perf_counter() - self._started

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.enabled:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def advance(self, step: int, status: str) -> None:
        """Move the bar to ``step``; without a terminal, a non-empty ``status`` prints a plain line every
        ``log_every`` steps and at the last (step/total, the status, elapsed time and the time left at
        the rate since the start)."""
        if not self.enabled:
            return
        if self.live:
            self.progress.update(self.task, completed=step, status=status)
        elif status and (step % self.log_every == 0 or step == self.total_steps):
            elapsed = self.elapsed()
            done = step - self._start_step
            left = elapsed / done * (self.total_steps - step) if done > 0 else float("nan")
            console.print(
                f"{self.description}: step {step}/{self.total_steps} {status} "
                f"elapsed {_clock(elapsed)} left {_clock(left)}",
                soft_wrap=True,
            )

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if self.enabled:
            self.writer.add_text(tag, text, step)

    def config(self, config: dict[str, Any]) -> None:
        self.text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "```")

    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        if self.enabled:
            self.writer.add_image(tag, image, step)

    def figure(self, tag: str, figure: Any, step: int) -> None:
        """A matplotlib figure into TensorBoard's Images tab (``add_figure`` closes it)."""
        if self.enabled:
            self.writer.add_figure(tag, figure, step)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        if self.enabled:
            self.writer.add_hparams(hparams, metrics, run_name=".")

    def print(self, message: str, *, style: Optional[str] = None) -> None:
        if self.enabled:
            console.print(message, style=style, soft_wrap=not self.live)


def _clock(seconds: float) -> str:
    """h:mm:ss (or --:-- when unknown)."""
    if not seconds == seconds or seconds == float("inf"):
        return "--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def refuse_without_resume(run_dir: Path, resume: bool, what: str = "a trained run") -> None:
    """--no-resume: a run folder that holds a checkpoint is never touched."""
    if last_checkpoint(run_dir).exists() and not resume:
        raise UserError(f"{run_dir} already holds {what} and --no-resume was given; pick another --name")


def refuse_lost_checkpoint(run_dir: Path, products: Collection[str], command: str) -> None:
    """A run that has written what a fresh run would overwrite (its encoder, its epoch checkpoints)
    but whose ``checkpoints/last.pt`` is gone is refused, never silently trained again from scratch."""
    if last_checkpoint(run_dir).exists():
        return
    found = [name for name in products if _holds_something(run_dir / name)]
    if found:
        raise UserError(
            f"{run_dir} holds a run of ssl {command} ({', '.join(found)}) but its {last_checkpoint(run_dir).relative_to(run_dir)} "
            f"is gone, so it cannot be resumed and a fresh run would overwrite it; choose another --name, or delete {run_dir} to start over"
        )


def _holds_something(path: Path) -> bool:
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def changed_settings(saved: dict[str, Any], config: Any) -> dict[str, tuple]:
    """{key: (saved value, value now)} for every field of ``config`` that differs from a run's saved
    config; a key the run did not save (an older version) counts as its default."""
    changes = {}
    for field in dataclasses.fields(config):
        before, now = saved.get(field.name, field.default), getattr(config, field.name)
        if before != now:
            changes[field.name] = (before, now)
    return changes


def record_resume_changes(run_dir: Path, changes: dict[str, tuple], step: int) -> str:
    """Append the settings changed at this resume to RUN/resume_changes.yaml; returns them as text."""
    entries = [{"step": step, "key": k, "old": old, "new": new} for k, (old, new) in changes.items()]
    append_yaml_atomic(entries, run_dir / "resume_changes.yaml")
    return "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())


def refuse_changes(path: Path, changes: dict[str, tuple], may_change: Collection[str] = ()) -> None:
    """The one resume policy of every training command: a resumed run keeps its settings, except
    those in ``may_change``; any other change is refused with each key named."""
    refused = {k: v for k, v in changes.items() if k not in may_change}
    if refused:
        details = ", ".join(f"--{k.replace('_', '-')} {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise UserError(
            f"cannot resume {path} with changed settings ({details}): the checkpoint's state would override them "
            f"or the run would change meaning half-way; use the original settings or a new --name"
        )


def stop_if_not_finite(losses: dict[str, float], step: int, last: Path, fix: str, nonfinite: Optional[bool] = None) -> None:
    """The NaN stop of every training command: one line naming the step (counted from 1) and the
    losses, the fix, and whether a checkpoint survives. ``nonfinite`` overrides the test on
    ``losses`` (a multi-process run decides for all processes at once)."""
    if nonfinite is None:
        nonfinite = not all(math.isfinite(v) for v in losses.values())
    if nonfinite:
        kept = f"the last good checkpoint is kept: {last}" if last.exists() else "no checkpoint had been saved yet"
        values = ", ".join(f"{k} {v:.3g}" for k, v in losses.items())
        raise UserError(f"non-finite loss at step {step} ({values}); {fix}; {kept}")
