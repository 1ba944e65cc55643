"""Video-level evaluation by the paper's protocol (§6 "Testing").

"At test time, given a video, we sample a fixed number of frames (25 in our experiments) with equal temporal
spacing between them. From each of the frames we then obtain 10 ConvNet inputs by cropping and flipping four
corners and the center of the frame. The class scores for the whole video are then obtained by averaging the
scores across the sampled frames and crops therein."

A test-mode dataset (:class:`twostream_lib.data.SpatialDataset` / ``TemporalDataset`` with ``mode="test"``)
has one item per (video, frame): ``(views (10, C, H, W), label, video_index)``; :func:`predict_videos` averages
the softmax over a video's 25 x 10 views -> ``(num_videos, num_classes)``. :func:`evaluate_checkpoint` does this
for a trained run's test (or training) videos and writes a score file (:mod:`twostream_lib.scores`) for
:mod:`twostream_lib.fusion`; :func:`cached_scores` reuses such a file while its checkpoint and protocol are the
same. The protocol's constants live in :mod:`twostream_lib.protocol`.

    python -m twostream_lib evaluate runs/lab_spatial/best.pt --subset test --out runs/lab_spatial/test_scores.npz
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import metrics
from .checkpoint import CheckpointError, load_checkpoint
from .config import anchor_paths, config_from_dict
from .data import VideoCache, items_for, make_dataset
from .errors import MAX_WORKERS, ArgumentParser, IntRange, UserError, check_device, run_cli
from .files import existing_file, existing_folder, writable_file
from .models import build_model_for
from .protocol import TEST_CROPS, TEST_FRAMES, check_views
from .runtime import autocast, resolve_device, set_cpu_threads
from .scores import ScoreFileError, load_scores, save_scores
from .splits import load_split

__all__ = ["predict_videos", "video_score_sums", "evaluate_checkpoint", "cached_scores",
           "load_model_from_checkpoint", "summarize", "ClassListError", "TaskError", "main", "MAX_TEST_FRAMES",
           "MAX_BATCH_VIDEOS"]

#: the most test frames (stacks) per video the command line takes: more than any UCF-101 / HMDB-51 video has but
#: a few (the extra ones repeat frames), while each one costs memory for every video
MAX_TEST_FRAMES = 1000
#: the most videos per test batch the command line takes (a batch's views are all in memory at once)
MAX_BATCH_VIDEOS = 1024


class ClassListError(UserError, ValueError):
    """A checkpoint's classes are not the dataset's (other names, another order, another count)."""


class TaskError(UserError, ValueError):
    """``task`` names no head of the checkpoint (a multitask run has one per dataset, §4)."""

    def __init__(self, ckpt_path, task: int, num_tasks: int, datasets, name: str = "task"):
        self.fields = (ckpt_path, task, num_tasks, datasets)
        super().__init__(f"{name} {task}: out of range; {ckpt_path} has {num_tasks} head(s) (trained on "
                         f"{list(datasets)}), so {name} must be in 0..{num_tasks - 1}")


def _num_videos(dataset) -> int:
    return int(getattr(dataset, "num_videos", len(dataset.labels)))


def _items_per_video(dataset) -> int:
    return int(getattr(dataset, "frames", 1)) if hasattr(dataset, "video_index") else 1


@torch.no_grad()
def video_score_sums(model: nn.Module, dataset, device: str | torch.device = "cpu", batch_videos: int = 1,
                     progress: bool = True, task: int | None = None, indices: Sequence[int] | None = None,
                     max_views: int = 512, workers: int = 0, amp: bool = False,
                     channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-video sums of the items' view-averaged softmax scores, and item counts: ``(sums (N, K), counts
    (N,))`` float64, over the test items ``indices`` (default: all). :func:`predict_videos` divides them; the
    trainer first sums them over processes. Arguments as in :func:`predict_videos`."""
    device = torch.device(device)
    n_videos = _num_videos(dataset)
    subset = dataset if indices is None else torch.utils.data.Subset(dataset, list(indices))
    loader = torch.utils.data.DataLoader(subset, batch_size=max(1, batch_videos * _items_per_video(dataset)),
                                         shuffle=False, num_workers=workers, pin_memory=device.type == "cuda",
                                         generator=torch.Generator().manual_seed(0))
    item_ids = list(range(len(dataset))) if indices is None else list(indices)
    was_training = model.training
    model.eval()
    sums: torch.Tensor | None = None
    counts = torch.zeros(n_videos, dtype=torch.float64)
    it = loader
    if progress:
        from tqdm import tqdm
        it = tqdm(loader, desc="test items", unit="batch", leave=False)
    pos = 0
    try:
        for batch in it:
            x = batch[0]
            if x.dim() != 5:
                raise ValueError(f"predict_videos: a test-mode dataset must give views (V, C, H, W) per item, so "
                                 f"batches (B, V, C, H, W); got {tuple(x.shape)}")
            b, v = x.shape[:2]
            if len(batch) > 2:  # (views, label, video_index): one (video, frame) pair per item
                vids = batch[2].long()
            else:               # (views, label): one whole video per item
                vids = torch.as_tensor(item_ids[pos:pos + b], dtype=torch.long)
            pos += b
            flat = x.reshape(b * v, *x.shape[2:])
            probs = []
            for s in range(0, flat.shape[0], max_views):
                xs = flat[s:s + max_views].to(device, non_blocking=True)
                if channels_last:
                    xs = xs.contiguous(memory_format=torch.channels_last)
                with autocast(device, amp):
                    logits = model(xs) if task is None else model(xs, task=task)
                if isinstance(logits, (list, tuple)):
                    raise ValueError("predict_videos: the model has several heads (multitask, §4); pass task=k")
                probs.append(F.softmax(logits.float(), dim=1).cpu())
            item_scores = torch.cat(probs).view(b, v, -1).double().mean(dim=1)
            if sums is None:
                sums = torch.zeros(n_videos, item_scores.shape[1], dtype=torch.float64)
            sums.index_add_(0, vids, item_scores)
            counts.index_add_(0, vids, torch.ones(b, dtype=torch.float64))
    finally:
        model.train(was_training)
    if sums is None:
        sums = torch.zeros(n_videos, 0, dtype=torch.float64)
    return sums, counts


