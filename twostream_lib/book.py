"""What every chapter of the book does first, in one place: its profile, seeds, data, run folders and scorecard.

A chapter's parameters cell names the data (``DATA = "lab" | "ucf101" | "hmdb51"``), where it lives, the device
and a **profile**; its set-up cell makes a :class:`Chapter` from them::

    ch = Chapter("03_spatial", data=DATA, data_dir=DATA_DIR, scale=SCALE, device=DEVICE, split=SPLIT, seed=SEED,
                 profile=PROFILE, runs_dir=RUNS_DIR, scorecard_dir=SCORECARD_DIR, overrides=OVERRIDES)
    cfg = ch.config("lab_spatial", "ucf101_spatial_scratch")    # lab config, or the paper's, as its file gives it
    ch.plan([cfg], stop=PLAN_ONLY)                              # what training costs here (real data, gpu profile)
    scores = ch.scores(train(cfg)["best_checkpoint"])          # 25 x 10 test scores, cached

Device and profile, one rule (every chapter's set-up cell prints what it resolved to; the intro states it too):

* ``DEVICE`` says where runs train and evaluate: ``"auto"`` (every chapter's default) is CUDA when this machine
  has it, else the CPU; ``"cpu"``, ``"cuda"``, ``"cuda:1"`` name one. The profile never changes it.
* ``PROFILE`` says how big the *lab* experiments are (:data:`PROFILES`); on the real datasets the paper-scale
  configs run whatever the profile.

  * ``cpu`` — the CI budget: lab ``small`` (96x128 clips), the lab configs as they are (a quarter-width
    CNN-M-2048 on 80x80 crops, minutes per run on 2 CPU cores).
  * ``gpu`` — one GPU: lab ``full`` (240x320, UCF-101's size), the paper's net (width 1, 224x224 crops), bf16 and
    channels_last, schedules 4x longer, the full test protocol everywhere, and the runs a chapter skips on a CPU.
    It needs a GPU: with ``DEVICE = "auto"`` on a machine without CUDA it stops with an error, and
    ``DEVICE = "cpu"`` runs it on the CPU anyway (days at full scale; ``make test-gpu-profile`` rehearses it in
    miniature).

  ``SCALE`` (``None``: the profile's) names another lab scale for either profile, e.g. ``tiny`` for a rehearsal.

On the real datasets (``DATA != "lab"``) the chapters use the paper-scale configs (``configs/ucf101_*``, ...)
whatever the profile; ``overrides`` (``OVERRIDES``) apply to every run of the chapter, e.g. a shorter schedule. The
rows a chapter keeps for a GPU (Table 1a's dropout 0.9 rows, Table 1b's finer rows, Table 2's row 3) run on real
data too when ``PROFILE = "gpu"``, each on the paper's full schedule: with the cpu profile a real-data chapter
trains only the rows it trains on a CPU, and its plan lists every run before anything trains.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import scorecard
from .checkpoint import load_checkpoint
from .config import CONFIG_DIR, TrainConfig, command_line, dataset_paths, load_config, run_config
from .errors import UserError
from .evaluate import cached_scores
from .lab import prepare_lab
from .metrics import compared
from .protocol import TEST_CROPS, TEST_FRAMES
from .runtime import resolve_device
from .splits import OFFICIAL_CLASSES, load_split
from .train import changed_settings, finished_run, measure_step

__all__ = ["Profile", "PROFILES", "Chapter", "PlanOnly", "SOLUTIONS_DIR"]


@dataclass(frozen=True)
class Profile:
    """How big a chapter's lab experiments are."""

    scale: str                      # lab scale
    schedule: float                 # multiplier of the lab configs' iterations (max_iters, lr_steps, ...)
    overrides: tuple[str, ...] = ()  # applied to every lab config
    full: bool = False              # run what a chapter runs only with a GPU (extra ablation rows, ...)


