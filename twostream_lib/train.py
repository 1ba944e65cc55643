"""The training loop of one stream (paper §5 "Training", §4 multitask), schedules by iteration::

    python -m twostream_lib train configs/lab_spatial.yaml max_iters=300 lr=0.02 [--resume]
    torchrun --nproc_per_node 4 -m twostream_lib train configs/ucf101_temporal.yaml      # data parallel

What a run does (the paper's recipe, §5):

- each iteration draws ``batch_size`` training videos uniformly across classes, one random frame (spatial) or
  flow stack (temporal) each, randomly cropped and flipped (:class:`twostream_lib.data.BalancedSampler`);
- mini-batch SGD with momentum 0.9; the learning rate is multiplied by ``lr_gamma`` at each iteration in
  ``lr_steps`` (scratch: 1e-2 -> 1e-3 at 50K -> 1e-4 at 70K, stop at 80K; fine-tuning: 1e-3 at 14K, stop at 20K);
- multitask (§4): one trunk, one softmax head per dataset, each head's loss on its own dataset's samples, summed;
- model selection on a held-out part of the *training* videos (video-level, §6 protocol with fewer views),
  never the test split; the best net is kept as ``best.pt``.

Reproducibility and resume: iterations are grouped in chunks of ``ckpt_every``. At the start of chunk ``c``
the sampler (``set_epoch(c)``) and the torch / NumPy / Python RNGs are seeded from ``(seed, c, rank)``, each
sample's random choices come from its own seed (``(seed, c)`` and its position in the chunk), and ``last.pt`` is
written at the end of each chunk. The data order and every random draw are therefore a function of ``(seed,
iteration)``, whatever the loader (``loader``, ``workers``): ``--resume`` from ``last.pt``, with the same or
another loader, ends with the same weights as a run that was never interrupted (bit for bit on CPU).

A run folder belongs to one run. A new run refuses an ``out_dir`` that holds another run's files (``config.yaml``,
``log.csv``, ``last.pt``, ``best.pt``) and changes nothing in it: continue that run with ``--resume`` (its
settings must match, see :data:`RESUME_MAY_CHANGE`) or choose another ``out_dir``. One process at a time may
write a run folder (a lock).

Data parallel (``torchrun``): one process per GPU (NCCL) or per CPU group (gloo), each with ``batch_size /
world_size`` samples of the same global batch (the global sample order doesn't depend on the number of
processes), :class:`~torch.nn.parallel.DistributedDataParallel` averaging the gradients; each process's loss is
its share of the global batch's loss (each task's loss divided by the task's count in the *global* batch), so
any number of processes computes the gradient of one process holding the whole batch. Rank 0 logs and writes
checkpoints.

Outputs in ``out_dir``: ``config.yaml``, ``log.csv`` (step, lr, loss, acc, val_acc, samples_per_s),
``last.pt`` and ``best.pt`` (checkpoint dicts, :mod:`twostream_lib.checkpoint`), ``tb/`` (TensorBoard scalars).
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import (init_weights_sha256, load_checkpoint, load_matching_weights, make_checkpoint, save_checkpoint,
                         set_rng_state)
from .config import PATH_KEYS, ConfigError, TrainConfig, load_config, same_place, save_config
from .data import BalancedSampler, RunData, SeededSamples, build_datasets, sample_seeds
from .device_loader import DeviceLoader
from .errors import ArgumentParser, run_cli
from .evaluate import video_score_sums
from .files import FolderLock
from .models import build_model_for, multitask_loss, set_finetune_mode
from .runtime import autocast, chunk_seed, init_distributed, resolve_device, seed_chunk, set_cpu_threads

__all__ = ["ChunkSampler", "make_train_loader", "train_step", "train_one_chunk", "measure_step", "validate",
           "RunState", "check_run_folder", "changed_settings", "finished_run", "train", "main", "RESUME_MAY_CHANGE",
           "RUN_FILES"]

LOG_FIELDS = ["step", "lr", "loss", "acc", "val_acc", "samples_per_s"]
#: settings that may differ between a checkpoint and the run resuming it (they don't change what is learnt)
RESUME_MAY_CHANGE = ("resume", "max_iters", "workers", "device", "log_every", "tensorboard", "compile", "loader",
                     "cache_memory_mb", "name")
#: the files that make a folder a run's
RUN_FILES = ("config.yaml", "log.csv", "last.pt", "best.pt")


# ---------------------------------------------------------------------------------------------- data order
class ChunkSampler(torch.utils.data.Sampler[int]):
    """The indices one process loads during one chunk of iterations.

    The global order is ``sampler``'s (e.g. :class:`data.BalancedSampler`, seeded with ``set_epoch(chunk)``),
    cut into global batches of ``global_batch``; batch ``k`` of rank ``r`` is the ``r``-th slice of global batch
    ``k``. Batches ``start .. stop-1`` of the chunk are yielded, so a run restarted in the middle of a chunk
    skips the first ones without loading them.
    """

    def __init__(self, sampler: Sequence[int] | torch.utils.data.Sampler, global_batch: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            raise ConfigError(f"batch_size {global_batch} is not divisible by the {world_size} processes")
        self.order = list(iter(sampler))
        need = stop * global_batch
        if len(self.order) < need:
            raise ValueError(f"ChunkSampler: the sampler gave {len(self.order)} indices, need {need}")
        self.global_batch, self.start, self.stop = global_batch, start, stop
        self.rank, self.world = rank, world_size
        self.local_batch = global_batch // world_size

    def positions(self) -> Iterator[int]:
        """Each yielded index's position in the chunk's global order (the same on every rank and world size)."""
        for k in range(self.start, self.stop):
            base = k * self.global_batch + self.rank * self.local_batch
            yield from range(base, base + self.local_batch)

    def __iter__(self) -> Iterator[int]:
        return (self.order[p] for p in self.positions())

    def __len__(self) -> int:
        return (self.stop - self.start) * self.local_batch


def make_train_loader(run_data: RunData, cfg: TrainConfig, chunk: int, start: int, stop: int, rank: int = 0,
                      world_size: int = 1, device: torch.device | None = None):
    """The batches of iterations ``chunk*ckpt_every + [start, stop)``: per-rank batches of ``batch_size /
    world_size``, videos drawn uniformly across classes (§5), order and random draws seeded by ``(seed, chunk)``.

    ``loader: cpu`` — a DataLoader (``workers`` processes) building samples on the CPU; ``loader: device`` — a
    :class:`~twostream_lib.device_loader.DeviceLoader` decoding and augmenting whole batches on ``device``. Every
    sample draws its crop, flip, jitter and frame from its own seed (:func:`~twostream_lib.data.sample_seeds`:
    the chunk's seed + its position in the chunk), so both loaders, any ``workers`` and any ``start`` build the
    same samples, and torch's global RNG (dropout) is left to the model."""
    sampler = BalancedSampler(run_data.labels, num_samples=cfg.ckpt_every * cfg.batch_size, seed=cfg.seed)
    sampler.set_epoch(chunk)
    cs = ChunkSampler(sampler, cfg.batch_size, start, stop, rank, world_size)
    base = chunk_seed(cfg.seed, chunk, stream=1)
    seeds = sample_seeds(base, cs.positions())
    if cfg.loader == "device":
        return DeviceLoader(run_data.train, list(cs), cs.local_batch, seeds=seeds, device=device)
    return torch.utils.data.DataLoader(SeededSamples(run_data.train), batch_size=cs.local_batch,
                                       sampler=list(zip(cs, seeds)), drop_last=True, num_workers=cfg.workers,
                                       pin_memory=device is not None and device.type == "cuda",
                                       generator=torch.Generator().manual_seed(base),  # not the global RNG's
                                       persistent_workers=False)


# ---------------------------------------------------------------------------------------------- one iteration
def _loss_and_correct(out, y: torch.Tensor, t: torch.Tensor | None, world_size: int):
    """This process's share of the global batch's loss — cross-entropy, or the multitask sum of per-head losses
    (§4), each divided by its count over all processes — and the number of correct predictions here."""
    if t is None:
        out = out.float()
        loss = F.cross_entropy(out, y, reduction="sum") / (y.numel() * world_size)  # equal batches per process
        return loss, (out.argmax(1) == y).sum()
    out = [o.float() for o in out]
    counts = torch.bincount(t, minlength=len(out)).float()
    if world_size > 1:
        dist.all_reduce(counts)
    correct = sum((o[t == k].argmax(1) == y[t == k]).sum() for k, o in enumerate(out))
    return multitask_loss(out, y, t, task_counts=counts), correct


def train_step(model: nn.Module, batch: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer,
               scheduler, device: torch.device, amp: bool = False, channels_last: bool = False,
               world_size: int = 1) -> dict:
    """One SGD iteration on one batch ``(x (B, C, H, W), y (B,)[, task_id (B,)])`` -> ``dict(loss, correct, n)``
    over all processes. A non-finite loss raises :class:`FloatingPointError` before the weights change."""
    x = batch[0].to(device, non_blocking=True)
    y = batch[1].to(device, non_blocking=True).long()
    t = batch[2].to(device, non_blocking=True).long() if len(batch) > 2 else None
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, amp):
        out = model(x)
    loss, correct = _loss_and_correct(out, y, t, world_size)
    stats = torch.stack([loss.detach().float(), correct.float(), torch.tensor(float(y.numel()), device=device)])
    if world_size > 1:
        dist.all_reduce(stats)
    loss_value, n_correct, n = stats.tolist()
    if not math.isfinite(loss_value):
        raise FloatingPointError(f"loss is {loss_value}")
    optimizer.zero_grad(set_to_none=True)
    (loss * world_size).backward()  # DDP averages over processes: x world_size = the global batch's gradient
    optimizer.step()
    scheduler.step()
    return {"loss": loss_value, "correct": n_correct, "n": n}


