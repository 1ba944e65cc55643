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
the sampler (``set_epoch(c)``), the DataLoader's generator and the torch / NumPy / Python RNGs are seeded from
``(seed, c, rank)``, and ``last.pt`` is written at the end of each chunk. The data order and every random draw
are therefore a function of ``(seed, iteration)``: ``--resume`` from ``last.pt`` ends with the same weights as a
run that was never interrupted (bit for bit on CPU).

Data parallel (``torchrun``): one process per GPU (NCCL) or per CPU group (gloo), each with ``batch_size /
world_size`` samples of the same global batch (the global sample order doesn't depend on the number of
processes), :class:`~torch.nn.parallel.DistributedDataParallel` averaging the gradients; rank 0 logs and
writes checkpoints.

Outputs in ``out_dir``: ``config.yaml``, ``log.csv`` (step, lr, loss, acc, val_acc, samples_per_s),
``last.pt`` and ``best.pt`` (checkpoint dicts, loadable with ``torch.load(..., weights_only=True)``),
``tb/`` (TensorBoard scalars).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .config import ConfigError, TrainConfig, load_config, save_config

__all__ = [
    "RunData",
    "build_datasets",
    "make_dataset",
    "build_model_for",
    "resolve_device",
    "init_distributed",
    "chunk_seed",
    "ChunkSampler",
    "make_train_loader",
    "train_step",
    "train_one_chunk",
    "validate",
    "save_checkpoint",
    "load_checkpoint",
    "train",
    "main",
]

LOG_FIELDS = ["step", "lr", "loss", "acc", "val_acc", "samples_per_s"]


# ---------------------------------------------------------------------------------------------- data
@dataclass
class RunData:
    """What a run trains and validates on.

    Attributes:
        train: training dataset in train mode; items ``(x, label)`` or, multitask, ``(x, label, task_id)``.
        labels: one sampler label per training item: classes are drawn uniformly over these (§5); for multitask
            they are unique per (task, class) pair.
        val: one test-mode dataset per task (held-out training videos), items ``(x (V, C, H, W), label)``;
            empty = no validation.
        classes: class names per task.
    """

    train: Any
    labels: list[int]
    val: list[Any] = field(default_factory=list)
    classes: list[list[str]] = field(default_factory=list)

    @property
    def num_classes(self) -> list[int]:
        return [len(c) for c in self.classes]


def make_dataset(cfg: TrainConfig, cache, items, mode: str, num_frames: int = 25, num_crops: int = 10):
    """The stream's dataset (:mod:`twostream_lib.data`) for ``items`` with ``cfg``'s input settings; in test
    mode ``num_frames`` equally spaced frames (stacks) x ``num_crops`` crops per video (§6)."""
    from . import data

    if cfg.stream == "spatial":
        return data.SpatialDataset(cache, items, mode=mode, crop_size=cfg.crop_size, flip=cfg.flip,
                                   jitter=cfg.jitter, num_frames=num_frames, num_crops=num_crops)
    return data.TemporalDataset(cache, items, mode=mode, crop_size=cfg.crop_size, L=cfg.L, stacking=cfg.stacking,
                                bidirectional=cfg.bidirectional, mean_subtraction=cfg.mean_subtraction,
                                flip=cfg.flip, num_frames=num_frames, num_crops=num_crops)