PROFILES = {
    "cpu": Profile("small", 1.0),
    "gpu": Profile("full", 4.0, ("crop_size=224", "width=1.0", "batch_size=128", "workers=8", "amp=true",
                                         "channels_last=true", "val_batch_videos=8"), full=True),
}
_SCHEDULE_KEYS = ("max_iters", "val_every", "ckpt_every", "log_every")
#: seconds a chapter's set-up waits for another chapter (or ``make lab``) making or preparing the same lab data
LAB_WAIT = 3 * 3600
#: the computed solutions of the exercises too long for a chapter's execution (``make solutions``), a JSON file each
SOLUTIONS_DIR = Path(__file__).resolve().parent.parent / "book" / "solutions"


class PlanOnly(RuntimeError):
    """A chapter stopped after printing its plan, as its ``PLAN_ONLY`` parameter asked."""


def _trained_steps(cfg: TrainConfig) -> int:
    """Iterations the run in ``cfg.out_dir`` has done with these settings (0: none, or another run's folder)."""
    last = Path(cfg.out_dir) / "last.pt"
    if not last.is_file():
        return 0
    ckpt = load_checkpoint(last)
    return 0 if changed_settings(ckpt, cfg) else int(ckpt["step"])


def _class_counts(cfg: TrainConfig) -> list[int]:
    """Classes per head of ``cfg``'s datasets (from their split files; the official counts where absent)."""
    counts = []
    for name, root in zip(cfg.datasets, cfg.roots):
        try:
            counts.append(len(load_split(name, root, cfg.split, check_files=False).classes))
        except (UserError, OSError):
            counts.append(OFFICIAL_CLASSES.get(name, 10))  # a plan's timing only: the head's size barely matters
    return [sum(counts)] if cfg.heads == "shared" else counts


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _scaled(start: TrainConfig, factor: float) -> list[str]:
    """Overrides multiplying ``start``'s schedule (iterations, lr steps, validation, checkpoints) by ``factor``."""
    if factor == 1:
        return []
    return [f"{k}={max(1, math.ceil(getattr(start, k) * factor))}" for k in _SCHEDULE_KEYS] + \
        [f"lr_steps=[{','.join(str(math.ceil(s * factor)) for s in start.lr_steps)}]"]


