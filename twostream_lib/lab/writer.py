"""Writing the lab datasets in the official UCF-101 / HMDB-51 layouts (videos, ground-truth flow, split files),
resumably and in parallel, and :func:`prepare_lab`, which makes the datasets and the caches the chapters read.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import MAX_WORKERS, ArgumentParser, IntRange, OptionError, UserError
from ..files import FolderLock, atomic_write_text, writable_folder
from ..flow import FLOW_METHODS, gt_flow_path
from ..prepare import CacheError, prepare
from ..video import write_video
from .classes import DATASETS, FPS, LAB_HMDB_CLASSES, LAB_UCF_CLASSES, class_info, dataset_classes
from .render import render_clip
from .specs import EXTRA_TEST_SPLIT, SCALES, ClipSpec, check_scale, clip_rng, lab_clip_specs, ucf_test_groups

__all__ = ["LAB_VERSION", "LabVersionError", "make_lab_datasets", "generate_clip", "flow_path", "prepare_lab",
           "lab_main"]

#: The version of each lab dataset's design, recorded in ``lab_info.json``: a change to how a dataset's clips are
#: rendered or split bumps it, so a lab root rendered by an older design is refused instead of silently mixed.
#: lab-hmdb 2: a moving camera in most clips, wider ranges of figure size, speed and amplitude, 6 training clips
#: per class at the small scale (chapter 1 says what each models).
LAB_VERSION = {"lab-ucf": 1, "lab-hmdb": 2}


class LabVersionError(UserError, ValueError):
    """A lab dataset on disk was rendered by another version of the lab's design."""


def flow_path(video: str | os.PathLike) -> Path:
    """``.../<stem>.avi`` -> ``.../<stem>.flow.npz`` (the same rule as :func:`twostream_lib.flow.gt_flow_path`)."""
    return gt_flow_path(video)


def _dataset_dir(root: Path, spec: ClipSpec) -> Path:
    if spec.dataset == "lab-ucf":
        return root / "lab-ucf" / "UCF-101"
    return root / "lab-hmdb"


def _is_finished(video: Path, gt_flow: bool) -> bool:
    return video.is_file() and (not gt_flow or flow_path(video).is_file())


def generate_clip(root: str | os.PathLike, spec: ClipSpec, gt_flow: bool = True) -> bool:
    """Render one clip and write ``.avi`` (+ ``.flow.npz``) atomically. Returns False if it was
    already finished (both files present), True if it was (re)written."""
    cv2.setNumThreads(1)
    video = _dataset_dir(Path(root), spec) / spec.rel
    if _is_finished(video, gt_flow):
        return False
    frames, flow = render_clip(spec)
    video.parent.mkdir(parents=True, exist_ok=True)
    if gt_flow:
        fp = flow_path(video)
        tmp = fp.with_name(f".{video.stem}.tmp{os.getpid()}.flow.npz")
        q = (np.round(flow * 64) / 64).astype(np.float16)   # 1/64 px steps: compresses, error < 0.008 px
        with open(tmp, "wb") as f:
            np.savez_compressed(f, flow=q)
        os.replace(tmp, fp)
    write_video(video, frames, fps=FPS, fourcc="XVID")
    return True


def _remove_temps(d: Path) -> int:
    n = 0
    if d.is_dir():
        for p in d.rglob(".*.tmp*"):
            if p.is_file():
                p.unlink()
                n += 1
    return n


def _write_splits(root: Path, dataset: str, specs: list[ClipSpec], scale: str, seed: int) -> None:
    if dataset == "lab-ucf":
        d = root / "lab-ucf" / "ucfTrainTestlist"
        classes = sorted(LAB_UCF_CLASSES)
        idx = {c: i + 1 for i, c in enumerate(classes)}
        atomic_write_text(d / "classInd.txt", "".join(f"{i} {c}\n" for c, i in idx.items()))
        G = SCALES[scale]["ucf_groups"]
        for k in (1, 2, 3):  # a test-only clip is in split EXTRA_TEST_SPLIT's test list and in no other list
            test_g = set(ucf_test_groups(G, k))
            train = [f"{s.rel} {idx[s.cls]}\n" for s in specs if s.index[0] not in test_g and not s.test_only]
            test = [f"{s.rel}\n" for s in specs if s.index[0] in test_g and (k == EXTRA_TEST_SPLIT or not s.test_only)]
            atomic_write_text(d / f"trainlist0{k}.txt", "".join(train))
            atomic_write_text(d / f"testlist0{k}.txt", "".join(test))
    else:
        d = root / "lab-hmdb" / "testTrainMulti_7030_splits"
        for cls in sorted(LAB_HMDB_CLASSES):
            cs = [s for s in specs if s.cls == cls and not s.test_only]
            extra = [s for s in specs if s.cls == cls and s.test_only]
            n_test = len(cs) - SCALES[scale]["hmdb_train"]  # few training clips per class, HMDB-51's size
            for k in (1, 2, 3):
                perm = clip_rng(seed, dataset, cls, "split", k).permutation(len(cs))
                ids = np.ones(len(cs), int)
                ids[perm[:n_test]] = 2
                ids = list(ids) + [2 if k == EXTRA_TEST_SPLIT else 0] * len(extra)  # 0: unused, as HMDB-51 marks
                atomic_write_text(d / f"{cls}_test_split{k}.txt",
                                  "".join(f"{s.name}.avi {i}\n" for s, i in zip(cs + extra, ids)))