def train_one_chunk(model, loader, optimizer, scheduler, device, step: int, cfg: TrainConfig,
                    world_size: int = 1, on_step=None) -> int:
    """Run the iterations of one loader (one chunk, like torchvision's ``train_one_epoch``); ``on_step(step,
    stats)`` is called after each. Returns the new iteration count."""
    model.train()
    for batch in loader:
        try:
            stats = train_step(model, batch, optimizer, scheduler, device, cfg.amp, cfg.channels_last, world_size)
        except FloatingPointError as e:
            raise FloatingPointError(f"iteration {step + 1}: {e}") from None
        step += 1
        if on_step is not None:
            on_step(step, stats)
    return step


def measure_step(cfg: TrainConfig, num_classes: Sequence[int], device: torch.device | str, iters: int = 5,
                 warmup: int = 3, batch: int | None = None, budget_s: float = 30.0) -> float:
    """Seconds per training iteration of ``cfg`` on ``device`` (its net, input shape, AMP and memory format;
    SGD on random inputs of ``batch`` samples, default ``cfg.batch_size``, scaled to ``cfg.batch_size``): the
    median of ``iters`` iterations after ``warmup`` (the first iterations are several times slower), fewer when
    they pass ``budget_s`` (at least one of each). Data loading is not included: a lower bound for planning."""
    device = torch.device(device)
    b = max(1, min(int(batch or cfg.batch_size), cfg.batch_size))
    model = build_model_for(cfg, list(num_classes)).to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6, momentum=cfg.momentum)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, cfg.in_channels, cfg.crop_size, cfg.crop_size, generator=g)
    task = torch.arange(b) % len(num_classes)
    y = torch.stack([torch.randint(0, int(num_classes[int(k)]), (), generator=g) for k in task])
    one = (x, y, task) if len(num_classes) > 1 else (x, y)
    model.train()
    seconds: list[float] = []
    start = time.perf_counter()
    for i in range(max(1, warmup) + max(1, iters)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        train_step(model, one, opt, sched, device, cfg.amp, cfg.channels_last)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= max(1, warmup) or (i and time.perf_counter() - start > budget_s / 2):
            seconds.append(time.perf_counter() - t0)
        if seconds and time.perf_counter() - start > budget_s:
            break
    return float(np.median(seconds)) * cfg.batch_size / b


@torch.no_grad()
def validate(model: nn.Module, val_sets: Sequence, cfg: TrainConfig, device: torch.device, rank: int = 0,
             world_size: int = 1) -> dict:
    """Video-level accuracy on the held-out training videos (§6 protocol with ``val_frames`` frames x
    ``val_crops`` crops). Videos are shared among processes, scores summed over them.
    Returns ``{"val_acc": mean over tasks, "val_acc_<k>": per task}``."""
    was_training = model.training
    accs = {}
    for k, ds in enumerate(val_sets):
        # share the videos among processes: process r takes the items of videos r, r + W, r + 2W, ...
        video_of_item = np.asarray(getattr(ds, "video_index", np.arange(len(ds))))
        mine = np.flatnonzero(video_of_item % world_size == rank).tolist()
        sums, counts = video_score_sums(model, ds, device, batch_videos=cfg.val_batch_videos, progress=False,
                                        task=k if len(val_sets) > 1 else None, indices=mine,
                                        workers=cfg.workers, amp=cfg.amp, channels_last=cfg.channels_last)
        if world_size > 1:
            if sums.shape[1] == 0:  # this process had no video
                sums = torch.zeros(len(counts), _head_size(model, k), dtype=torch.float64)
            both = torch.cat([sums, counts[:, None]], 1).to(device)
            dist.all_reduce(both)
            sums, counts = both[:, :-1].cpu(), both[:, -1].cpu()
        scores = (sums / counts[:, None]).numpy()
        labels = np.asarray(ds.labels)
        accs[f"val_acc_{k}"] = float((scores.argmax(1) == labels).mean()) if len(labels) else float("nan")
    model.train(was_training)
    accs["val_acc"] = float(np.mean(list(accs.values()))) if accs else float("nan")
    return accs


def _head_size(model: nn.Module, task: int) -> int:
    heads = getattr(model, "heads", None)
    head = heads[task] if heads is not None else getattr(model, "head", None)
    if head is None:
        raise ValueError("validate: can't tell the number of classes of a process with no validation video")
    return head.out_features


# ---------------------------------------------------------------------------------------------- the log
class RunLog:
    """The run's progress bar and ``log.csv`` (+ TensorBoard) rows: the mean loss and accuracy of the training
    batches since the previous row, validation accuracy, samples/s (validation time excluded). Rank 0 writes;
    on resume the rows up to the resumed iteration are kept."""

    def __init__(self, out_dir: Path, cfg: TrainConfig, num_tasks: int, start_step: int, enabled: bool,
                 progress: bool):
        self.enabled, self.path = enabled, out_dir / "log.csv"
        self.fields = LOG_FIELDS + ([f"val_acc_{k}" for k in range(num_tasks)] if num_tasks > 1 else [])
        self.rows: list[dict] = self._read(start_step) if enabled and start_step > 0 else []
        self.tb = self.bar = None
        self._reset()
        if not enabled:
            return
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields)
            w.writeheader()
            w.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in self.fields} for r in self.rows)
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional dependency
                self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=start_step if start_step > 0 else None)
            except ImportError as e:
                warnings.warn(f"TensorBoard logging off: {e}")
        if progress:
            self.bar = tqdm(total=cfg.max_iters, initial=start_step, desc=cfg.name, unit="it", dynamic_ncols=True)

    def _read(self, upto: int) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            rows = [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(f)]
        for r in rows:
            r["step"] = int(r["step"])  # an int again, so a re-written log reads back the same
        return [r for r in rows if r["step"] <= upto]

    def _reset(self) -> None:
        self.loss = self.correct = self.n = self.excluded = 0.0
        self.t0 = time.perf_counter()

    def add(self, stats: dict, lr: float) -> None:
        """One iteration's training statistics."""
        self.loss += stats["loss"] * stats["n"]
        self.correct += stats["correct"]
        self.n += stats["n"]
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{lr:.0e}")

    def exclude(self, seconds: float) -> None:
        """Time spent outside training (validation), left out of samples/s."""
        self.excluded += seconds

    def write(self, step: int, lr: float, val: dict | None) -> None:
        """A row for iteration ``step``: the training window since the previous row, and ``val`` if given."""
        dt = time.perf_counter() - self.t0 - self.excluded
        row = {"step": step, "lr": lr, "loss": self.loss / self.n if self.n else None,
               "acc": self.correct / self.n if self.n else None, "val_acc": (val or {}).get("val_acc"),
               "samples_per_s": self.n / dt if self.n and dt > 0 else None}
        row.update({k: v for k, v in (val or {}).items() if k in self.fields})
        row = {k: row.get(k) for k in self.fields}
        self.rows.append(row)
        self._reset()
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow({k: ("" if v is None else v) for k, v in row.items()})
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and v is not None and not (isinstance(v, float) and math.isnan(v)):
                    self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        for h in (self.bar, self.tb):
            if h is not None:
                h.close()


