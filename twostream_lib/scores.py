"""Score files: one stream's video-level scores on disk, written by ``evaluate`` and read by ``fuse`` (§6).

Score files (``.npz``, loadable with ``allow_pickle=False``) hold one stream's video-level scores::

    scores     (N, C) float32   softmax scores per video
    labels     (N,)   int64     true class per video
    video_ids  (N,)   unicode   e.g. "v_ApplyEyeMakeup_g01_c01"
    classes    (C,)   unicode   class names, label = index
    meta       ()     unicode   JSON: stream, checkpoint, split, protocol, ...

The ``meta`` of a file written by :func:`twostream_lib.evaluate.evaluate_checkpoint` records the checkpoint, the
subset (``train`` or ``test``), the views (``frames``, ``crops``), the dataset and split: what
:func:`twostream_lib.evaluate.cached_scores` checks before reusing a file, and what fusion checks before fitting
an SVM on it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import UserError
from .files import atomic_write

__all__ = ["ScoreFileError", "save_scores", "load_scores", "check_aligned"]


class ScoreFileError(UserError, ValueError):
    """A score file is unreadable, inconsistent, or the wrong one for its role; the message names it."""


def save_scores(path: str | os.PathLike, scores, labels, video_ids: Sequence[str], classes: Sequence[str],
                meta: dict | None = None) -> Path:
    """Write one stream's video-level scores to ``path`` (``.npz``, atomically: temp file then rename)."""
    path = Path(path)
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64)
    video_ids = np.asarray([str(v) for v in video_ids], dtype=np.str_)
    classes = np.asarray([str(c) for c in classes], dtype=np.str_)
    n = scores.shape[0] if scores.ndim == 2 else -1
    if scores.ndim != 2 or labels.shape != (n,) or video_ids.shape != (n,) or scores.shape[1] != len(classes):
        raise ValueError(f"save_scores({path}): need scores (N, C), labels (N,), video_ids (N,), C classes; got "
                         f"{scores.shape}, {labels.shape}, {video_ids.shape}, {len(classes)} classes")
    if len(set(video_ids.tolist())) != n:
        raise ValueError(f"save_scores({path}): video_ids are not unique")
    meta_json = np.asarray(json.dumps(meta or {}, sort_keys=True, default=str), dtype=np.str_)
    return atomic_write(path, lambda f: np.savez(f, scores=scores, labels=labels, video_ids=video_ids,
                                                 classes=classes, meta=meta_json))


def load_scores(path: str | os.PathLike) -> dict:
    """Read a score file -> ``dict(scores (N,C) float32, labels (N,) int64, video_ids list[str],
    classes list[str], meta dict, path str)``. Errors name the file."""
    path = Path(path)
    keys = ("scores", "labels", "video_ids", "classes", "meta")
    if not path.is_file():
        raise ScoreFileError(f"score file {path} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise ScoreFileError(f"score file {path} lacks {missing} (has {z.files}); write it with save_scores")
            d = {k: z[k] for k in keys}
    except ScoreFileError:
        raise
    except Exception as e:  # noqa: BLE001 - not an .npz (a text file, a truncated zip, pickled data): name the file
        raise ScoreFileError(f"score file {path} is not a readable .npz score file "
                             f"({type(e).__name__}: {e or 'no detail'})") from e
    try:
        meta = json.loads(str(d["meta"]))
    except json.JSONDecodeError as e:
        raise ScoreFileError(f"score file {path}: meta is not valid JSON: {e}") from e
    out = {"scores": d["scores"], "labels": d["labels"].astype(np.int64), "video_ids": d["video_ids"].tolist(),
           "classes": d["classes"].tolist(), "meta": meta, "path": str(path)}
    n = len(out["video_ids"])
    if out["scores"].shape != (n, len(out["classes"])) or out["labels"].shape != (n,):
        raise ScoreFileError(f"score file {path}: inconsistent shapes scores {out['scores'].shape}, "
                         f"labels {out['labels'].shape}, {n} video ids, {len(out['classes'])} classes")
    return out


def check_aligned(a: dict, b: dict) -> dict:
    """Check that two loaded score files describe the same videos, and return ``b`` reordered to ``a``'s order.

    Requires the same class list (same order), the same set of video ids, and the same label for each video.
    Raises ``ValueError`` naming both files and the first differences otherwise.
    """
    na, nb = a.get("path", "<a>"), b.get("path", "<b>")
    if list(a["classes"]) != list(b["classes"]):
        diff = [i for i, (x, y) in enumerate(zip(a["classes"], b["classes"])) if x != y]
        raise ScoreFileError(f"score files {na} and {nb} have different classes ({len(a['classes'])} vs "
                         f"{len(b['classes'])}; first differences at index {diff[:5]})")
    ida, idb = list(a["video_ids"]), list(b["video_ids"])
    sa, sb = set(ida), set(idb)
    if sa != sb:
        raise ScoreFileError(f"score files {na} and {nb} cover different videos: {len(sa - sb)} only in the first "
                         f"(e.g. {sorted(sa - sb)[:3]}), {len(sb - sa)} only in the second (e.g. {sorted(sb - sa)[:3]})")
    pos = {v: i for i, v in enumerate(idb)}
    order = np.array([pos[v] for v in ida], dtype=np.int64)
    lb = np.asarray(b["labels"])[order]
    bad = np.flatnonzero(lb != np.asarray(a["labels"]))
    if bad.size:
        ex = [(ida[i], int(a["labels"][i]), int(lb[i])) for i in bad[:3]]
        raise ScoreFileError(f"score files {na} and {nb} disagree on the labels of {bad.size} video(s), "
                         f"e.g. (video, label in first, label in second) {ex}")
    out = dict(b)
    out["scores"] = np.asarray(b["scores"])[order]
    out["labels"] = lb
    out["video_ids"] = ida
    return out