def predict_videos(model: nn.Module, dataset, device: str | torch.device = "cpu", batch_videos: int = 1,
                   progress: bool = True, task: int | None = None, indices: Sequence[int] | None = None,
                   max_views: int = 512, workers: int = 0, amp: bool = False,
                   channels_last: bool = False) -> np.ndarray:
    """Softmax scores averaged over each video's views (§6), ``(num_videos, num_classes)`` float32.

    Args:
        model: a stream net, run in eval mode (its mode is restored afterwards). For a multitask net pass
            ``task``, the head to read (§4).
        dataset: a test-mode dataset. Either items are ``(video, frame)`` pairs,
            ``dataset[i] -> (views (V, C, H, W), label, video_index)`` (:mod:`twostream_lib.data`: V = 10 crops,
            25 items per video), or whole videos, ``dataset[i] -> (views (V, C, H, W), label)``.
        batch_videos: one DataLoader batch holds the items of this many videos.
        indices: score only these items (rows of videos with no scored item are NaN).
        max_views: at most this many views per forward pass (bounds memory).
        workers: DataLoader workers. amp: bfloat16 autocast; the softmax is computed in float32.

    Each item's views are softmaxed and averaged, then a video's items are averaged: with the same number of
    views per item this is the mean softmax over the video's ``frames x crops`` views.
    """
    sums, counts = video_score_sums(model, dataset, device, batch_videos, progress, task, indices, max_views,
                                    workers, amp, channels_last)
    return (sums / counts[:, None]).numpy().astype(np.float32)


def summarize(scores: np.ndarray, labels: Sequence[int], num_classes: int) -> dict:
    """Accuracy, mean per-class accuracy and the confusion matrix (rows = true class) of video scores."""
    labels = np.asarray(labels, dtype=np.int64)
    pred = metrics.predictions(scores)
    return {
        "accuracy": metrics.accuracy(scores, labels),
        "mean_class_accuracy": metrics.mean_class_accuracy(scores, labels, num_classes),
        "per_class_accuracy": metrics.per_class_accuracy(scores, labels, num_classes),
        "confusion": metrics.confusion_matrix(pred, labels, num_classes),
    }