# ---------------------------------------------------------------------------------------------- the run
@dataclass
class RunState:
    """What a run carries from one iteration to the next, and what ``last.pt`` stores."""

    model: nn.Module  # the net itself (not its DDP / compiled wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    step: int = 0
    best_val: float = -math.inf
    best_step: int = -1
    val_acc: float | None = None

    def checkpoint(self, cfg: TrainConfig, data: RunData, resumable: bool = True) -> dict:
        """``last.pt`` (``resumable``: with optimiser, scheduler and RNG states) or a net-only checkpoint."""
        opt = dict(optimizer=self.optimizer, scheduler=self.scheduler) if resumable else {}
        return make_checkpoint(self.model, cfg, self.step, data.classes, val_acc=self.val_acc,
                               best_val=self.best_val if self.best_step >= 0 else None, best_step=self.best_step,
                               **opt)


def check_run_folder(out_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from, or ``None`` for a fresh start; refuses (:class:`ConfigError`) an
    ``out_dir`` holding another run's files, which stay untouched, and an ``out_dir`` that is a file."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out_dir={out_dir} is a file, not a folder; give a folder for the run (out_dir=...)")
    last = out_dir / "last.pt"
    if resume and last.is_file():
        return last
    present = [f for f in RUN_FILES if (out_dir / f).exists()]
    if not present or (resume and not (out_dir / "best.pt").exists()):
        return None  # an empty folder, or resuming a run that never wrote a checkpoint: start at iteration 0
    if resume:
        raise ConfigError(f"{out_dir} holds best.pt but no last.pt: that run can't be resumed, and is kept as it "
                          f"is; give another out_dir=")
    raise ConfigError(f"{out_dir} already holds a run ({', '.join(present)}); nothing was changed. Continue it with "
                      f"--resume (resume=true), or give another out_dir=")


def new_run_state(cfg: TrainConfig, data: RunData, model: nn.Module | None, device: torch.device,
                  verbose: bool) -> RunState:
    """The net (initial weights a function of ``cfg.seed``, or ``init_from``'s), its trainable parameters
    (``finetune``, Table 1a), SGD with momentum and the step schedule (§5)."""
    if model is None:
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        model = build_model_for(cfg, data.num_classes)
    if cfg.init_from:
        fresh = load_matching_weights(model, cfg.init_from)
        if verbose and fresh:
            print(f"init_from {cfg.init_from}: freshly initialised {', '.join(fresh)}")
    params = set_finetune_mode(model, cfg.finetune) if hasattr(model, "trunk") else list(model.parameters())
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.lr_steps), gamma=cfg.lr_gamma)
    return RunState(model, optimizer, scheduler)


