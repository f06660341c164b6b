"""What a process needs to run any command: the console, seeding, compute threads and loader workers per
core, precision, samplers that resume mid-epoch, preemption signals, RNG snapshots, and the
compiled/SyncBN module wrappers."""

from __future__ import annotations

import contextlib
import os
import random
import signal
from typing import Any, Iterator, Optional

import numpy as np
import torch
from rich.console import Console
from torch import nn
from torch.utils.data import Dataset
from torch.utils.data.distributed import DistributedSampler

from ssl_inpaint.distributed import Distributed
from ssl_inpaint.errors import UserError

console = Console(stderr=True)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_order(num_items: int, seed: int, epoch: int) -> list[int]:
    """A shuffled order of ``num_items``, a pure function of (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(num_items, generator=generator).tolist()


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a SLURM or container limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


AUTO_WORKERS = -1
NUM_WORKERS_HELP = (
    "DataLoader worker processes; -1: auto (0 on CPU, where the model needs every core and loading in "
    "the main process costs a few % of a step; with CUDA the cores per GPU minus one, at most 8)."
)


def resolve_workers(requested: int, device: torch.device) -> int:
    """The number of DataLoader workers for ``--num-workers`` (``AUTO_WORKERS`` picks one for the device)."""
    if requested >= 0:
        return requested
    if requested != AUTO_WORKERS:
        raise UserError(f"--num-workers must be -1 (auto) or at least 0, got {requested}")
    if device.type != "cuda":
        return 0
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(8, usable_cores() // per_node - 1))


def configure_threads(num_workers: int, device: torch.device) -> int:
    """Give the model the cores that the DataLoader workers leave, and return the intra-op thread count.

    On CPU every loader worker is a process that needs a core of its own while it decodes; PyTorch's
    default of one intra-op thread per core then oversubscribes the machine, and OpenMP threads that
    wait for a preempted sibling spin (measured in issue 12: 2 workers + 2 threads on 2 cores ran the
    M1 pretext at 3.3-3.8 img/s, 0 workers + 2 threads at 4.9-6.2). So on CPU the model gets
    cores / processes-per-node - workers threads (at least one). An explicit OMP_NUM_THREADS is the
    user's choice and is kept; on CUDA the host threads only launch kernels and are left alone."""
    if device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = max(1, usable_cores() // per_node - num_workers)
    torch.set_num_threads(threads)
    return threads


def multi_tensor(device: torch.device) -> dict[str, bool]:
    """Optimizer options that update all parameters in one fused kernel per step instead of a loop over
    tensors, on CPU as on CUDA (PyTorch's default on CPU is the loop). On the M1 networks (88 M
    parameters) an Adam step takes 52 ms fused, 214 ms foreach and 264 ms as the loop on this
    project's 2-core CPU (tools/bench.py's profile). Same arithmetic within float rounding (tested)."""
    return {"fused": True}


def check_precision(precision: str, device: torch.device) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise UserError("--precision fp16 needs a CUDA GPU; on CPU use bf16 or fp32")


def autocast(precision: str, device: torch.device):
    """Mixed-precision context for the forward passes (a no-op for fp32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler, active only for fp16 (bf16 has fp32's exponent range and needs none)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


class ResumableSampler(DistributedSampler):
    """DistributedSampler (shuffled by seed + epoch, same order on every process, each process a
    strided share) that can start part-way into an epoch, for exact resume. Without a process group
    it is the single-process case (num_replicas=1)."""

    def __init__(self, dataset: Dataset, dist: Distributed, seed: int, shuffle: bool = True, drop_last: bool = True):
        super().__init__(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.skip = 0

    def start_at(self, epoch: int, skip: int) -> None:
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.skip :])

    def __len__(self) -> int:
        return self.num_samples - self.skip


class StopSignal:
    """Remembers SIGTERM / SIGUSR1 (SLURM preemption) so the loop can checkpoint and exit cleanly."""

    SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s is not None)

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignal":
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. inside a test runner thread)
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        console.print(f"received {signal.Signals(signum).name}: saving a checkpoint after this step")

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def rng_state() -> dict[str, Any]:
    """Every RNG the process uses, in types ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module behind torch.compile's wrapper (whose state-dict keys gain a prefix)."""
    return getattr(module, "_orig_mod", module)


def prepare_module(module: nn.Module, dist: Distributed, sync_bn: bool, channels_last: bool) -> nn.Module:
    """Move to the device, convert BatchNorm to SyncBatchNorm for multi-GPU runs, set memory format."""
    if dist.enabled and sync_bn and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules()):
        if dist.device.type == "cuda":
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        elif dist.is_main:
            console.print("note: SyncBatchNorm needs CUDA; on CPU BatchNorm statistics stay per process", style="yellow")
    module = module.to(dist.device)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module
