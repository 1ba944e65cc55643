"""Accuracy measures of video-level scores (paper §6; the pooling itself is :mod:`twostream_lib.evaluate`).

All functions take NumPy arrays (or anything ``np.asarray`` accepts, e.g. CPU tensors). ``scores`` are
``(N, C)`` class scores (softmax probabilities, logits or SVM decision values: only their argmax matters here);
``labels`` are ``(N,)`` integer class indices. Ties in an argmax go to the lowest class index.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import binomtest

__all__ = [
    "binomial_se",
    "paired_se",
    "beats",
    "compared",
    "sign_test",
    "softmax",
    "pair_accuracy",
    "predictions",
    "accuracy",
    "per_class_accuracy",
    "mean_class_accuracy",
    "confusion_matrix",
]


def _scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {scores.shape}")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels must be ({scores.shape[0]},) to match scores {scores.shape}, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must lie in [0, {scores.shape[1]}), got range [{labels.min()}, {labels.max()}]")
    return scores, labels.astype(np.int64)


def softmax(logits, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis``."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def predictions(scores) -> np.ndarray:
    """Predicted class per row: ``argmax`` of ``(N, C)`` scores -> ``(N,)`` int64."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {scores.shape}")
    return scores.argmax(axis=1).astype(np.int64)


def accuracy(scores, labels) -> float:
    """Fraction of rows whose top-scoring class is the label (the paper's "accuracy")."""
    scores, labels = _scores_labels(scores, labels)
    if labels.size == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((scores.argmax(axis=1) == labels).mean())


def per_class_accuracy(scores, labels, num_classes: int | None = None) -> np.ndarray:
    """Accuracy of each class, ``(num_classes,)``; NaN for a class with no sample."""
    scores, labels = _scores_labels(scores, labels)
    k = scores.shape[1] if num_classes is None else num_classes
    correct = np.bincount(labels, weights=(scores.argmax(axis=1) == labels).astype(np.float64), minlength=k)
    total = np.bincount(labels, minlength=k).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / np.maximum(total, 1), np.nan)[:k]


def mean_class_accuracy(scores, labels, num_classes: int | None = None) -> float:
    """Per-class accuracy averaged over the classes that have samples (insensitive to class imbalance)."""
    pc = per_class_accuracy(scores, labels, num_classes)
    if np.all(np.isnan(pc)):
        raise ValueError("mean class accuracy of an empty set is undefined")
    return float(np.nanmean(pc))


def confusion_matrix(pred, labels, num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` int64 counts: row = true class, column = predicted class."""
    pred = np.asarray(pred).astype(np.int64).ravel()
    labels = np.asarray(labels).astype(np.int64).ravel()
    if pred.shape != labels.shape:
        raise ValueError(f"pred {pred.shape} and labels {labels.shape} must have the same length")
    for name, a in (("pred", pred), ("labels", labels)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} must lie in [0, {num_classes}), got range [{a.min()}, {a.max()}]")
    return np.bincount(labels * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes)


def pair_accuracy(scores: np.ndarray, labels, a: int, b: int) -> tuple[float, int]:
    """Accuracy of the decision "class ``a`` or class ``b``" on the videos of those two classes (chance 0.5),
    and how many videos that is — how well a stream tells apart the members of a motion-only pair.

    Args:
        scores: ``(N, C)`` video scores. labels: ``(N,)`` true classes. a, b: the two class indices.
    """
    labels = np.asarray(labels)
    sel = np.isin(labels, [a, b])
    if not sel.any():
        raise ValueError(f"pair_accuracy: no video of class {a} or {b}")
    pred = np.where(scores[sel, a] >= scores[sel, b], a, b)
    return float((pred == labels[sel]).mean()), int(sel.sum())


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` independent test videos: ``sqrt(p (1 - p) / n)``."""
    if n < 1:
        raise ValueError(f"binomial_se: need n >= 1 videos, got {n}")
    return math.sqrt(max(p * (1.0 - p), 0.0) / n)


def beats(diff: float, se: float, k: float = 2.0) -> bool:
    """The book's one rule for a comparison: a difference ``diff`` counts as shown when it is positive by more
    than ``k`` standard errors ``se``."""
    return bool(diff > k * se)


def compared(diff: float, se: float, k: float = 2.0) -> str:
    """How a paired difference ``diff`` (first minus second, with standard error ``se``) reads in the sentence
    "the first is ... the second" by :func:`beats`: ``"ahead of"``, ``"behind"`` (the second beats the first), else
    ``"within two standard errors of"`` (``k`` written out). The book glues it, so its prose follows its runs."""
    if beats(diff, se, k):
        return "ahead of"
    if beats(-diff, se, k):
        return "behind"
    return f"within {'two' if k == 2 else k} standard errors of"


def paired_se(correct_a, correct_b) -> float:
    """Standard error of the accuracy difference ``a - b`` of two methods scored on the *same* test videos
    (``correct_*``: ``(N,)`` booleans): the standard deviation of the per-video difference over ``sqrt(N)``.
    Smaller than the unpaired error when the two methods err on the same videos."""
    d = np.asarray(correct_a, np.float64) - np.asarray(correct_b, np.float64)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"paired_se: need two (N,) arrays with N >= 2, got shape {d.shape}")
    return float(d.std(ddof=1) / math.sqrt(d.size))


def sign_test(wins: int, losses: int) -> float:
    """Two-sided sign test (an exact binomial test, ties dropped): the probability of a split of ``wins`` and
    ``losses`` at least this uneven if both methods were equally good. E.g. over test videos where exactly one of
    two methods is right, or over classes where one beats the other."""
    n = int(wins) + int(losses)
    return 1.0 if n == 0 else float(binomtest(int(wins), n, 0.5).pvalue)
