"""What every chapter of the book does first, in one place: its profile, seeds, data, run folders and scorecard.

A chapter's parameters cell names the data (``DATA = "lab" | "ucf101" | "hmdb51"``), where it lives, the device
and a **profile**; its set-up cell makes a :class:`Chapter` from them::

    ch = Chapter("03_spatial", data=DATA, data_dir=DATA_DIR, scale=SCALE, device=DEVICE, split=SPLIT, seed=SEED,
                 profile=PROFILE, runs_dir=RUNS_DIR, scorecard_dir=SCORECARD_DIR, overrides=OVERRIDES)
    cfg = ch.config("lab_spatial", "ucf101_spatial_scratch", name="spatial")   # lab config, or the paper's
    scores = ch.scores(train(cfg)["best_checkpoint"])                         # 25 x 10 test scores, cached

Profiles (:data:`PROFILES`):

* ``cpu`` — the CI budget: lab ``small`` (96x128 clips), the lab configs as they are (a quarter-width CNN-M-2048 on
  80x80 crops, minutes per run on 2 CPU cores).
* ``gpu`` — one GPU: lab ``full`` (240x320, UCF-101's size), the paper's net (width 1, 224x224 crops), bf16 and
  channels_last, schedules 4x longer, the full test protocol everywhere, and the runs a chapter skips on a CPU.

On the real datasets (``DATA != "lab"``) the chapters use the paper-scale configs (``configs/ucf101_*``, ...)
whatever the profile; ``overrides`` (``OVERRIDES``) apply to every run of the chapter, e.g. a shorter schedule.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import scorecard
from .config import TrainConfig, dataset_paths, load_config, run_config, CONFIG_DIR
from .evaluate import cached_scores
from .lab import prepare_lab
from .lab.stills import pretrain_run
from .protocol import TEST_CROPS, TEST_FRAMES
from .train import finished_run

__all__ = ["Profile", "PROFILES", "Chapter"]


@dataclass(frozen=True)
class Profile:
    """How big a chapter's lab experiments are."""

    scale: str                      # lab scale
    device: str                     # where training and evaluation run
    schedule: float                 # multiplier of the lab configs' iterations (max_iters, lr_steps, ...)
    overrides: tuple[str, ...] = ()  # applied to every lab config
    full: bool = False              # run what a chapter runs only with a GPU (extra ablation rows, ...)


PROFILES = {
    "cpu": Profile("small", "cpu", 1.0),
    "gpu": Profile("full", "cuda", 4.0, ("crop_size=224", "width=1.0", "batch_size=128", "workers=8", "amp=true",
                                         "channels_last=true", "val_batch_videos=8"), full=True),
}
_SCHEDULE_KEYS = ("max_iters", "val_every", "ckpt_every", "log_every")


