"""Multi-process training: torchrun environment, collectives, and the ``--nproc`` self-launcher.

The same command runs as a single process or under ``torchrun`` (one process per GPU, any number of
nodes): :func:`setup` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and joins the
process group with NCCL on CUDA or Gloo on CPU. Gradients are averaged with one flattened all-reduce
per optimizer step (:func:`average_gradients`) rather than by wrapping models in
DistributedDataParallel: a GAN step runs the discriminators several times per backward and through
frozen parameters, which DDP's bucket bookkeeping does not allow, while an explicit all-reduce is exact
for any such graph (the approach of StyleGAN2-ADA).
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ssl_inpaint.errors import UserError


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} requested but no CUDA GPU is visible; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None


def setup(device_name: str) -> Distributed:
    """Join the torchrun process group if there is one; otherwise a single process on ``device_name``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1 and "TORCHELASTIC_RUN_ID" not in os.environ:  # torchrun with one process still joins its group
        return Distributed(0, 1, 0, select_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), device_id=device if device.type == "cuda" else None)
    global _joined
    _joined = True
    return Distributed(rank, world_size, local_rank, device)


_joined = False  # this process joined a process group (kept after teardown, for its error report)


def joined_a_group() -> bool:
    """Whether this process has been connected to the other processes of a distributed run."""
    return _joined


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params: Iterable[nn.Parameter], world_size: int) -> None:
    """Average the gradients of ``params`` over all processes with one flattened all-reduce."""
    if world_size == 1:
        return
    params = [p for p in params if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def broadcast_module(module: nn.Module, world_size: int) -> None:
    """Make every process start from rank 0's parameters and buffers."""
    if world_size == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def any_flag(flags: Sequence[bool], world_size: int, device: torch.device) -> list[bool]:
    """Element-wise OR of boolean flags over all processes (e.g. 'stop requested', 'loss not finite')."""
    if world_size == 1:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather_rows(array: np.ndarray, indices: np.ndarray, world_size: int, total: int) -> np.ndarray:
    """Reassemble per-sample rows computed on dataset shards into dataset order.

    Each process passes the rows it computed and their dataset indices; rows for indices seen twice
    (DistributedSampler pads the last shard with repeats) are kept once, so the result equals what a
    single process computes on the whole dataset.
    """
    if world_size == 1:
        pieces = [(array, indices)]
    else:
        pieces = [None] * world_size
        dist.all_gather_object(pieces, (array, indices))
    out = np.zeros((total, *array.shape[1:]), dtype=array.dtype)
    seen = np.zeros(total, dtype=bool)
    for rows, idx in pieces:
        out[idx] = rows
        seen[idx] = True
    if not seen.all():
        raise RuntimeError(f"{int((~seen).sum())} samples were evaluated by no process")
    return out


def barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()


def relaunch_under_torchrun(nproc: int) -> None:
    """``ssl <command> ... --nproc N`` (or ``nproc: N`` in a recipe): run torchrun's launcher here,
    starting the same command line N times on this machine, then exit with their status. The
    children see torchrun's WORLD_SIZE and run the command itself. When a child fails, its own error
    line (and the others' "stopped because another process failed") is what the user reads: the
    launcher's report of the failure, a traceback of its own, is replaced by one line, exit status 2."""
    if nproc <= 1 or "WORLD_SIZE" in os.environ:
        return
    args, skip = [], False
    for arg in sys.argv[1:]:  # drop --nproc: torchrun's parser would take it for its own --nproc-per-node
        if skip or arg.startswith("--nproc="):
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        args.append(arg)
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its per-child lines repeat the children's
    try:
        torchrun(["--standalone", f"--nproc-per-node={nproc}", "-m", "ssl_inpaint", *args])
    except ChildFailedError as exc:
        rank, first = exc.get_first_failure()  # the others were stopped by the launcher or by the broken connection
        raise UserError(f"process {rank} of {nproc} failed first (exit status {first.exitcode}); its error line is above") from None
    sys.exit(0)