def changed_settings(ckpt: dict, cfg: TrainConfig) -> dict:
    """The settings in which ``cfg`` differs from the run that wrote checkpoint ``ckpt`` (those a resumed run
    may change, :data:`RESUME_MAY_CHANGE`, aside): ``{key: (checkpoint's value, cfg's value)}``; also the weights
    ``init_from`` names, when they are no longer those the run started from (its ``init_sha256``). Paths are
    compared as places (:data:`~twostream_lib.config.PATH_KEYS`; the checkpoint's relative paths from the directory
    it was trained in, so the command line's ``data/...`` is a chapter's ``../data/...``), and ``out_dir`` not at
    all: the checkpoint was found in
    ``cfg.out_dir``, so a run folder moved or named another way is still the same run."""
    changed = {}
    for k, v in ckpt["config"].items():
        now = getattr(cfg, k, v)
        if k in RESUME_MAY_CHANGE or k == "out_dir" or (same_place(v, now, ckpt.get("cwd")) if k in PATH_KEYS
                                                           else now == v):
            continue
        changed[k] = (v, now)
    was = ckpt.get("init_sha256")  # the weights it started from (init_from): the same file may hold others now
    if was and cfg.init_from and "init_from" not in changed:
        now = init_weights_sha256(cfg)
        if now != was:
            changed["init_from's weights"] = (f"sha256 {was[:12]}", f"sha256 {now[:12]}" if now else "no such file")
    return changed