@dataclass
class Chapter:
    """A chapter's settings and the paths and runs that follow from them (see the module docstring).

    Making one seeds Python, NumPy and torch with ``seed``, limits torch to the machine's cores, and, for the lab,
    generates the lab datasets of the profile's scale and their caches if they are missing (seconds otherwise)."""

    name: str
    data: str = "lab"
    data_dir: str | os.PathLike = "../data"
    scale: str = "small"
    device: str = "cpu"
    split: int = 1
    seed: int = 0
    profile: str = "cpu"
    runs_dir: str | os.PathLike = "../runs"
    scorecard_dir: str | os.PathLike = "scorecard"
    overrides: list[str] = field(default_factory=list)
    claims: list[scorecard.Claim] = field(default_factory=list)
    reused: set[str] = field(default_factory=set)  # run folders found finished (reused, not trained)

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ValueError(f"PROFILE must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.data not in ("lab", "ucf101", "hmdb51"):
            raise ValueError(f"DATA must be 'lab', 'ucf101' or 'hmdb51', got {self.data!r}")
        prof = PROFILES[self.profile]
        if self.profile != "cpu":  # the profile decides the lab scale and the device
            self.scale, self.device = prof.scale, prof.device
        self.started = time.perf_counter()
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)
        if self.lab:
            prepare_lab(self.data_dir, self.scale, workers=min(8, os.cpu_count() or 1))

    @property
    def lab(self) -> bool:
        return self.data == "lab"

    @property
    def full(self) -> bool:
        """Whether this profile runs the experiments a chapter keeps for a GPU."""
        return PROFILES[self.profile].full

    def paths(self, dataset: str) -> tuple[Path, Path]:
        """``(root, cache)`` of ``dataset`` (:func:`twostream_lib.config.dataset_paths`)."""
        return dataset_paths(dataset, self.data_dir, self.scale)

    def config(self, lab_base: str, real_base: str | None = None, overrides: list[str] | tuple[str, ...] = (),
               name: str | None = None, schedule: float = 1.0) -> TrainConfig:
        """The config of one run: ``configs/<lab_base>.yaml`` on the lab (with the profile's overrides and its
        schedule multiplier, times ``schedule``), ``configs/<real_base>.yaml`` on the real data; then this split,
        seed and device, the chapter's ``overrides`` and the ``OVERRIDES`` parameter. Its folder is
        ``runs_dir/<scale or real>/<name>``; a finished run with the same settings is reused."""
        prof = PROFILES[self.profile]
        base = lab_base if self.lab else real_base
        if base is None:
            raise ValueError(f"{self.name}: this run exists on the lab data only")
        start = load_config(CONFIG_DIR / f"{base}.yaml")
        factor = (prof.schedule if self.lab else 1.0) * schedule
        scaled = [f"{k}={max(1, math.ceil(getattr(start, k) * factor))}" for k in _SCHEDULE_KEYS] + \
                 [f"lr_steps=[{','.join(str(math.ceil(s * factor)) for s in start.lr_steps)}]"] if factor != 1 else []
        ov = [*(prof.overrides if self.lab else ()), *scaled, f"split={self.split}", f"seed={self.seed}",
              f"device={self.device}", *overrides, *self.overrides]
        cfg = run_config(base, ov, name=name, data_dir=self.data_dir, scale=self.scale, runs_dir=self.runs_dir)
        if finished_run(cfg) is not None:
            self.reused.add(cfg.out_dir)
        return cfg

    def pretrained_spatial_config(self, finetune: str = "all", real_base: str = "ucf101_spatial",
                                  overrides: list[str] | tuple[str, ...] = (), name: str | None = None
                                  ) -> TrainConfig:
        """Table 1a's pre-trained spatial net, fine-tuned (``finetune="all"``) or with the last layer only
        (``"last"``): on the lab, ``lab_spatial`` started from the lab's stills pre-training
        (:func:`twostream_lib.lab.stills.pretrain_run`, trained once); on real data ``configs/<real_base>.yaml``
        (ImageNet weights). Its folder is ``name``, by default ``spatial_pretrained_<ft|last>`` (give runs with
        other ``overrides`` their own name); chapter 3 trains it, chapter 6 fuses the fine-tuned one."""
        if finetune not in ("all", "last"):
            raise ValueError(f"finetune must be 'all' or 'last', got {finetune!r}")
        init = [f"init_from={pretrain_run(self, progress=False)}"] if self.lab else []
        return self.config("lab_spatial", real_base, [*init, f"finetune={finetune}", *overrides],
                           name=name or f"spatial_pretrained_{'ft' if finetune == 'all' else 'last'}")

    def scores(self, ckpt: str | os.PathLike, subset: str = "test", frames: int = TEST_FRAMES,
               crops: int = TEST_CROPS, task: int = 0, tag: str = "") -> dict:
        """Video-level scores of checkpoint ``ckpt`` by the paper's protocol (§6), kept beside it as
        ``<subset>_scores_<frames>x<crops>[_task<k>][_<tag>].npz`` and reused while the checkpoint and protocol
        are the same (:func:`twostream_lib.evaluate.cached_scores`)."""
        suffix = (f"_task{task}" if task else "") + (f"_{tag}" if tag else "")
        out = Path(ckpt).parent / f"{subset}_scores_{frames}x{crops}{suffix}.npz"
        return cached_scores(ckpt, out, subset=subset, frames=frames, crops=crops, task=task, device=self.device)

    def claim(self, id: str, claim: str, paper: float | None, lab: float, se: float | None, holds: bool) -> bool:
        """Record what this chapter measured for one claim of the paper (see :mod:`twostream_lib.scorecard`);
        returns ``holds``."""
        self.claims = [c for c in self.claims if c.id != id] + [
            scorecard.Claim(id, self.name, claim, paper, float(lab), se, bool(holds))]
        return bool(holds)

    def write_scorecard(self) -> Path | None:
        """Write this chapter's claims to ``scorecard_dir/<name>.json`` and its execution time so far to
        ``timings.json`` (lab data only: the scorecard is the lab's; a GPU profile writes ``<name>.gpu.json``).
        The time is kept only if this execution reused no more finished runs than the recorded one
        (:func:`twostream_lib.scorecard.record_time`)."""
        if not self.lab:
            return None
        suffix = "" if self.profile == "cpu" else f".{self.profile}"
        scorecard.record_time(self.name, time.perf_counter() - self.started, self.scorecard_dir, self.profile,
                              reused_runs=len(self.reused))
        return scorecard.write(self.name + suffix, self.claims, self.scorecard_dir)