def load_model_from_checkpoint(ckpt_path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild a trained net from a checkpoint written by :mod:`twostream_lib.train` ->
    ``(model in eval mode, TrainConfig, checkpoint dict)``. Loads with ``weights_only=True``."""
    ckpt = load_checkpoint(ckpt_path, map_location="cpu")
    # its data paths as the run gave them, from the directory it was trained in (the command line's data/...)
    cfg = config_from_dict(anchor_paths(ckpt["config"], ckpt.get("cwd")), source=f"{ckpt_path} (config)")
    model = build_model_for(cfg, ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), cfg, ckpt


def check_classes(ckpt_path, ckpt: dict, task: int, shared: bool, classes: list[str], where: str) -> None:
    """The checkpoint's head ``task`` must have been trained on exactly ``classes``, in this order (with one
    shared softmax, the target's classes come first in the union). Otherwise the scores would be written under
    the wrong class names: refuse, showing both lists."""
    if "classes" not in ckpt:
        raise CheckpointError(f"{ckpt_path} records no class list; it was not written by twostream_lib.train")
    trained = list(ckpt["classes"][0 if shared else task])
    if shared:
        trained = trained[:len(classes)]
    if trained != list(classes):
        raise ClassListError(f"{ckpt_path} was trained on the classes {trained} ({len(trained)}), but {where} lists "
                             f"{list(classes)} ({len(classes)}): another class list or order; evaluate it on the "
                             f"dataset it was trained on")


def evaluate_checkpoint(ckpt_path: str | os.PathLike, subset: str = "test", out: str | os.PathLike | None = None,
                        frames: int = TEST_FRAMES, crops: int = TEST_CROPS, task: int = 0, device: str = "auto",
                        batch_videos: int = 1, workers: int | None = None, progress: bool = True,
                        root: str | None = None, cache: str | None = None, amp: bool | None = None) -> dict:
    """Score every video of ``subset`` (``"test"``, or ``"train"`` — all training videos, held-out ones
    included, which SVM fusion is fitted on, §6) with the paper's protocol: ``frames`` equally spaced frames
    (stacks) x ``crops`` crops (10 = 4 corners + centre and their flips; 5 = no flips; 1 = centre only),
    softmax averaged.

    For a multitask checkpoint ``task`` picks the dataset (index into the config's ``datasets``) and its head.
    ``root``/``cache`` override the dataset root / cache recorded in the checkpoint's config. The dataset's
    classes must be the checkpoint's (:class:`ClassListError` otherwise). Writes ``out`` (if given) with
    :func:`twostream_lib.scores.save_scores`. Returns ``dict(accuracy, mean_class_accuracy, per_class_accuracy,
    confusion, scores (N, C), labels, video_ids, classes, out)``.
    """
    if subset not in ("test", "train"):
        raise ValueError(f"evaluate_checkpoint: subset must be 'test' or 'train', got {subset!r}")
    check_views(frames, crops, "evaluate_checkpoint")
    if out is not None:  # before the work: a score file that can't be written is known now
        writable_file(out, "out", "score file")
    dev = resolve_device(device)
    model, cfg, ckpt = load_model_from_checkpoint(ckpt_path, dev)
    if workers is None:  # a test item is a whole video's views (25 x 10 stacks): on a CPU, passing it from a
        # worker process costs more than building it in place, and the worker takes a core from the net
        workers = 0 if dev.type == "cpu" else cfg.workers
    set_cpu_threads(dev, workers)
    if not 0 <= task < cfg.num_tasks:
        raise TaskError(ckpt_path, task, cfg.num_tasks, cfg.datasets)
    multitask = cfg.num_tasks > 1
    shared = cfg.heads == "shared" and len(cfg.datasets) > 1
    root = root or cfg.roots[task]
    split = load_split(cfg.datasets[task], root, cfg.split)
    classes = list(split.classes)
    check_classes(ckpt_path, ckpt, task, shared, classes, f"{root} ({cfg.datasets[task]} split {cfg.split})")
    vc = VideoCache(cache or cfg.caches[task], memory_mb=cfg.cache_memory_mb)
    ds = make_dataset(cfg, vc, items_for(split, subset, vc), mode="test", frames=frames, crops=crops)
    use_amp = (cfg.amp and dev.type == "cuda") if amp is None else amp
    scores = predict_videos(model, ds, dev, batch_videos=batch_videos, progress=progress,
                            task=task if multitask else None, workers=workers, amp=use_amp,
                            channels_last=cfg.channels_last)
    if shared:
        # one softmax over the union of classes (Table 2, row 3): score the target over its own classes,
        # which come first in the union
        scores = scores[:, :len(classes)]
        scores = scores / np.maximum(scores.sum(axis=1, keepdims=True), 1e-12)
    labels = np.asarray(ds.labels, dtype=np.int64)
    result = summarize(scores, labels, len(classes))
    result.update(scores=scores, labels=labels, video_ids=list(ds.video_ids), classes=classes, out=None)
    if out is not None:
        meta = dict(checkpoint=str(Path(ckpt_path).resolve()), checkpoint_stamp=_stamp(ckpt_path),
                    step=int(ckpt.get("step", -1)), subset=subset, frames=frames, crops=crops, stream=cfg.stream,
                    dataset=cfg.datasets[task], root=str(Path(root).resolve()), split=cfg.split, task=task,
                    arch=cfg.arch, name=cfg.name, accuracy=result["accuracy"],
                    mean_class_accuracy=result["mean_class_accuracy"])
        result["out"] = str(save_scores(out, scores, labels, result["video_ids"], classes, meta))
    return result


def _subset_video_ids(meta: dict, subset: str) -> list[str] | None:
    """The ids of the videos that the split files list now for ``subset``, for the dataset, root and split that a
    score file's ``meta`` records (what it was scored on); ``None`` when it records none, or they can't be read
    (the file is then treated as stale, and the evaluation says what is wrong)."""
    if not all(k in meta for k in ("dataset", "root", "split")):
        return None
    try:
        split = load_split(meta["dataset"], meta["root"], int(meta["split"]))
    except (UserError, OSError):
        return None
    return [v for v, _ in items_for(split, subset)]


def _stamp(path: str | os.PathLike) -> str:
    st = Path(path).stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def cached_scores(ckpt_path: str | os.PathLike, out: str | os.PathLike, subset: str = "test",
                  frames: int = TEST_FRAMES, crops: int = TEST_CROPS, task: int = 0, **kwargs) -> dict:
    """:func:`evaluate_checkpoint`'s result, read back from the score file ``out`` when that file was written
    for this very checkpoint (same path, size and modification time) with the same protocol (subset, frames,
    crops, task) on the videos the split lists now; otherwise (a split file changed since, for instance: the file
    is stale) evaluated afresh and written to ``out``. ``kwargs`` go to
    :func:`evaluate_checkpoint` (``device``, ``workers``, ``root``, ...; a ``root`` must match the file's too)."""
    out = Path(out)
    want = dict(checkpoint=str(Path(ckpt_path).resolve()), checkpoint_stamp=_stamp(ckpt_path), subset=subset,
                frames=frames, crops=crops, task=task)
    if kwargs.get("root"):
        want["root"] = str(Path(kwargs["root"]).resolve())
    if out.is_file():
        try:
            s = load_scores(out)
        except ScoreFileError:
            s = None  # unreadable: evaluate again and overwrite it
        if (s is not None and all(s["meta"].get(k) == v for k, v in want.items())
                and list(s["video_ids"]) == _subset_video_ids(s["meta"], subset)):
            r = summarize(s["scores"], s["labels"], len(s["classes"]))
            r.update(scores=s["scores"], labels=s["labels"], video_ids=s["video_ids"], classes=s["classes"],
                     out=str(out))
            return r
    kwargs.setdefault("progress", False)
    return evaluate_checkpoint(ckpt_path, subset=subset, out=out, frames=frames, crops=crops, task=task, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """``python -m twostream_lib evaluate CKPT --subset test --out scores.npz [--frames 25 --crops 10]``."""
    p = ArgumentParser(prog="python -m twostream_lib evaluate",
                       description="Video-level scores of a checkpoint by the paper's protocol (§6).")
    p.add_argument("checkpoint", help="a checkpoint written by `train` (best.pt or last.pt)")
    p.add_argument("--subset", default="test", choices=("test", "train"),
                   help="test videos, or all training videos (for SVM fusion)")
    p.add_argument("--out", default=None, help="score file to write (.npz), read by `fuse`")
    p.add_argument("--frames", type=IntRange(1, MAX_TEST_FRAMES), default=TEST_FRAMES,
                   help=f"equally spaced frames / stacks per video (paper: 25), 1..{MAX_TEST_FRAMES}")
    p.add_argument("--crops", type=int, default=TEST_CROPS, choices=(1, 5, 10),
                   help="10 = 4 corners + centre and their flips (paper); 5 = no flips; 1 = centre")
    p.add_argument("--task", type=IntRange(0), default=0,
                   help="multitask runs: which dataset/head (index in `datasets`)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--batch-videos", type=IntRange(1, MAX_BATCH_VIDEOS), default=1, help="videos per forward batch")
    p.add_argument("--workers", type=IntRange(0, MAX_WORKERS), default=None,
                   help="DataLoader workers (default: the run's; 0 on a CPU)")
    p.add_argument("--root", default=None, help="override the dataset root recorded in the checkpoint")
    p.add_argument("--cache", default=None, help="override the cache recorded in the checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    # every option checked before the checkpoint is loaded (--task: against the checkpoint's heads, once loaded)
    existing_file(a.checkpoint, "checkpoint", "checkpoint file (best.pt or last.pt)")
    if a.out is not None:
        writable_file(a.out, "--out", "score file")
    if a.root is not None:
        existing_folder(a.root, "--root", "dataset root")
    if a.cache is not None:
        existing_folder(a.cache, "--cache", "cache folder")
    check_device("--device", a.device, auto=True)
    try:
        r = evaluate_checkpoint(a.checkpoint, subset=a.subset, out=a.out, frames=a.frames, crops=a.crops,
                                task=a.task, device=a.device, batch_videos=a.batch_videos, workers=a.workers,
                                progress=not a.no_progress, root=a.root, cache=a.cache)
    except TaskError as e:
        raise TaskError(*e.fields, name="--task") from None
    n = len(r["labels"])
    print(f"{a.checkpoint}: {a.subset} videos {n}, accuracy {100 * r['accuracy']:.2f}%, "
          f"mean class accuracy {100 * r['mean_class_accuracy']:.2f}%")
    if r["out"]:
        print(f"scores -> {r['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