def finished_run(cfg: TrainConfig) -> dict | None:
    """The last checkpoint of ``cfg.out_dir`` when that folder holds this very run (same settings), finished
    (``max_iters`` reached) and to be reused (``cfg.resume``); otherwise ``None``."""
    out = Path(cfg.out_dir)
    if not (cfg.resume and (out / "last.pt").is_file() and (out / "best.pt").is_file()):
        return None
    ckpt = load_checkpoint(out / "last.pt")
    return None if changed_settings(ckpt, cfg) or int(ckpt["step"]) < cfg.max_iters else ckpt


def resume_run(state: RunState, cfg: TrainConfig, path: Path, verbose: bool) -> None:
    """Continue from ``last.pt`` exactly (weights, optimiser, schedule, RNGs); a checkpoint trained with other
    settings is another experiment: refused, naming the differences."""
    ckpt = load_checkpoint(path, map_location="cpu")  # RNG states must stay CPU tensors
    changed = changed_settings(ckpt, cfg)
    if changed:
        raise ConfigError(f"{path}: cannot resume, the checkpoint was trained with other settings ("
                          + ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in changed.items())
                          + "); use another out_dir")
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"])
    state.step, state.best_step, state.val_acc = int(ckpt["step"]), int(ckpt["best_step"]), ckpt.get("val_acc")
    state.best_val = -math.inf if ckpt["best_val"] is None else float(ckpt["best_val"])
    if verbose:
        print(f"resumed {path} at iteration {state.step}")