@dataclass
class Chapter:
    """A chapter's settings and the paths and runs that follow from them (see the module docstring).

    Making one resolves ``device`` (``"auto"``: CUDA when present, else the CPU; the module's rule) and prints
    the chapter's settings (``verbose``), seeds Python, NumPy and torch with ``seed``, and, for the lab, generates
    the lab datasets of the profile's scale and their caches if they are missing (seconds otherwise)."""

    name: str
    data: str = "lab"
    data_dir: str | os.PathLike = "../data"
    scale: str | None = None  # lab scale; None: the profile's
    device: str = "auto"
    split: int = 1
    seed: int = 0
    profile: str = "cpu"
    runs_dir: str | os.PathLike = "../runs"
    scorecard_dir: str | os.PathLike = "scorecard"
    overrides: list[str] = field(default_factory=list)
    claims: list[scorecard.Claim] = field(default_factory=list)
    reused: set[str] = field(default_factory=set)  # run folders found finished (reused, not trained)
    commands: dict[str, str] = field(default_factory=dict)  # run folder -> the command line that trains it
    verbose: bool = True

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ValueError(f"PROFILE must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.data not in ("lab", "ucf101", "hmdb51"):
            raise ValueError(f"DATA must be 'lab', 'ucf101' or 'hmdb51', got {self.data!r}")
        prof = PROFILES[self.profile]
        self.scale = self.scale or prof.scale  # the profile's lab scale unless SCALE names one; never the device
        asked = str(self.device)
        self.device = str(resolve_device(asked))
        if self.profile == "gpu" and asked == "auto" and self.device == "cpu":
            raise ValueError("PROFILE = 'gpu' needs a GPU and DEVICE = 'auto' found no CUDA here; use PROFILE = 'cpu',"
                             " or DEVICE = 'cpu' to run the gpu profile on the CPU anyway (days at full scale)")
        if self.verbose:
            print(self.summary(asked))
        self.started = time.perf_counter()
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)
        if self.lab:
            prepare_lab(self.data_dir, self.scale, workers=min(8, os.cpu_count() or 1), wait=LAB_WAIT)

    def summary(self, asked: str | None = None) -> str:
        """One line: the data, the device (and what was asked for), the profile, split and seed."""
        data = f"lab ({self.scale})" if self.lab else self.data
        dev = self.device + (f" (DEVICE = {asked!r})" if asked and asked != self.device else "")
        return f"{self.name}: data {data}, device {dev}, profile {self.profile}, split {self.split}, seed {self.seed}"

    @property
    def lab(self) -> bool:
        return self.data == "lab"

    @property
    def checks_effects(self) -> bool:
        """Whether the chapter's asserts on the direction of its effects apply: the lab data in the cpu profile at its
        own scale, with no ``OVERRIDES`` — the execution the book is built from (a rehearsal's 4-iteration runs, or
        a reader's own settings, may score anything)."""
        return self.lab and self.profile == "cpu" and self.scale == PROFILES["cpu"].scale and not self.overrides

    @property
    def full(self) -> bool:
        """Whether this profile runs the experiments a chapter keeps for a GPU."""
        return PROFILES[self.profile].full

    def paths(self, dataset: str) -> tuple[Path, Path]:
        """``(root, cache)`` of ``dataset`` (:func:`twostream_lib.config.dataset_paths`)."""
        return dataset_paths(dataset, self.data_dir, self.scale)

    def config(self, lab_base: str, real_base: str | None = None, overrides: list[str] | tuple[str, ...] = (),
               variant: str | None = None, schedule: float = 1.0) -> TrainConfig:
        """The config of one run: ``configs/<lab_base>.yaml`` on the lab (with the profile's overrides and its
        schedule multiplier, times ``schedule``), ``configs/<real_base>.yaml`` on the real data; then this split,
        seed and device, the chapter's ``overrides`` and the ``OVERRIDES`` parameter.

        Its folder follows the one naming rule (:func:`twostream_lib.config.run_folder`): the config as its file
        gives it is ``runs_dir/[<scale>/]<config name>`` — the folder the command line trains it in, so either
        reuses the other's finished run — and a run whose own ``overrides`` or ``schedule`` change its settings is
        a ``variant``, ``<config name>_<variant>`` (required then: a ValueError otherwise; ignored where the
        overrides change nothing, as the same settings make the same run). :meth:`command` gives the command line
        of each run."""
        prof = PROFILES[self.profile]
        base = lab_base if self.lab else real_base
        if base is None:
            raise ValueError(f"{self.name}: this run exists on the lab data only")
        start = load_config(CONFIG_DIR / f"{base}.yaml")
        factor = prof.schedule if self.lab else 1.0
        where = [f"split={self.split}", f"seed={self.seed}", f"device={self.device}"]
        kw = dict(data_dir=self.data_dir, scale=self.scale, runs_dir=self.runs_dir)

        def make(own: list[str], schedule: float, variant: str | None) -> TrainConfig:
            return run_config(base, [*(prof.overrides if self.lab else ()), *_scaled(start, factor * schedule),
                                     *where, *own, *self.overrides], variant=variant, **kw)

        plain = make([], 1.0, None)
        cfg = make(list(overrides), schedule, variant)
        own = {k for k, v in asdict(cfg).items() if k not in ("name", "out_dir") and getattr(plain, k) != v}
        if not own:
            cfg = plain  # the same settings as the file's: the file's run, whatever the variant is called
        elif variant is None:
            raise ValueError(f"{self.name}: this run of {base} changes {', '.join(sorted(own))}: a variant; "
                             f"give it variant=... (its folder is {base}_<variant>)")
        self.commands[cfg.out_dir] = command_line(cfg, base)
        if finished_run(cfg) is not None:
            self.reused.add(cfg.out_dir)
        return cfg

    def command(self, cfg: TrainConfig) -> str:
        """The command line that trains run ``cfg`` of this chapter (:func:`twostream_lib.config.command_line`),
        from the project's root: it trains (or, with ``--resume``, finds) the very folder the chapter uses."""
        return self.commands[cfg.out_dir]

    def plan(self, runs, stop: bool = False, force: bool = False) -> list[dict]:
        """Print, before any of it starts, what training ``runs`` (configs) costs here: each run's folder, its
        iterations, whether a finished run is reused or a started one resumed, its expected time on this device
        from a short measured timing (:func:`twostream_lib.train.measure_step`: a few SGD steps on random inputs
        of the run's shape; data loading and testing come on top), the command line that trains the same run, and
        the total. Printed on the real datasets and in the gpu profile, or when asked (``force``, ``stop``); the
        cpu profile's lab runs take minutes.

        ``stop`` (a chapter's ``PLAN_ONLY`` parameter) raises :class:`PlanOnly` after printing, so the reader can
        look before hours start. Returns the rows."""
        runs = list(runs)
        if self.lab and not self.full and not (force or stop):
            return []
        rows, timed = [], {}
        for cfg in runs:
            done = _trained_steps(cfg)
            left = max(0, cfg.max_iters - done)
            key = (cfg.arch, cfg.width, cfg.crop_size, cfg.in_channels, cfg.batch_size, cfg.amp, cfg.channels_last,
                   len(cfg.datasets))  # what a step's time depends on
            if left and key not in timed:
                timed[key] = measure_step(cfg, _class_counts(cfg), self.device, batch=min(cfg.batch_size, 32))
            sec = timed.get(key, 0.0) * left
            state = "reused (finished)" if not left else f"resumes at {done}" if done else "new"
            rows.append(dict(run=cfg.out_dir, iters=cfg.max_iters, state=state, seconds=sec))
        total = sum(r["seconds"] for r in rows)
        print(f"Plan of {self.name} on {self.device} (expected: measured SGD steps, data loading and testing "
              f"not included):")
        for r in rows:
            print(f"  {r['run']:<48} {r['iters']:>7} iterations  {r['state']:<18} ~{_duration(r['seconds'])}")
            if r["run"] in self.commands:  # the same run from the command line (project root)
                print(f"      {self.commands[r['run']]}")
        print(f"  total ~{_duration(total)}")
        if stop:
            raise PlanOnly(f"{self.name}: stopped at the plan (PLAN_ONLY = True); set PLAN_ONLY = False to train")
        return rows

    def pretrain_config(self, overrides: list[str] | tuple[str, ...] = (), variant: str | None = None
                        ) -> TrainConfig:
        """The lab's pre-training on the stills (``configs/lab_pretrain.yaml``, the lab's ImageNet, Table 1a) at
        this chapter's scale, profile, seed and device; train it with :func:`twostream_lib.pretrain.pretrain`."""
        return self.config("lab_pretrain", None, list(overrides), variant=variant)

    def pretrained_spatial_config(self, finetune: str = "all", real_base: str = "ucf101_spatial",
                                  overrides: list[str] | tuple[str, ...] = (), variant: str | None = None
                                  ) -> TrainConfig:
        """Table 1a's pre-trained spatial net, fine-tuned (``finetune="all"``) or with the last layer only
        (``"last"``): on the lab, ``lab_spatial`` started from the lab's stills pre-training (the ``best.pt`` of
        :meth:`pretrain_config`'s run: pre-train it first, ``twostream_lib.pretrain.pretrain(cfg)``, trained once),
        variant ``pretrained_<ft|last>``; on real data
        ``configs/<real_base>.yaml`` (ImageNet weights), as its file gives it where ``finetune`` is the file's
        (``ucf101_spatial``: the last layer, the paper's choice), else variant ``ft`` / ``last``. Runs with other
        ``overrides`` need their own ``variant``. Chapter 3 trains it, chapter 6 fuses one."""
        if finetune not in ("all", "last"):
            raise ValueError(f"finetune must be 'all' or 'last', got {finetune!r}")
        if overrides and variant is None:
            raise ValueError(f"{self.name}: a pre-trained run with overrides {list(overrides)} needs a variant=")
        kind = "ft" if finetune == "all" else "last"
        if self.lab:
            pre = Path(self.pretrain_config().out_dir) / "best.pt"
            ov = [f"init_from={pre}", f"finetune={finetune}", *overrides]
            return self.config("lab_spatial", None, ov, variant=variant or f"pretrained_{kind}")
        as_file = load_config(CONFIG_DIR / f"{real_base}.yaml").finetune == finetune
        return self.config("lab_spatial", real_base, [f"finetune={finetune}", *overrides],
                           variant=variant or (None if as_file else kind))

    def scores(self, ckpt: str | os.PathLike, subset: str = "test", frames: int = TEST_FRAMES,
               crops: int = TEST_CROPS, task: int = 0, tag: str = "") -> dict:
        """Video-level scores of checkpoint ``ckpt`` by the paper's protocol (§6), kept beside it as
        ``<subset>_scores_<frames>x<crops>[_task<k>][_<tag>].npz`` and reused while the checkpoint and protocol
        are the same (:func:`twostream_lib.evaluate.cached_scores`)."""
        suffix = (f"_task{task}" if task else "") + (f"_{tag}" if tag else "")
        out = Path(ckpt).parent / f"{subset}_scores_{frames}x{crops}{suffix}.npz"
        return cached_scores(ckpt, out, subset=subset, frames=frames, crops=crops, task=task, device=self.device)

    def solutions(self, base: dict[str, float], where: str | os.PathLike = SOLUTIONS_DIR) -> dict:
        """The computed solutions of this chapter's exercises too long for its execution (they train runs, or score
        them for minutes), from ``where/<name>.json`` (written by ``make solutions``, ``tools/solutions.py``):
        ``dict(values={name: number}, same_runs=bool, note=str)``.
        For each paired difference in the file (``<name>_gap`` and ``<name>_se``, in points) ``values[<name>]`` reads
        it (:func:`twostream_lib.metrics.compared`: ``"ahead of"``, ``"behind"``, ``"within two standard errors
        of"``), so a solution's verdict is glued as its numbers are.

        ``base`` holds the accuracies of this execution's runs that the solutions compare with, keyed as the file
        keys them: ``same_runs`` says whether the file was computed against these very runs, and ``note`` says so
        in a sentence for the page (or, when not, that its numbers come from other runs, and how to recompute
        them). A missing file raises :class:`~twostream_lib.errors.UserError`."""
        path = Path(where) / f"{self.name}.json"
        if not path.is_file():
            raise UserError(f"{path}: no computed solutions for {self.name}; run `make solutions` to compute them")
        doc = json.loads(path.read_text())
        theirs = doc.get("base", {})
        same = set(theirs) == set(base) and all(abs(theirs[k] - float(v)) < 1e-9 for k, v in base.items())
        ran = f"`make solutions` (`tools/solutions.py`, on {doc['machine']})"
        if not base:
            note = f"The numbers of these solutions were computed by {ran}."
        elif same:
            note = f"The numbers of these solutions were computed by {ran} against the runs this page shows."
        else:
            shown = ", ".join(f"{k} {100 * float(v):.1f}%" for k, v in base.items())
            was = ", ".join(f"{k} {100 * float(v):.1f}%" for k, v in theirs.items())
            note = (f"The numbers of these solutions were computed by {ran} against other runs than this page's "
                    f"(theirs: {was}; this page's: {shown}); run `make solutions` to compute them for yours.")
        values = dict(doc["values"])
        for key in [k[:-4] for k in values if k.endswith("_gap") and k[:-4] + "_se" in values]:
            values[key] = compared(values[key + "_gap"], values[key + "_se"])  # "ahead of", "behind", ...
        return {"values": values, "same_runs": same, "note": note}

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
