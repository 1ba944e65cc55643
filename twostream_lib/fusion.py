"""Fusing the spatial and temporal streams (paper §6, Table 3), and the score files ``evaluate`` writes.

Two fusion methods, as in the paper:

* **averaging** of the streams' video-level softmax scores (:func:`average_fusion`);
* a **linear SVM** (multi-class, Crammer & Singer) trained on the stacked, L2-normalised softmax scores of
  the training videos (:func:`svm_fusion`). Note the paper fits the SVM on *training-set* scores, which a
  net has fitted closely; fitting on a held-out part of the training set is the cleaner choice, and
  :func:`fuse_files` takes whichever score files it is given.

Score files (``.npz``, loadable with ``allow_pickle=False``) hold one stream's video-level scores::

    scores     (N, C) float32   softmax scores per video
    labels     (N,)   int64     true class per video
    video_ids  (N,)   unicode   e.g. "v_ApplyEyeMakeup_g01_c01"
    classes    (C,)   unicode   class names, label = index
    meta       ()     unicode   JSON: stream, checkpoint, split, protocol, ...
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import UserError
from .metrics import accuracy, mean_class_accuracy

__all__ = [
    "ScoreFileError",
    "average_fusion",
    "svm_fusion",
    "stack_l2",
    "save_scores",
    "load_scores",
    "check_aligned",
    "fuse_files",
]


class ScoreFileError(UserError, ValueError):
    """A score file is unreadable, inconsistent, or the wrong one for its role; the message names it."""


def _check_scores_list(scores_list, what: str) -> list[np.ndarray]:
    arrs = [np.asarray(s, dtype=np.float64) for s in scores_list]
    if not arrs:
        raise ValueError(f"{what}: need at least one stream's scores")
    for i, a in enumerate(arrs):
        if a.ndim != 2:
            raise ValueError(f"{what}: stream {i} scores must be (N, C), got shape {a.shape}")
        if a.shape != arrs[0].shape:
            raise ValueError(f"{what}: stream {i} scores have shape {a.shape}, stream 0 has {arrs[0].shape}")
    return arrs


def average_fusion(scores_list: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted average of the streams' softmax scores (§6): list of ``(N, C)`` -> ``(N, C)``.

    ``weights`` (one per stream, default equal) are normalised to sum to 1.
    """
    arrs = _check_scores_list(scores_list, "average_fusion")
    w = np.ones(len(arrs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(arrs),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"average_fusion: need {len(arrs)} non-negative weights with a positive sum, got {weights}")
    w = w / w.sum()
    return sum(wi * a for wi, a in zip(w, arrs))


def stack_l2(scores_list: Sequence[np.ndarray]) -> np.ndarray:
    """Each stream's score vectors L2-normalised, then concatenated: list of ``(N, C)`` -> ``(N, S*C)``."""
    arrs = _check_scores_list(scores_list, "stack_l2")
    return np.concatenate([a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12) for a in arrs], axis=1)


def svm_fusion(train_scores: Sequence[np.ndarray], train_labels, test_scores: Sequence[np.ndarray],
               C: float = 1.0, max_iter: int = 10000, num_classes: int | None = None) -> np.ndarray:
    """Linear-SVM fusion (§6): a multi-class linear SVM (Crammer & Singer) on stacked L2-normalised softmax
    scores, fitted on the training videos' scores.

    ``train_scores``: list (one per stream) of ``(N, C)``; ``train_labels``: ``(N,)``; ``test_scores``: list of
    ``(M, C)``. Returns ``(M, C)`` decision scores (argmax = prediction). A class absent from the training
    labels gets a score below every other in its row, so it is never predicted.
    """
    from sklearn.svm import LinearSVC

    xtr = stack_l2(train_scores)
    xte = stack_l2(test_scores)
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"svm_fusion: train has {len(train_scores)} streams x {train_scores[0].shape[1]} classes "
                         f"but test has {len(test_scores)} streams x {np.asarray(test_scores[0]).shape[1]}")
    y = np.asarray(train_labels).astype(np.int64)
    if y.shape != (xtr.shape[0],):
        raise ValueError(f"svm_fusion: train_labels must be ({xtr.shape[0]},), got {y.shape}")
    k = np.asarray(test_scores[0]).shape[1] if num_classes is None else num_classes
    present = np.unique(y)
    if present.size and (present[0] < 0 or present[-1] >= k):
        raise ValueError(f"svm_fusion: train_labels must lie in [0, {k}), got range [{present[0]}, {present[-1]}]")
    if present.size < 2:
        raise ValueError(f"svm_fusion: the training scores cover {present.size} class(es); need at least 2")
    svm = LinearSVC(C=C, multi_class="crammer_singer", max_iter=max_iter, random_state=0)
    svm.fit(xtr, y)  # liblinear may warn that it did not converge: raise max_iter, or lower C
    d = svm.decision_function(xte)
    if d.ndim == 1:  # two classes: sklearn collapses crammer_singer to one score of class_[1] vs class_[0]
        d = np.stack([-d, d], axis=1) / 2.0
    out = np.empty((xte.shape[0], k))
    out[:] = (d.min(axis=1, keepdims=True) - 1.0) if d.size else 0.0
    out[:, svm.classes_] = d
    return out