def build_datasets(cfg: TrainConfig) -> RunData:
    """Training set (train videos minus a per-class held-out part) and validation sets (the held-out part,
    test mode with ``val_frames`` frames) for each dataset of ``cfg``; several datasets = multitask (§4)."""
    from . import data
    from .splits import load_split

    train_sets, val_sets, classes = [], [], []
    excluded = set(cfg.exclude_classes)
    seen: set[str] = set()
    for k, (name, root, cache_dir) in enumerate(zip(cfg.datasets, cfg.roots, cfg.caches)):
        split = load_split(name, root, cfg.split)
        cache = data.VideoCache(cache_dir)
        items = data.items_for(split, "train", cache)
        if k > 0:
            seen.update(split.classes)
            items = [(v, lab) for v, lab in items if split.classes[lab] not in excluded]
        if cfg.val_fraction > 0:
            tr_items, val_items = data.holdout(items, fraction=cfg.val_fraction, seed=cfg.seed)
        else:
            tr_items, val_items = items, []
        train_sets.append((cache, tr_items))
        if val_items and (k == 0 or cfg.heads == "per_dataset"):
            val_sets.append(make_dataset(cfg, cache, val_items, "test", num_frames=cfg.val_frames,
                                         num_crops=cfg.val_crops))
        classes.append(list(split.classes))
    if excluded - seen:
        raise ValueError(f"exclude_classes: {sorted(excluded - seen)} are not classes of {cfg.datasets[1:]}")
    if len(train_sets) > 1 and cfg.heads == "shared":
        return _shared_head_data(cfg, train_sets, val_sets, classes, excluded)
    train_sets = [make_dataset(cfg, cache, items, "train") for cache, items in train_sets]
    if len(val_sets) not in (0, len(train_sets)):
        val_sets = []  # one dataset has no held-out video: validate none rather than a partial mean
    if len(train_sets) == 1:
        return RunData(train_sets[0], list(train_sets[0].labels), val_sets, classes)
    mt = data.MultiTaskDataset(train_sets)
    offsets = np.cumsum([0] + [len(c) for c in classes])  # (task, class) -> one sampler label
    labels = [int(offsets[t] + l) for l, t in zip(mt.labels, mt.task_ids)]
    return RunData(mt, labels, val_sets, classes)


def _shared_head_data(cfg: TrainConfig, train_sets, val_sets, classes, excluded) -> RunData:
    """One softmax over the target's classes followed by the other datasets' kept classes (Table 2, row 3).

    The target (first dataset) keeps its labels 0..n-1, so its validation set is unchanged."""
    union = list(classes[0])
    sets = [make_dataset(cfg, train_sets[0][0], train_sets[0][1], "train")]
    for (cache, items), names in zip(train_sets[1:], classes[1:]):
        mapping = {}
        for lab, c in enumerate(names):
            if c not in excluded:
                mapping[lab] = len(union)
                union.append(c if c not in union else f"{c} ({cache.settings['dataset']})")
        sets.append(make_dataset(cfg, cache, [(v, mapping[lab]) for v, lab in items], "train"))
    train = torch.utils.data.ConcatDataset(sets)
    labels = [lab for d in sets for lab in d.labels]
    return RunData(train, labels, val_sets, [union])


def build_model_for(cfg: TrainConfig, num_classes: Sequence[int] | int) -> nn.Module:
    """The stream net of ``cfg`` (:func:`twostream_lib.models.build_model`); several class counts = one head
    per dataset (multitask, §4)."""
    from .models import build_model

    nc = [int(num_classes)] if isinstance(num_classes, int) else [int(c) for c in num_classes]
    return build_model(arch=cfg.arch, in_channels=cfg.in_channels, num_classes=nc[0] if len(nc) == 1 else nc,
                       dropout=cfg.dropout, width=cfg.width, input_size=cfg.crop_size,
                       conv2_norm=cfg.use_conv2_norm, pretrained=cfg.pretrained)


# ---------------------------------------------------------------------------------------------- setup
def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but CUDA is not available; use device=cpu or device=auto")
    return dev