def parallel_net(model: nn.Module, cfg: TrainConfig, device: torch.device, world: int) -> nn.Module:
    """The net as the loop calls it: wrapped in DDP with several processes, compiled with ``compile``."""
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(net) if cfg.compile else net


def remove_partial_writes(out_dir: Path) -> list[Path]:
    """Delete the temporary files a killed writer left in a run folder (``.last.pt.*.tmp``, a score file's
    ``.*.tmp``, ...: :func:`twostream_lib.files.atomic_write` renames a finished one into place, so one still there
    is half-written). Called with the folder's lock held; returns what it removed."""
    gone = [p for p in out_dir.glob(".*.tmp") if p.is_file()]
    for p in gone:
        p.unlink()
    return gone


def _kept(out_dir: Path) -> str:
    last = out_dir / "last.pt"
    if last.is_file():
        return f"the last good checkpoint is kept: {last} (iteration {load_checkpoint(last)['step']})"
    return "no checkpoint had been written yet"


def train_chunk(net: nn.Module, state: RunState, data: RunData, cfg: TrainConfig, device: torch.device,
                rank: int, world: int, log: RunLog) -> None:
    """The iterations up to the next multiple of ``ckpt_every`` (one data chunk, seeded by ``(seed, chunk)``),
    validation and ``best.pt`` on the way, then ``last.pt``. Non-finite losses or weights stop the run."""
    out_dir = Path(cfg.out_dir)
    chunk = state.step // cfg.ckpt_every
    start = chunk * cfg.ckpt_every
    seed_chunk(cfg.seed, chunk, rank)
    loader = make_train_loader(data, cfg, chunk, state.step - start, min(cfg.ckpt_every, cfg.max_iters - start),
                               rank, world, device)

    def after_step(step: int, stats: dict) -> None:
        state.step = step
        lr = state.scheduler.get_last_lr()[0]
        log.add(stats, lr)
        val = None
        if data.val and ((cfg.val_every and step % cfg.val_every == 0) or step == cfg.max_iters):
            t = time.perf_counter()
            val = validate(state.model, data.val, cfg, device, rank, world)
            log.exclude(time.perf_counter() - t)
            state.val_acc = val["val_acc"]
            if val["val_acc"] > state.best_val:
                state.best_val, state.best_step = val["val_acc"], step
                if rank == 0:
                    save_checkpoint(out_dir / "best.pt", state.checkpoint(cfg, data, resumable=False))
        if step % cfg.log_every == 0 or val is not None or step == cfg.max_iters:
            log.write(step, lr, val)

    try:
        train_one_chunk(net, loader, state.optimizer, state.scheduler, device, state.step, cfg, world, after_step)
    except FloatingPointError as e:
        raise FloatingPointError(f"{cfg.name}: non-finite training loss at {e}; stopping, {_kept(out_dir)}. "
                                 f"Try a lower lr, or check the inputs.") from None
    bad = [n for n, p in state.model.named_parameters() if not torch.isfinite(p).all()]
    if bad:  # never overwrite the last good checkpoint with broken weights
        raise FloatingPointError(f"{cfg.name}: non-finite weights after iteration {state.step} ({bad[0]}, ...); "
                                 f"stopping, {_kept(out_dir)}.")
    if rank == 0:
        save_checkpoint(out_dir / "last.pt", state.checkpoint(cfg, data))