# ----------------------------------------------------------------------------------------------------------
# Score files


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, scores=scores, labels=labels, video_ids=video_ids, classes=classes, meta=meta_json)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


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


def _check_roles(test: list[dict], train: list[dict]) -> None:
    """SVM fusion is fitted on training-set scores (§6): refuse test scores in the training role (and training
    scores in the test role), and any video that is in both, which would fit the SVM on the videos it is tested on."""
    for f, role, wrong in [(f, "training", "test") for f in train] + [(f, "test", "train") for f in test]:
        if f["meta"].get("subset") == wrong:
            raise ScoreFileError(f"score file {f['path']} holds {wrong}-set scores (subset={wrong}) but is given as "
                                 f"{role} scores; score the {role} videos with `evaluate --subset "
                                 f"{'train' if role == 'training' else 'test'}`")
    shared = set(train[0]["video_ids"]) & set(test[0]["video_ids"])
    if shared:
        raise ScoreFileError(f"training score file {train[0]['path']} and test score file {test[0]['path']} share "
                             f"{len(shared)} video(s), e.g. {sorted(shared)[:3]}: the SVM would be fitted on test videos")


def fuse_files(score_paths: Sequence[str | os.PathLike], method: str = "average",
               train_score_paths: Sequence[str | os.PathLike] | None = None,
               weights: Sequence[float] | None = None, C: float = 1.0) -> dict:
    """Fuse the score files of several streams (§6), e.g. ``[spatial.npz, temporal.npz]``.

    ``method="average"`` averages (optionally weighted); ``method="svm"`` fits :func:`svm_fusion` on
    ``train_score_paths`` (the same streams, in the same order, scored on the training videos).
    Returns ``dict(scores (N,C), labels (N,), video_ids, classes, accuracy, mean_class_accuracy,
    stream_accuracy [one per stream])`` in the first file's video order.
    """
    if method not in ("average", "svm"):
        raise ValueError(f"fuse_files: method must be 'average' or 'svm', got {method!r}")
    if not score_paths:
        raise ValueError("fuse_files: no score files given")
    files = [load_scores(p) for p in score_paths]
    files = [files[0]] + [check_aligned(files[0], f) for f in files[1:]]
    labels, k = files[0]["labels"], len(files[0]["classes"])
    test = [f["scores"] for f in files]
    if method == "average":
        scores = average_fusion(test, weights)
    else:
        if not train_score_paths or len(train_score_paths) != len(score_paths):
            raise ValueError(f"fuse_files: method='svm' needs one training score file per stream "
                             f"({len(score_paths)}), got {0 if not train_score_paths else len(train_score_paths)}")
        train = [load_scores(p) for p in train_score_paths]
        _check_roles(files, train)
        train = [train[0]] + [check_aligned(train[0], f) for f in train[1:]]
        if train[0]["classes"] != files[0]["classes"]:
            raise ScoreFileError(f"training score file {train[0]['path']} and test score file {files[0]['path']} "
                                 f"have different classes")
        scores = svm_fusion([f["scores"] for f in train], train[0]["labels"], test, C=C, num_classes=k)
    return {"scores": scores, "labels": labels, "video_ids": files[0]["video_ids"], "classes": files[0]["classes"],
            "accuracy": accuracy(scores, labels), "mean_class_accuracy": mean_class_accuracy(scores, labels, k),
            "stream_accuracy": [accuracy(s, labels) for s in test]}


def main(argv: list[str] | None = None) -> int:
    """``python -m twostream_lib fuse SCORES.npz SCORES.npz ... [--method average|svm --train T.npz T.npz ...]``."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m twostream_lib fuse",
                                description="Late fusion of the streams' softmax scores (paper §6, Table 3).")
    p.add_argument("scores", nargs="+", help="test score files, one per stream (written by `evaluate`)")
    p.add_argument("--method", default="average", choices=["average", "svm"])
    p.add_argument("--train", nargs="+", default=None,
                   help="for --method svm: the same streams' scores on the training videos (evaluate --subset train)")
    p.add_argument("--weights", nargs="+", type=float, default=None, help="averaging weights, one per stream")
    p.add_argument("--C", type=float, default=1.0, help="SVM regularisation constant")
    p.add_argument("--out", default=None, help="write the fused scores here (.npz)")
    a = p.parse_args(argv)
    try:
        r = fuse_files(a.scores, a.method, a.train, a.weights, a.C)
    except (UserError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, acc in zip(a.scores, r["stream_accuracy"]):
        print(f"{path}: accuracy {100 * acc:.1f}%")
    print(f"fused ({a.method}): accuracy {100 * r['accuracy']:.1f}%, "
          f"mean class accuracy {100 * r['mean_class_accuracy']:.1f}%  ({len(r['labels'])} videos)")
    if a.out:
        save_scores(a.out, r["scores"], r["labels"], r["video_ids"], r["classes"],
                    {"method": a.method, "streams": [str(s) for s in a.scores]})
    return 0
