"""Fusing the spatial and temporal streams (paper §6, Table 3), and the score files ``evaluate`` writes.

Two fusion methods, as in the paper, over the score files that ``evaluate`` writes (:mod:`twostream_lib.scores`):

* **averaging** of the streams' video-level softmax scores (:func:`average_fusion`);
* a **linear SVM** (multi-class, Crammer & Singer) trained on the stacked, L2-normalised softmax scores of
  the training videos (:func:`svm_fusion`). Note the paper fits the SVM on *training-set* scores, which a
  net has fitted closely; fitting on a held-out part of the training set is the cleaner choice, and
  :func:`fuse_files` takes whichever score files it is given.

"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np

from .errors import ArgumentParser, FloatRange, OptionError, UserError
from .files import existing_file, writable_file
from .metrics import accuracy, mean_class_accuracy
from .scores import ScoreFileError, check_aligned, load_scores, save_scores

__all__ = [
    "average_fusion",
    "svm_fusion",
    "stack_l2",
    "fuse_files",
]


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
    p = ArgumentParser(prog="python -m twostream_lib fuse",
                                description="Late fusion of the streams' softmax scores (paper §6, Table 3).")
    p.add_argument("scores", nargs="+", help="test score files, one per stream (written by `evaluate`)")
    p.add_argument("--method", default="average", choices=["average", "svm"])
    p.add_argument("--train", nargs="+", default=None,
                   help="for --method svm: the same streams' scores on the training videos (evaluate --subset train)")
    p.add_argument("--weights", nargs="+", type=FloatRange(0.0), default=None,
                   help="averaging weights, one per stream, >= 0 (normalised to sum to 1)")
    p.add_argument("--C", type=FloatRange(0.0, lo_open=True), default=1.0, help="SVM regularisation constant, > 0")
    p.add_argument("--out", default=None, help="write the fused scores here (.npz)")
    a = p.parse_args(argv)
    try:
        _check_args(a)
        r = fuse_files(a.scores, a.method, a.train, a.weights, a.C)
    except (UserError, ValueError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line
        return 2
    for path, acc in zip(a.scores, r["stream_accuracy"]):
        print(f"{path}: accuracy {100 * acc:.1f}%")
    print(f"fused ({a.method}): accuracy {100 * r['accuracy']:.1f}%, "
          f"mean class accuracy {100 * r['mean_class_accuracy']:.1f}%  ({len(r['labels'])} videos)")
    if a.out:
        save_scores(a.out, r["scores"], r["labels"], r["video_ids"], r["classes"],
                    {"method": a.method, "streams": [str(s) for s in a.scores]})
    return 0


def _check_args(a) -> None:
    """Every option of ``fuse`` before any score file is read: one :class:`OptionError` naming the option."""
    for path in a.scores:
        existing_file(path, "score file", "score file (.npz, written by `evaluate`)")
    for path in a.train or []:
        existing_file(path, "--train", "score file (.npz, written by `evaluate --subset train`)")
    if a.out is not None:
        writable_file(a.out, "--out", "score file")
    n = len(a.scores)
    if a.method == "svm":
        if not a.train or len(a.train) != n:
            raise OptionError(f"--train: --method svm needs one training score file per stream ({n}), got "
                              f"{len(a.train or [])}")
        if a.weights is not None:
            raise OptionError("--weights: applies to --method average; the SVM learns how to weigh the streams")
    else:
        if a.train:
            raise OptionError(f"--train: applies to --method svm; --method {a.method} uses no training scores")
        if a.weights is not None and len(a.weights) != n:
            raise OptionError(f"--weights {' '.join(f'{w:g}' for w in a.weights)}: give one weight per score file "
                              f"({n}), got {len(a.weights)}")
        if a.weights is not None and not 0 < sum(a.weights) < float("inf"):
            raise OptionError(f"--weights {' '.join(f'{w:g}' for w in a.weights)}: need a positive, finite sum")