def train(cfg: TrainConfig, progress: bool = True, data: RunData | None = None,
          model: nn.Module | None = None, wait: float = 0.0) -> dict:
    """Train one stream as configured (§5; multitask §4 when ``cfg`` lists several datasets).

    Args:
        cfg: the run's settings; ``cfg.resume`` continues from ``out_dir/last.pt`` if it exists.
        progress: show a tqdm bar (rank 0).
        data: datasets to use instead of :func:`twostream_lib.data.build_datasets` (e.g. a notebook's own).
        model: a net to train instead of :func:`twostream_lib.models.build_model_for`'s (its weights are
            overwritten when resuming).
        wait: seconds to wait while another process trains the same run folder (a chapter reusing another
            chapter's run while that chapter trains it), then go on with what it left (default: fail at once).
    Returns:
        ``dict(history=[log rows], best_checkpoint=path, last_checkpoint=path, final={step, loss, acc, val_acc,
        best_val, best_step}, out_dir=path)``.
    Raises:
        ConfigError: ``out_dir`` holds another run (nothing in it is changed), or ``last.pt`` is another
            experiment's.
        FloatingPointError: the loss became NaN/inf; ``last.pt`` (the last good state) is left untouched.
    """
    cfg.validate("train(cfg)")
    device = resolve_device(cfg.device)
    set_cpu_threads(device, cfg.workers)
    rank, world, device = init_distributed(device)
    out_dir = Path(cfg.out_dir)
    with FolderLock(out_dir, "run folder", wait=wait) if rank == 0 else contextlib.nullcontext():
        resume_from = check_run_folder(out_dir, cfg.resume)
        if rank == 0:
            remove_partial_writes(out_dir)
        data = build_datasets(cfg) if data is None else data
        state = new_run_state(cfg, data, model, device, verbose=rank == 0)
        if resume_from is not None:
            resume_run(state, cfg, resume_from, verbose=rank == 0)
        if rank == 0:
            save_config(cfg, out_dir / "config.yaml")
            if resume_from is None:  # iteration 0 is resumable too: a kill before the first chunk's end (after
                save_checkpoint(out_dir / "last.pt", state.checkpoint(cfg, data))  # a best.pt, say) loses nothing
        net = parallel_net(state.model, cfg, device, world)
        log = RunLog(out_dir, cfg, len(data.classes), state.step, enabled=rank == 0, progress=progress)
        try:
            while state.step < cfg.max_iters:
                train_chunk(net, state, data, cfg, device, rank, world, log)
        finally:
            log.close()
        if rank == 0 and not (out_dir / "best.pt").is_file():  # no validation set: the final net is the one kept
            save_checkpoint(out_dir / "best.pt", state.checkpoint(cfg, data, resumable=False))
        if world > 1:
            dist.barrier()
    last_row = next((r for r in reversed(log.rows) if r.get("loss") is not None), {})
    return {"history": log.rows, "best_checkpoint": str(out_dir / "best.pt"),
            "last_checkpoint": str(out_dir / "last.pt"), "out_dir": str(out_dir),
            "final": {"step": state.step, "loss": last_row.get("loss"), "acc": last_row.get("acc"),
                      "val_acc": state.val_acc, "best_val": state.best_val if state.best_step >= 0 else None,
                      "best_step": state.best_step}}


def main(argv: list[str] | None = None) -> int:
    """``python -m twostream_lib train CONFIG.yaml [key=value ...] [--resume] [--no-progress]``."""
    keys = ", ".join(f.name for f in fields(TrainConfig))
    p = ArgumentParser(prog="python -m twostream_lib train",
                       description="Train one stream (paper §5; several datasets = multitask, §4). A new run "
                                   "refuses an out_dir that holds another run (nothing in it is touched): resume "
                                   "it with --resume, or give another out_dir=.",
                       epilog=f"config keys (documented in twostream_lib/config.py, TrainConfig): {keys}")
    p.add_argument("config", help="YAML config, e.g. configs/lab_spatial.yaml")
    p.add_argument("overrides", nargs="*", help="key=value settings that replace the file's, e.g. lr=0.01")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt (same as resume=true)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_intermixed_args(argv)
    cfg = load_config(a.config, a.overrides + (["resume=true"] if a.resume else []))
    if int(os.environ.get("RANK", "0")) == 0 and finished_run(cfg) is not None:
        print(f"{cfg.out_dir} holds this run, finished: nothing to train")
    try:
        r = train(cfg, progress=not a.no_progress)
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    f = r["final"]
    if int(os.environ.get("RANK", "0")) == 0:
        va = f"{100 * f['best_val']:.2f}% at iteration {f['best_step']}" if f["best_val"] is not None else "n/a"
        print(f"done: {f['step']} iterations, best val accuracy {va}; best net {r['best_checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
