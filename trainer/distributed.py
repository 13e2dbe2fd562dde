"""Process-group helpers: one process without a launcher, ``deepspeed`` or ``torchrun``."""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_process_group() -> tuple[int, int, torch.device]:
    """Join (or create) the process group; returns ``(rank, world_size, device)``.

    Without a launcher DeepSpeed looks for mpi4py or asserts on LOCAL_RANK (environment
    notes), so a lone process gets rank 0 of 1 on a free loopback port.
    """
    import deepspeed

    if "RANK" not in os.environ:
        os.environ.update(
            RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(_free_port()),
        )  # fmt: skip
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        with extension_load_guard():
            deepspeed.init_distributed(dist_backend=backend)
    return dist.get_rank(), dist.get_world_size(), device


@contextmanager
def extension_load_guard() -> Iterator[None]:
    """DeepSpeed JIT-loads C++ ops at init (``deepspeed_shm_comm`` on CPU), and torch guards
    every load with a lock file. A process killed inside that window (a Ctrl-C while a trainer
    starts) leaves the file behind, and every later load on the machine waits for it forever.

    Every trainer holds a shared ``flock`` while it initializes (the kernel drops it whatever
    kills the process). One that gets it exclusively first, when no other trainer is starting,
    knows any DeepSpeed lock file left is stale and removes it. The ranks of one launch start
    side by side under the shared lock (the rendezvous needs them all). Not covered: a trainer
    killed mid-load while another one is starting."""
    from torch.utils.cpp_extension import get_default_build_root

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    root.mkdir(parents=True, exist_ok=True)
    with (root / "rlmec-load.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another trainer is starting: its lock files may be live
        else:
            for stale in [*root.glob("deepspeed_*/lock"), *root.glob("*/deepspeed_*/lock")]:
                stale.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_SH)
        yield


def all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """Sum of each value over all ranks (float64, so token counts stay exact)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_min(values: Sequence[float], device: torch.device) -> list[float]:
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t.tolist()


def all_gather_objects(obj: Any) -> list[Any]:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
