"""Checkpoints: one dict per file, written atomically, loaded without running code from the file.

A checkpoint is a plain dict (as in torchvision's reference scripts)::

    model        the net's state_dict
    config       the run's TrainConfig as a dict
    step         iterations done
    num_classes  one class count per head;  classes: the class names per head (evaluation checks them)
    best_val, best_step, val_acc            model selection on held-out training videos
    optimizer, scheduler, rng               only in ``last.pt``: what an exact resume needs

RNG states are stored as tensors and plain lists, so everything loads with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import errno
import os
import random
import shutil
import zipfile
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .errors import UserError
from .files import atomic_write, sha256sum

__all__ = ["CheckpointError", "make_checkpoint", "save_checkpoint", "load_checkpoint", "verify_archive", "init_weights_sha256", "rng_state",
           "set_rng_state", "load_matching_weights"]

#: below this much free space, a failed checkpoint write is reported as a full disk (torch's own error for it is
#: "unexpected pos" or "file write failed", with no errno)
DISK_FULL_BYTES = 64 * 2**20


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, truncated, or not one of this library's; the message names the file."""


def rng_state() -> dict:
    """The torch (CPU and CUDA), NumPy and Python RNG states, as tensors and plain lists."""
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


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def init_weights_sha256(cfg) -> str | None:
    """The SHA-256 of the checkpoint a run starts from (``cfg.init_from``, relative paths from the working
    directory), or ``None`` without one: a run fine-tuned from weights that have changed since is another run."""
    init = getattr(cfg, "init_from", None)
    return sha256sum(init) if init and Path(init).is_file() else None


def make_checkpoint(model: nn.Module, cfg, step: int, classes: list[list[str]], *, best_val: float | None = None,
                    best_step: int = -1, val_acc: float | None = None, optimizer=None, scheduler=None) -> dict:
    """The checkpoint dict of ``model`` after ``step`` iterations of the run ``cfg`` (a :class:`TrainConfig`), with
    the working directory its relative paths start from (``cwd``).

    With ``optimizer`` and ``scheduler`` it is a resumable checkpoint (``last.pt``): their states and the RNG
    states are added."""
    ckpt: dict[str, Any] = {"model": model.state_dict(), "config": asdict(cfg), "step": int(step),
                            "num_classes": [len(c) for c in classes], "classes": [list(c) for c in classes],
                            "best_val": best_val, "best_step": int(best_step), "val_acc": val_acc,
                            "cwd": os.getcwd(),  # where the config's relative paths start
                            "init_sha256": init_weights_sha256(cfg)}
    if optimizer is not None:
        ckpt.update(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=rng_state())
    return ckpt


def save_checkpoint(path: str | os.PathLike, ckpt: dict) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves a half-written
    checkpoint under ``path``. A full disk raises :class:`CheckpointError` saying so (the file under ``path``, if
    any, is the previous one, untouched)."""
    path = Path(path)
    try:
        return atomic_write(path, lambda f: torch.save(ckpt, f))
    except (OSError, RuntimeError) as e:
        free = shutil.disk_usage(path.parent).free
        if getattr(e, "errno", None) != errno.ENOSPC and free >= DISK_FULL_BYTES:
            raise
        kept = f"{path} is the previous checkpoint, untouched" if path.is_file() else f"no {path.name} was written"
        raise CheckpointError(f"can't write {path}: the disk is full ({free / 2**20:.0f} MiB free in "
                              f"{path.parent}); {kept}. Free some space and resume the run (--resume)") from e


def verify_archive(path: Path) -> None:
    """Check every member of the zip archive ``torch.save`` writes against its CRC-32: flipped bytes in the tensor
    data (a bad disk, a broken copy) raise :class:`CheckpointError` naming the file, instead of loading as other
    weights. A file that is no zip archive (a legacy ``torch.save``) is left to ``torch.load``."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except zipfile.BadZipFile:
        return
    except (OSError, zlib.error, EOFError) as e:
        raise CheckpointError(f"can't read checkpoint {path}: {type(e).__name__}: {e}") from e
    if bad is not None:
        raise CheckpointError(f"{path} is corrupt: its member {bad} fails its CRC check (the file changed after "
                              "it was written); use another checkpoint, or resume from an intact last.pt")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict with ``weights_only=True`` (no code from the file runs). Raises
    :class:`CheckpointError` naming the file when it is missing, truncated or not a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    verify_archive(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds; name the file and the kind
        why = f"{type(e).__name__}: {e}" if str(e) else f"{type(e).__name__} (the file is truncated or corrupt)"
        raise CheckpointError(f"can't load checkpoint {path}: {why}") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a twostream_lib checkpoint (a dict with 'model' and 'config')")
    return ckpt


def load_matching_weights(model: nn.Module, path: str | os.PathLike) -> list[str]:
    """Copy the weights of checkpoint ``path`` into ``model`` where names and shapes agree (``init_from``, e.g.
    Table 2's "fine-tuning a net trained on UCF-101"); returns the names left at their fresh initialisation."""
    src = load_checkpoint(path)["model"]
    own = model.state_dict()
    loaded = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    if not loaded:
        raise CheckpointError(f"init_from={path}: no parameter matches this model (another arch or input?)")
    model.load_state_dict(loaded, strict=False)
    return sorted(set(own) - set(loaded))
