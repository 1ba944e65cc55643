"""Where a run executes: the device, CPU threads, the data-parallel process group, mixed precision, seeding.

* :func:`resolve_device` — ``"auto" | "cpu" | "cuda[:k]"`` to a :class:`torch.device`, refusing CUDA where there is
  none;
* :func:`set_cpu_threads` — on CPU, torch gets the cores the DataLoader workers leave;
* :func:`init_distributed` — join the process group ``torchrun`` started (NCCL on GPU, gloo on CPU);
* :func:`autocast` — bfloat16 autocast when asked (training and evaluation use the same one);
* :func:`chunk_seed` / :func:`seed_chunk` — every random draw of a run is a function of ``(seed, chunk, rank)``,
  which is what makes ``--resume`` exact.
"""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
import torch.distributed as dist

from .config import ConfigError

__all__ = ["resolve_device", "set_cpu_threads", "init_distributed", "autocast", "chunk_seed", "seed_chunk"]


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` where CUDA is absent is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available on this machine; use device=cpu or device=auto")
    return dev


def set_cpu_threads(device: torch.device, workers: int) -> int:
    """On CPU, give torch the cores that the DataLoader workers (and other ranks on this machine) leave free.

    Oversubscribed OpenMP threads spin against the loader processes: on 2 cores, 2 torch threads + 1 worker made
    a lab training step 8-15x slower than 1 thread + 1 worker (BENCHMARKS.md). ``OMP_NUM_THREADS``, when set, caps
    the count (``tools/lanes.py`` runs two chapters side by side with one thread each). Returns the thread count."""
    if device.type != "cpu":
        return torch.get_num_threads()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    n = max(1, (os.cpu_count() or 1) // local - workers)
    cap = os.environ.get("OMP_NUM_THREADS", "").strip()
    if cap.isdigit() and int(cap) > 0:
        n = min(n, int(cap))
    torch.set_num_threads(n)
    return n


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the process group started by ``torchrun`` (``WORLD_SIZE > 1``) -> ``(rank, world_size, device)``.
    NCCL on GPU (one GPU per process, ``LOCAL_RANK``), gloo on CPU. A single process returns ``(0, 1, device)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on ``device`` when ``enabled`` (no loss scaling needed), else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def chunk_seed(seed: int, chunk: int, rank: int = 0, stream: int = 0) -> int:
    """A 63-bit seed derived from (seed, chunk, rank, stream) (NumPy SeedSequence, no collisions by sum)."""
    state = np.random.SeedSequence([seed, chunk, rank, stream]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def seed_chunk(seed: int, chunk: int, rank: int = 0) -> None:
    """Seed torch (CPU and CUDA), NumPy and Python RNGs for chunk ``chunk`` of rank ``rank``."""
    s = chunk_seed(seed, chunk, rank)
    torch.manual_seed(s)
    np.random.seed(s % (2 ** 32))
    random.seed(s)