def set_cpu_threads(device: torch.device, workers: int) -> int:
    """On CPU, give torch the cores that the DataLoader workers (and other ranks on this machine) leave free.

    Oversubscribed OpenMP threads spin against the loader processes: on 2 cores, 2 torch threads + 1 worker made
    a lab training step 8-15x slower than 1 thread + 1 worker (benchmarks/run.py). Returns the thread count."""
    if device.type != "cpu":
        return torch.get_num_threads()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    n = max(1, (os.cpu_count() or 1) // local - workers)
    torch.set_num_threads(n)
    return n


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the process group started by ``torchrun`` (``WORLD_SIZE > 1``) -> ``(rank, world_size, device)``.
    NCCL on GPU (one GPU per process, ``LOCAL_RANK``), gloo on CPU."""
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


class ChunkSampler(torch.utils.data.Sampler[int]):
    """The indices one process loads during one chunk of iterations.

    The global order is ``sampler``'s (e.g. :class:`data.BalancedSampler` for a single process, seeded with
    ``set_epoch(chunk)``), cut into global batches of ``global_batch``; batch ``k`` of rank ``r`` is the
    ``r``-th slice of global batch ``k``. Batches ``start .. stop-1`` of the chunk are yielded, so a run
    restarted in the middle of a chunk skips the first ones without loading them.
    """

    def __init__(self, sampler: Sequence[int] | torch.utils.data.Sampler, global_batch: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1):
        if global_batch % world_size:
            raise ValueError(f"batch_size {global_batch} is not divisible by the {world_size} processes")
        self.order = list(iter(sampler))
        need = stop * global_batch
        if len(self.order) < need:
            raise ValueError(f"ChunkSampler: the sampler gave {len(self.order)} indices, need {need}")
        self.global_batch, self.start, self.stop = global_batch, start, stop
        self.rank, self.world = rank, world_size
        self.local_batch = global_batch // world_size

    def __iter__(self) -> Iterator[int]:
        for k in range(self.start, self.stop):
            base = k * self.global_batch + self.rank * self.local_batch
            yield from self.order[base:base + self.local_batch]

    def __len__(self) -> int:
        return (self.stop - self.start) * self.local_batch


def make_train_loader(run_data: RunData, cfg: TrainConfig, chunk: int, start: int, stop: int, rank: int = 0,
                      world_size: int = 1, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """The DataLoader for iterations ``chunk*ckpt_every + [start, stop)``: per-rank batches of
    ``batch_size / world_size``, videos drawn uniformly across classes (§5), order seeded by ``(seed, chunk)``."""
    from .data import BalancedSampler

    sampler = BalancedSampler(run_data.labels, num_samples=cfg.ckpt_every * cfg.batch_size, seed=cfg.seed)
    sampler.set_epoch(chunk)
    cs = ChunkSampler(sampler, cfg.batch_size, start, stop, rank, world_size)
    gen = torch.Generator().manual_seed(chunk_seed(cfg.seed, chunk, rank, stream=1))
    return torch.utils.data.DataLoader(run_data.train, batch_size=cs.local_batch, sampler=cs, drop_last=True,
                                       num_workers=cfg.workers, pin_memory=pin_memory, generator=gen,
                                       persistent_workers=False)


# ---------------------------------------------------------------------------------------------- checkpoints
def _rng_state() -> dict:
    """RNG states as tensors / plain lists (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: a crash never leaves a
    half-written checkpoint under ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict with ``weights_only=True`` (no arbitrary code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - name the file
        raise RuntimeError(f"can't load checkpoint {path}: {e}") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise RuntimeError(f"{path} is not a twostream_lib checkpoint (a dict with 'model' and 'config')")
    return ckpt


def _init_from(model: nn.Module, path: str) -> list[str]:
    """Copy the weights of checkpoint ``path`` into ``model`` where names and shapes agree; return the
    names left at their fresh initialisation (e.g. the classifier of another dataset, Table 2)."""
    src = load_checkpoint(path)["model"]
    own = model.state_dict()
    loaded = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    if not loaded:
        raise ValueError(f"init_from={path}: no parameter matches this model (another arch or input?)")
    model.load_state_dict(loaded, strict=False)
    return sorted(set(own) - set(loaded))


# ---------------------------------------------------------------------------------------------- steps
def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _loss_and_correct(out, y: torch.Tensor, t: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (or the multitask sum of per-head losses, §4) and the number of correct predictions."""
    if t is None:
        out = out.float()
        return F.cross_entropy(out, y), (out.argmax(1) == y).sum()
    from .models import multitask_loss

    out = [o.float() for o in out]
    loss = multitask_loss(out, y, t)
    correct = torch.zeros((), device=y.device, dtype=torch.long)
    for k, o in enumerate(out):
        m = t == k
        correct = correct + (o[m].argmax(1) == y[m]).sum()
    return loss, correct


def train_step(model: nn.Module, batch: Sequence[torch.Tensor], optimizer: torch.optim.Optimizer,
               scheduler, device: torch.device, amp: bool = False, channels_last: bool = False,
               world_size: int = 1) -> dict:
    """One SGD iteration on one batch ``(x (B, C, H, W), y (B,)[, task_id (B,)])`` -> ``dict(loss, correct, n)``
    (summed over processes). A non-finite loss raises :class:`FloatingPointError` before the weights change."""
    x = batch[0].to(device, non_blocking=True)
    y = batch[1].to(device, non_blocking=True).long()
    t = batch[2].to(device, non_blocking=True).long() if len(batch) > 2 else None
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with _autocast(device, amp):
        out = model(x)
    loss, correct = _loss_and_correct(out, y, t)
    stats = torch.stack([loss.detach().float() * y.numel(), correct.float(),
                         torch.tensor(float(y.numel()), device=device)])
    if world_size > 1:
        dist.all_reduce(stats)
    loss_sum, n_correct, n = stats.tolist()
    if not math.isfinite(loss_sum):
        raise FloatingPointError(f"loss is {loss_sum / n}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return {"loss": loss_sum / n, "correct": n_correct, "n": n}


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


@torch.no_grad()
def validate(model: nn.Module, val_sets: Sequence, cfg: TrainConfig, device: torch.device, rank: int = 0,
             world_size: int = 1) -> dict:
    """Video-level accuracy on the held-out training videos (§6 protocol with ``val_frames`` frames x
    ``val_crops`` crops). Videos are shared among processes, scores summed over them.
    Returns ``{"val_acc": mean over tasks, "val_acc_<k>": per task}``."""
    from .evaluate import video_score_sums

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


# ---------------------------------------------------------------------------------------------- the run
class _Logger:
    """CSV (+ optional TensorBoard) scalars, rank 0 only. On resume keeps the rows up to the resumed step."""

    def __init__(self, out_dir: Path, fields: list[str], start_step: int, tensorboard: bool, enabled: bool):
        self.enabled = enabled
        self.path = out_dir / "log.csv"
        self.fields = fields
        self.rows: list[dict] = []
        self.tb = None
        if not enabled:
            return
        if start_step > 0 and self.path.is_file():
            with open(self.path, newline="") as f:
                for row in csv.DictReader(f):
                    if int(float(row["step"])) <= start_step:
                        r = {k: (float(v) if v not in ("", None) else None) for k, v in row.items()}
                        r["step"] = int(r["step"])  # an int again, so a re-written log reads back the same
                        self.rows.append(r)
        with open(self.path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            for row in self.rows:
                w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=start_step if start_step > 0 else None)
            except ImportError as e:  # tensorboard not installed: CSV only
                warnings.warn(f"TensorBoard logging off: {e}")

    def log(self, row: dict) -> None:
        row = {k: row.get(k) for k in self.fields}
        self.rows.append(row)
        if not self.enabled:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow({k: ("" if v is None else v) for k, v in row.items()})
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and v is not None and not (isinstance(v, float) and math.isnan(v)):
                    self.tb.add_scalar(k, v, int(row["step"]))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def train(cfg: TrainConfig, progress: bool = True, data: RunData | None = None,
          model: nn.Module | None = None) -> dict:
    """Train one stream as configured (§5; multitask §4 when ``cfg`` lists several datasets).

    Args:
        cfg: the run's settings; ``cfg.resume`` continues from ``out_dir/last.pt`` if it exists.
        progress: show a tqdm bar (rank 0).
        data: datasets to use instead of :func:`build_datasets` (e.g. a notebook's own).
        model: a net to train instead of :func:`build_model_for`'s (its ``init`` weights are overwritten when
            resuming).
    Returns:
        ``dict(history=[log rows], best_checkpoint=path, last_checkpoint=path, final={step, loss, acc, val_acc,
        best_val, best_step}, out_dir=path)``.
    Raises:
        FloatingPointError: the loss became NaN/inf; ``last.pt`` (the last good state) is left untouched.
    """
    cfg.validate("train(cfg)")
    device = resolve_device(cfg.device)
    set_cpu_threads(device, cfg.workers)
    rank, world, device = init_distributed(device)
    is_main = rank == 0
    out_dir = Path(cfg.out_dir)
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")

    if data is None:
        data = build_datasets(cfg)
    num_classes = data.num_classes
    multitask = len(num_classes) > 1
    if model is None:
        torch.manual_seed(cfg.seed)  # the initial weights are a function of the seed (the same on every rank)
        model = build_model_for(cfg, num_classes)
    if cfg.init_from:
        fresh = _init_from(model, cfg.init_from)
        if is_main and fresh:
            print(f"init_from {cfg.init_from}: freshly initialised {', '.join(fresh)}")
    from .models import set_finetune_mode

    params = set_finetune_mode(model, cfg.finetune) if hasattr(model, "trunk") else list(model.parameters())
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.lr_steps), gamma=cfg.lr_gamma)

    step, best_val, best_step = 0, -math.inf, -1
    if cfg.resume and last_path.is_file():
        ckpt = load_checkpoint(last_path, map_location="cpu")  # RNG states must stay CPU tensors
        changed = {k: (v, getattr(cfg, k)) for k, v in ckpt["config"].items()
                   if k not in RESUME_MAY_CHANGE and getattr(cfg, k, v) != v}
        if changed:  # a checkpoint of another experiment: refuse rather than silently continue it
            raise ConfigError(f"{last_path}: cannot resume, the checkpoint was trained with other settings ("
                              + ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in changed.items())
                              + "); use another out_dir, or drop resume to start afresh")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        _set_rng_state(ckpt["rng"])
        step, best_val, best_step = int(ckpt["step"]), float(ckpt["best_val"]), int(ckpt["best_step"])
        if is_main:
            print(f"resumed {last_path} at iteration {step}")
    elif cfg.resume and is_main:
        print(f"resume: {last_path} not found, starting from iteration 0")
    if step == 0 and is_main:
        for stale in (last_path, best_path):  # a previous run's nets in this out_dir would be taken for ours
            if stale.is_file():
                stale.unlink()
                print(f"fresh run: removed the previous run's {stale}")

    raw_model = model
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)

    fields = list(LOG_FIELDS) + ([f"val_acc_{k}" for k in range(len(num_classes))] if multitask else [])
    logger = _Logger(out_dir, fields, step, cfg.tensorboard, enabled=is_main)
    bar = None
    if progress and is_main:
        from tqdm import tqdm
        bar = tqdm(total=cfg.max_iters, initial=step, desc=cfg.name, unit="it", dynamic_ncols=True)

    acc_stats = {"loss": 0.0, "correct": 0.0, "n": 0.0, "t0": time.perf_counter(), "val_time": 0.0}
    last: dict[str, Any] = {"loss": None, "acc": None, "val_acc": None}

    def state(step_: int) -> dict:
        return {"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step_, "config": asdict(cfg), "rng": _rng_state(),
                "best_val": best_val, "best_step": best_step, "scaler": None, "num_classes": num_classes,
                "classes": data.classes, "val_acc": last["val_acc"]}

    def on_step(s: int, stats: dict) -> None:
        nonlocal best_val, best_step
        acc_stats["loss"] += stats["loss"] * stats["n"]
        acc_stats["correct"] += stats["correct"]
        acc_stats["n"] += stats["n"]
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.0e}")
        val = None
        if data.val and ((cfg.val_every and s % cfg.val_every == 0) or s == cfg.max_iters):
            t = time.perf_counter()
            val = validate(raw_model, data.val, cfg, device, rank, world)
            acc_stats["val_time"] += time.perf_counter() - t
            last["val_acc"] = val["val_acc"]
            if val["val_acc"] > best_val:
                best_val, best_step = val["val_acc"], s
                if is_main:
                    save_checkpoint(best_path, {"model": raw_model.state_dict(), "config": asdict(cfg), "step": s,
                                                "val_acc": val["val_acc"], "num_classes": num_classes,
                                                "classes": data.classes, "best_val": best_val, "best_step": s})
        if s % cfg.log_every == 0 or val is not None or s == cfg.max_iters:
            n = max(acc_stats["n"], 1.0)
            dt = time.perf_counter() - acc_stats["t0"] - acc_stats["val_time"]
            row = {"step": s, "lr": scheduler.get_last_lr()[0],
                   "loss": acc_stats["loss"] / n if acc_stats["n"] else None,
                   "acc": acc_stats["correct"] / n if acc_stats["n"] else None,
                   "val_acc": val["val_acc"] if val else None,
                   "samples_per_s": acc_stats["n"] / dt if acc_stats["n"] and dt > 0 else None}
            if val and multitask:
                row.update({k: v for k, v in val.items() if k != "val_acc"})
            if row["loss"] is not None:
                last["loss"], last["acc"] = row["loss"], row["acc"]
            logger.log(row)
            acc_stats.update(loss=0.0, correct=0.0, n=0.0, t0=time.perf_counter(), val_time=0.0)

    try:
        while step < cfg.max_iters:
            chunk = step // cfg.ckpt_every
            chunk_start = chunk * cfg.ckpt_every
            stop = min(cfg.ckpt_every, cfg.max_iters - chunk_start)
            seed_chunk(cfg.seed, chunk, rank)
            loader = make_train_loader(data, cfg, chunk, step - chunk_start, stop, rank, world,
                                       pin_memory=device.type == "cuda")
            try:
                step = train_one_chunk(net, loader, optimizer, scheduler, device, step, cfg, world, on_step)
            except FloatingPointError as e:
                kept = f"{last_path} (iteration {load_checkpoint(last_path)['step']})" if last_path.is_file() \
                    else "none yet"
                raise FloatingPointError(
                    f"{cfg.name}: non-finite training loss at {e}; stopping. The last good checkpoint is kept: "
                    f"{kept}. Try a lower lr, or check the inputs.") from None
            bad = [n for n, p in raw_model.named_parameters() if not torch.isfinite(p).all()]
            if bad:  # never overwrite the last good checkpoint with broken weights
                raise FloatingPointError(f"{cfg.name}: non-finite weights after iteration {step} ({bad[0]}, ...); "
                                         f"stopping. The last good checkpoint is kept: {last_path}.")
            if is_main:
                save_checkpoint(last_path, state(step))
    finally:
        if bar is not None:
            bar.close()
        logger.close()
    if is_main and not best_path.is_file():  # no validation set: the final net is the one we keep
        save_checkpoint(best_path, {"model": raw_model.state_dict(), "config": asdict(cfg), "step": step,
                                    "val_acc": None, "num_classes": num_classes, "classes": data.classes,
                                    "best_val": None, "best_step": step})
    if world > 1:
        dist.barrier()
    return {"history": logger.rows, "best_checkpoint": str(best_path), "last_checkpoint": str(last_path),
            "out_dir": str(out_dir),
            "final": {"step": step, "loss": last["loss"], "acc": last["acc"], "val_acc": last["val_acc"],
                      "best_val": best_val if best_step >= 0 else None, "best_step": best_step}}


#: settings that may differ between a checkpoint and the run resuming it (they don't change what is learnt)
RESUME_MAY_CHANGE = ("resume", "max_iters", "progress", "workers", "device", "log_every", "tensorboard", "compile")


def main(argv: list[str] | None = None) -> int:
    """``python -m twostream_lib train CONFIG.yaml [key=value ...] [--resume] [--no-progress]``."""
    p = argparse.ArgumentParser(prog="python -m twostream_lib train",
                                description="Train one stream (paper §5; several datasets = multitask, §4).")
    p.add_argument("config", help="YAML config, e.g. configs/lab_spatial.yaml")
    p.add_argument("overrides", nargs="*", help="key=value settings that replace the file's, e.g. lr=0.01")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt (same as resume=true)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_intermixed_args(argv)
    cfg = load_config(a.config, a.overrides + (["resume=true"] if a.resume else []))
    try:
        r = train(cfg, progress=not a.no_progress)
    except (FloatingPointError, ConfigError) as e:
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
    sys.exit(main())