def _job(args):
    root, spec, gt_flow = args
    return spec.dataset, generate_clip(root, spec, gt_flow), spec.n_frames


def make_lab_datasets(root: str | os.PathLike, scale: str = "small", seed: int = 0, workers: int = 1,
                      gt_flow: bool = True, progress: bool = True,
                      datasets: tuple[str, ...] | list[str] = DATASETS, wait: float = 0.0) -> dict:
    """Generate (or finish) the lab datasets under ``root``.

    Resumable: a clip whose ``.avi`` (and, with ``gt_flow``, ``.flow.npz``) exists is skipped;
    temp files left by a killed run are removed and their clips redone. One process at a time works on a root: a
    second one fails at once naming the first, or waits up to ``wait`` seconds for it. Split files are
    rewritten (deterministically). ``<root>/lab_info.json`` records scale, seed and each dataset's design
    version (:data:`LAB_VERSION`); running over a root made with another scale or seed raises ``ValueError``,
    over a dataset rendered by another version :class:`LabVersionError`.

    Returns:
        ``{dataset: number of videos}`` for the generated datasets.
    """
    cfg = check_scale(scale)
    for ds in datasets:
        dataset_classes(ds)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with FolderLock(root, "lab root", wait=wait):
        return _make_locked(root, cfg, scale, seed, workers, gt_flow, progress, datasets)


def _make_locked(root: Path, cfg: dict, scale: str, seed: int, workers: int, gt_flow: bool, progress: bool,
                 datasets) -> dict:
    info_path = root / "lab_info.json"
    if info_path.is_file():
        old = json.loads(info_path.read_text(encoding="utf-8"))
        if old.get("scale") != scale or old.get("seed") != seed:
            raise ValueError(f"{info_path}: this lab root was made with scale={old.get('scale')!r} "
                             f"seed={old.get('seed')!r}; refusing to mix in scale={scale!r} seed={seed!r} "
                             f"(use another --root)")
        for ds in datasets:
            made = old.get("datasets", {}).get(ds, {}).get("version", 1)
            if ds in old.get("datasets", {}) and made != LAB_VERSION[ds] and (root / ds).exists():
                raise LabVersionError(
                    f"{root / ds}: rendered by version {made} of the {ds} design; this library renders version "
                    f"{LAB_VERSION[ds]}. Delete {root / ds}, its caches (cache/<scale>/{ds}-*) and the runs trained "
                    f"on it, then run again")
    all_specs = {ds: lab_clip_specs(ds, scale, seed) for ds in datasets}
    for ds in datasets:
        _remove_temps(root / ds)
    todo = [(str(root), s, gt_flow) for ds in datasets for s in all_specs[ds]
            if not _is_finished(_dataset_dir(root, s) / s.rel, gt_flow)]
    t0 = time.time()
    bar = None
    if progress:
        bar = tqdm(total=len(todo), desc=f"lab {scale}", unit="clip")
    if workers > 1 and len(todo) > 1:
        with mp.get_context("spawn" if os.name == "nt" else "fork").Pool(workers) as pool:
            for _ in pool.imap_unordered(_job, todo, chunksize=1):
                if bar is not None:
                    bar.update(1)
    else:
        for j in todo:
            _job(j)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    for ds in datasets:
        _write_splits(root, ds, all_specs[ds], scale, seed)
    old_ds = {}
    if info_path.is_file():
        old_ds = json.loads(info_path.read_text(encoding="utf-8")).get("datasets", {})
    for ds in datasets:
        old_ds[ds] = {"version": LAB_VERSION[ds], "videos": len(all_specs[ds]),
                      "frames": int(sum(s.n_frames for s in all_specs[ds])),
                      "class_info": {k: v for k, v in class_info(ds).items() if k != "description"}}
    info = {"scale": scale, "seed": seed, "height": cfg["height"], "width": cfg["width"], "fps": FPS,
            "gt_flow": gt_flow, "flow_format": "<stem>.flow.npz: flow (T-1,H,W,2) float16 px, x then y, forward",
            "datasets": old_ds, "last_run_seconds": round(time.time() - t0, 2), "generated_clips": len(todo)}
    atomic_write_text(info_path, json.dumps(info, indent=1, default=list))
    return {ds: len(all_specs[ds]) for ds in datasets}


def prepare_lab(data_dir: str | os.PathLike = "data", scale: str = "small", flow: str = "dis",
                workers: int = 2, seed: int = 0,
                datasets: tuple[str, ...] = ("lab-ucf", "lab-hmdb"), progress: bool = False,
                wait: float = 0.0) -> dict:
    """Make sure the lab datasets of ``scale`` and their caches exist (generating and preparing what is missing).

    The chapters call this first, so each runs on its own from a fresh clone; two chapters started together wait
    for each other (``wait`` seconds at most) instead of working on the same files. Layout::

        <data_dir>/lab/<scale>/lab-ucf, lab-hmdb                      the datasets (official layouts)
        <data_dir>/cache/<scale>/<dataset>-<flow>                       their frame + flow caches

    The caches hold forward and backward flow, so every temporal input of §3.1 (bi-directional too) reads them.

    Returns:
        ``{dataset: {"root": Path, "cache": Path}}``.
    """
    data_dir = Path(data_dir)
    lab_root = data_dir / "lab" / scale
    make_lab_datasets(lab_root, scale=scale, seed=seed, workers=workers, progress=progress, datasets=datasets,
                      wait=wait)
    out = {}
    for ds in datasets:
        cache = data_dir / "cache" / scale / f"{ds}-{flow}"
        m = prepare(ds, lab_root / ds, cache, flow=flow, workers=workers, backward=flow != "gt", progress=progress,
                    wait=wait)
        if m["failed"]:
            raise CacheError(f"{cache}: {len(m['failed'])} lab video(s) failed to prepare: {m['failed']}")
        out[ds] = {"root": lab_root / ds, "cache": cache}
    return out


def lab_main(argv: list[str] | None = None) -> int:
    """``python -m twostream_lib lab --scale small``: the lab datasets and the caches the chapters use."""
    ap = ArgumentParser(prog="python -m twostream_lib lab", description=prepare_lab.__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="data", help="data folder (default: data)")
    ap.add_argument("--scale", default="small", choices=["tiny", "small", "full"])
    ap.add_argument("--flow", default="dis", choices=FLOW_METHODS)
    ap.add_argument("--workers", type=IntRange(1, MAX_WORKERS), default=2)
    ap.add_argument("--seed", type=IntRange(0), default=0, help="any integer >= 0 (default: 0)")
    a = ap.parse_args(argv)
    writable_folder(a.data, "--data", "data folder")
    _check_lab_root(Path(a.data) / "lab" / a.scale, a.seed)
    t0 = time.perf_counter()
    paths = prepare_lab(a.data, a.scale, flow=a.flow, workers=a.workers, seed=a.seed, progress=True)
    for ds, p in paths.items():
        print(f"{ds}: {p['root']} -> {p['cache']}")
    print(f"lab {a.scale}: ready in {time.perf_counter() - t0:.0f} s")
    return 0


def _check_lab_root(root: Path, seed: int) -> None:
    """``lab``'s checks of an existing lab root before any work: its ``lab_info.json`` readable, made with this
    ``--seed`` (a root is never mixed, :func:`make_lab_datasets`)."""
    info_path = root / "lab_info.json"
    if not info_path.exists():
        return
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise OptionError(f"--data: {info_path} can't be read ({e}); delete {root} and run `lab` again") from None
    if not isinstance(info, dict):
        raise OptionError(f"--data: {info_path} holds {type(info).__name__}, not a JSON object; delete {root} and "
                          f"run `lab` again")
    if info.get("seed") != seed:
        raise OptionError(f"--seed {seed}: {root} was made with seed {info.get('seed')!r}; a lab root is never "
                          f"mixed: give --seed {info.get('seed')!r}, or another --data folder")
