"""Dataset root → frame + flow cache (paper §5, "Optical flow": pre-computed, stored as JPEG).

Each video is decoded once; its RGB frames (resized to a short side) and its optical flow, quantised linearly
from [-bound, bound] px to uint8 and stored as grayscale JPEG images (one for x, one for y, as the paper
stores them), are packed into a per-video folder of the cache::

    <cache>/settings.json              how the cache was made (dataset, flow method, bound, size, versions)
    <cache>/manifest.json              every prepared video: frames, flow fields, size; and failed videos
    <cache>/videos/<video_id>/         video_id = path relative to the dataset root, e.g. UCF-101/Walk/v_Walk_g01_c01.avi
        rgb.bin  flow_x.bin  flow_y.bin          concatenated JPEG files (one per frame / flow field)
        [flow_bx.bin  flow_by.bin]               backward flow, when prepared with --backward
        index.json                              byte offsets into each .bin, counts, sizes

Packing a video's JPEGs into one file with an offset index means one open and one seek per sample instead of
one file per frame (the design of most two-stream code bases), while keeping the paper's JPEG storage.

Writes are atomic: a video is written into ``videos/<video_id>.tmp-<pid>/`` and renamed into place when complete,
so a rerun skips finished videos and redoes any half-written one. A cache made with other settings is refused
with a clear message instead of being silently mixed. A video that can't be decoded is reported by name in the
manifest's ``failed`` list and on stderr; the other videos are unaffected.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from pathlib import Path

import cv2
import numpy as np
import torch

from . import __version__
from .errors import MAX_WORKERS, ArgumentParser, FloatRange, IntRange, OptionError, UserError, check_device
from .files import FolderLock, atomic_write_json, existing_folder, writable_folder
from .flow import (FLOW_METHODS, FlowEstimator, clip_fraction, gt_flow_path, load_gt_flow, quantize_flow, resize_flow,
                   to_gray)
from .splits import DATASETS, SplitError, load_split
from .video import read_video, short_side_size

__all__ = ["CacheError", "prepare", "prepare_video", "cache_settings", "main", "DEFAULT_SHORT_SIDE",
           "FORMAT_VERSION", "encode_jpegs", "read_cache_json", "MAX_BOUND", "MAX_SHORT_SIDE", "MAX_BATCH"]

#: 2: each video's entry records its source file's size and mtime (a replaced video is prepared again)
FORMAT_VERSION = 2
#: short side of the cached frames: the paper rescales to 256 (§5); the lab data is kept at its own size.
DEFAULT_SHORT_SIDE = {"ucf101": 256, "hmdb51": 256, "lab-ucf": None, "lab-hmdb": None}
#: the largest flow quantisation bound, px: a larger one quantises in steps over 2 px (2 * bound / 255), and
#: flow beyond 256 px between consecutive frames does not occur at the paper's 256-px short side
MAX_BOUND = 256.0
#: the largest frame short side, px (more than any UCF-101 / HMDB-51 video has: larger only upsamples)
MAX_SHORT_SIDE = 4096
#: the most frame pairs per ``tvl1-torch`` solver call the command line takes (the videos of a call are in memory)
MAX_BATCH = 4096
#: settings that must match for a rerun to reuse a cache
_KEYED = ("format", "dataset", "flow", "flow_params", "bound", "short_side", "jpeg_quality", "backward")


class CacheError(UserError, RuntimeError):
    """A cache is inconsistent with the request (other settings, missing video). Names the cache and the problem."""


def read_cache_json(path: str | os.PathLike, remedy: str) -> dict:
    """A cache's JSON file (``settings.json``, ``manifest.json``) as a dict; an empty, truncated or edited one is a
    :class:`CacheError` naming the file and what to do (``remedy``)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        what = "is empty" if path.is_file() and path.stat().st_size == 0 else f"can't be read ({e})"
        raise CacheError(f"{path} {what}; {remedy}") from None
    if not isinstance(obj, dict):
        raise CacheError(f"{path} holds {type(obj).__name__}, not a JSON object; {remedy}")
    return obj


def cache_settings(dataset: str, flow: str, bound: float = 20.0, short_side: int | None = None,
                   jpeg_quality: int = 95, backward: bool = False, flow_params: dict | None = None) -> dict:
    """The settings that define a cache (written to ``settings.json``)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    if flow not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {flow!r}; expected one of {', '.join(FLOW_METHODS)}")
    if flow == "gt" and not dataset.startswith("lab-"):
        raise ValueError("flow='gt' (ground truth) exists only for the lab datasets")
    if flow == "gt" and backward:
        raise ValueError("backward ground-truth flow is not stored by the lab renderer; use an estimator")
    if not (math.isfinite(bound) and 0 < bound <= MAX_BOUND):
        raise ValueError(f"bound must be a positive number of pixels <= {MAX_BOUND:g}, got {bound}")
    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    if short_side is not None and not 16 <= int(short_side) <= MAX_SHORT_SIDE:
        raise ValueError(f"short_side must be 16..{MAX_SHORT_SIDE} px (or None for the native size), got {short_side}")
    return {
        "format": FORMAT_VERSION, "dataset": dataset, "flow": flow, "flow_params": dict(flow_params or {}),
        "bound": float(bound), "short_side": short_side, "jpeg_quality": int(jpeg_quality),
        "backward": bool(backward),
    }


def encode_jpegs(images, quality: int) -> tuple[bytes, list[int]]:
    """Encode a sequence of uint8 images (gray (H,W) or RGB (H,W,3)) as JPEGs packed into one byte string.

    Returns the bytes and the offsets (len(images) + 1 of them)."""
    chunks, offsets, pos = [], [0], 0
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    for im in images:
        if im.ndim == 3:
            im = cv2.cvtColor(im, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", im, params)
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        chunks.append(buf.tobytes())
        pos += len(chunks[-1])
        offsets.append(pos)
    return b"".join(chunks), offsets


def _video_flows(path: Path, frames: np.ndarray, settings: dict, backward: bool) -> np.ndarray:
    """Forward (or backward) flow of a decoded video, at the frames' size: (T-1, H, W, 2) float32 px."""
    if settings["flow"] == "gt":
        flow = load_gt_flow(path)
        if len(flow) != len(frames) - 1:
            raise CacheError(f"{path}: ground-truth flow has {len(flow)} fields but the video has "
                             f"{len(frames)} frames (expected {len(frames) - 1}); stale flow file?")
        if flow.shape[1:3] != frames.shape[1:3]:
            flow = np.stack([resize_flow(f, frames.shape[1:3]) for f in flow])
        return flow
    est = FlowEstimator(settings["flow"], **settings["flow_params"])
    return est.video(frames, backward=backward)


def _directions(settings: dict) -> list[bool]:
    return [False] + ([True] if settings["backward"] else [])


def decode_for_cache(path: str | os.PathLike, settings: dict) -> np.ndarray:
    """A video's frames as the cache stores them: ``(T, H, W, 3)`` uint8 RGB, resized to ``short_side``."""
    frames = read_video(path, min_frames=2)
    if settings["short_side"]:
        h, w = short_side_size(*frames.shape[1:3], settings["short_side"])
        interp = cv2.INTER_AREA if h < frames.shape[1] else cv2.INTER_LINEAR
        frames = np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])
    return frames


def source_stamp(path: str | os.PathLike, settings: dict) -> dict:
    """What identifies a video's source files: size and modification time of the video (and of its ground-truth
    flow file for ``flow="gt"``). A cached video whose stamp differs is prepared again."""
    st = Path(path).stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if settings["flow"] == "gt":
        fst = gt_flow_path(path).stat()
        stamp.update(flow_size=fst.st_size, flow_mtime_ns=fst.st_mtime_ns)
    return stamp


_ENTRY_KEYS = ("frames", "flows", "height", "width", "clip_fraction", "source")


def prepare_video(path: str | os.PathLike, out_dir: str | os.PathLike, settings: dict) -> dict:
    """Decode one video, compute its flow and write its cache folder ``out_dir`` atomically. Returns its entry."""
    path = Path(path)
    source = source_stamp(path, settings)  # before reading: a file replaced meanwhile is redone next time
    frames = decode_for_cache(path, settings)
    flows = {b: _video_flows(path, frames, settings, b) for b in _directions(settings)}
    return write_cached_video(out_dir, frames, flows, settings, source)


def write_cached_video(out_dir: str | os.PathLike, frames: np.ndarray, flows: dict[bool, np.ndarray],
                       settings: dict, source: dict) -> dict:
    """Write a video's cache folder atomically (into ``<out_dir>.tmp-<pid>``, then renamed): its frames and its
    flow (``flows[False]`` forward, ``flows[True]`` backward) as packed JPEGs, and ``index.json``."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    q = settings["jpeg_quality"]
    index = {"frames": int(len(frames)), "flows": int(len(frames) - 1), "height": int(frames.shape[1]),
             "width": int(frames.shape[2]), "offsets": {}, "clip_fraction": {}, "source": source}
    data, offs = encode_jpegs(frames, q)
    (tmp / "rgb.bin").write_bytes(data)
    index["offsets"]["rgb"] = offs
    for backward, flow in flows.items():
        tag = "b" if backward else ""
        index["clip_fraction"]["backward" if backward else "forward"] = clip_fraction(flow, settings["bound"])
        qf = quantize_flow(flow, settings["bound"])
        for axis, name in ((0, "x"), (1, "y")):
            data, offs = encode_jpegs(qf[..., axis], q)
            (tmp / f"flow_{tag}{name}.bin").write_bytes(data)
            index["offsets"][f"flow_{tag}{name}"] = offs
    (tmp / "index.json").write_text(json.dumps(index))
    if out_dir.exists():  # a stale finished folder we were asked to redo
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return {k: index[k] for k in _ENTRY_KEYS}


def _prepare_batched(jobs: list, settings: dict, devices: list[str], batch: int, done) -> None:
    """``tvl1-torch`` in this process: videos decoded one after the other, the frame pairs of several videos (of
    one frame size) solved together, ``batch`` pairs per call, each group on the next of ``devices`` (one solver
    thread per device: several GPUs, one process); ``done(result)`` for each video, as the workers' results."""
    ests = [FlowEstimator("tvl1-torch", device=d, batch=batch, **settings["flow_params"]) for d in devices]
    group: list = []  # (path, out_dir, source, frames)
    pending: list = []
    with ThreadPoolExecutor(len(devices)) as pool:
        def submit() -> None:
            pending.append(pool.submit(_solve_and_write, list(group), settings, ests[len(pending) % len(ests)]))
            group.clear()
            while len(pending) > 2 * len(ests) or (pending and pending[0].done()):
                for res in pending.pop(0).result():
                    done(res)

        for path, out_dir, _ in jobs:
            try:
                source = source_stamp(path, settings)
                frames = decode_for_cache(path, settings)
            except Exception as e:  # noqa: BLE001 - reported by name; the other videos go on
                done((str(path), None, f"{type(e).__name__}: {e}"))
                continue
            if group and group[0][3].shape[1:] != frames.shape[1:]:
                submit()  # one solver call takes pairs of one size
            group.append((path, out_dir, source, frames))
            if sum(len(g[3]) - 1 for g in group) >= batch:
                submit()
        if group:
            submit()
        for fut in pending:
            for res in fut.result():
                done(res)


def _solve_and_write(group: list, settings: dict, est: FlowEstimator) -> list:
    """The flow of a group of videos in batched solver calls, then each video's cache folder."""
    grays = [np.stack([to_gray(f) for f in g[3]]) for g in group]
    flows: list[dict] = [{} for _ in group]
    for backward in _directions(settings):
        a = np.concatenate([g[1:] if backward else g[:-1] for g in grays])
        b = np.concatenate([g[:-1] if backward else g[1:] for g in grays])
        flow, pos = est.pairs(a, b), 0
        for f, gray in zip(flows, grays):
            f[backward], pos = flow[pos:pos + len(gray) - 1], pos + len(gray) - 1
    out = []
    for (path, out_dir, source, frames), f in zip(group, flows):
        try:
            out.append((str(path), write_cached_video(out_dir, frames, f, settings, source), None))
        except Exception as e:  # noqa: BLE001
            out.append((str(path), None, f"{type(e).__name__}: {e}"))
    return out


def _die_with_parent(parent: int) -> None:
    """Worker initialiser: a worker must not outlive ``prepare`` (a ``kill -9`` of it would leave the workers
    blocked forever on their task queue). Linux: the kernel sends SIGKILL when the parent dies (PR_SET_PDEATHSIG);
    everywhere: a watchdog thread exits when the parent process is gone."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def _worker(args):
    path, out_dir, settings = args
    cv2.setNumThreads(1)
    torch.set_num_threads(1)  # one core per worker process (tvl1-torch on the CPU)
    try:
        return str(path), prepare_video(path, out_dir, settings), None
    except Exception as e:  # reported by name; the other videos go on
        tmp_dirs = Path(out_dir).parent.glob(f"{Path(out_dir).name}.tmp-*")
        for t in tmp_dirs:
            shutil.rmtree(t, ignore_errors=True)
        return str(path), None, f"{type(e).__name__}: {e}"


def _has_videos(cache: Path) -> bool:
    vdir = cache / "videos"
    return vdir.is_dir() and any((d / "index.json").is_file() for d in vdir.rglob("*") if d.is_dir())


def _check_settings(cache: Path, settings: dict) -> None:
    """Refuse a cache made with other settings; record the settings of a new (or still empty) cache."""
    f = cache / "settings.json"
    if f.exists() and _has_videos(cache):
        old = read_cache_json(f, "the settings this cache was made with are unknown: delete the cache folder and "
                                 "prepare it again (or use another --cache folder)")
        diff = {k: (old.get(k), settings[k]) for k in _KEYED if old.get(k) != settings[k]}
        if diff:
            lines = ", ".join(f"{k}: cache has {a!r}, asked {b!r}" for k, (a, b) in diff.items())
            raise CacheError(f"{cache}: this cache was made with other settings ({lines}); "
                             f"use another --cache folder or delete this one")
        return
    meta = dict(settings, versions=_versions(), created=time.strftime("%Y-%m-%d %H:%M:%S"))
    atomic_write_json(f, meta)


def _versions() -> dict:
    return {"twostream_lib": __version__, "opencv": cv2.__version__, "numpy": np.__version__,
            "torch": torch.__version__, "python": platform.python_version()}


def dataset_videos(dataset: str, root: str | os.PathLike) -> list[tuple[str, Path]]:
    """Every video of the dataset's three splits, as ``(video_id, path)``, sorted and de-duplicated."""
    videos = {}
    for s in (1, 2, 3):
        sp = load_split(dataset, root, s)
        for p, _ in sp.train + sp.test:
            videos[sp.video_id(p)] = p
    return sorted(videos.items())


def prepare(dataset: str, root: str | os.PathLike, cache: str | os.PathLike, flow: str = "tvl1",
            workers: int = 1, bound: float = 20.0, short_side: int | None | str = "auto", jpeg_quality: int = 95,
            backward: bool = False, flow_params: dict | None = None, videos: list[str] | None = None,
            progress: bool = True, device: str = "cpu", batch: int = 64, wait: float = 0.0) -> dict:
    """Prepare the cache for every video of ``dataset`` at ``root`` (all three splits).

    Args:
        dataset: ``ucf101``, ``hmdb51``, ``lab-ucf`` or ``lab-hmdb``.
        root: the dataset root in its official layout (see :mod:`twostream_lib.splits`).
        cache: the cache folder (created).
        flow: ``tvl1``, ``tvl1-torch`` (the same TV-L1 in PyTorch, batched, on ``device``), ``farneback``,
            ``dis``, or ``gt`` (lab ground truth).
        workers: parallel processes over videos (``tvl1-torch`` on a GPU, or with one worker, runs in this process
            and solves the frame pairs of several videos together).
        bound: flow quantisation bound in px (values outside are clipped; the clipped fraction is recorded).
        short_side: frame short side; ``"auto"`` = 256 for real data, the native size for lab data.
        jpeg_quality: JPEG quality of frames and flow images.
        backward: also store backward flow (for the bi-directional temporal input, §3.1).
        videos: optionally only these video ids (for tests and partial runs).
        device: where ``tvl1-torch`` runs (``"cpu"``, ``"cuda"``, or several: ``"cuda:0,cuda:1"``, one solver
            thread each); not part of the cache's settings (the flow is the same).
        batch: ``tvl1-torch`` in this process: frame pairs per solver call, from as many videos as it takes.
        wait: seconds to wait for another process preparing the same cache (default: fail at once, naming it).

    Returns:
        The manifest: ``{"settings", "videos": {video_id: entry}, "failed": {video_id: message}}``.
    """
    if short_side == "auto":
        short_side = DEFAULT_SHORT_SIDE.get(dataset)
    # everything is validated before anything is written: a failed call leaves no trace that blocks the next one
    settings = cache_settings(dataset, flow, bound, short_side, jpeg_quality, backward, flow_params)
    if workers < 1 or batch < 1:
        raise ValueError(f"workers and batch must be >= 1, got {workers} and {batch}")
    if device != "cpu" and flow != "tvl1-torch":
        raise ValueError(f"device={device!r} applies to flow 'tvl1-torch' only; {flow!r} runs on the CPU")
    if flow == "tvl1-torch":
        check_device("device", device, several=True)
    cache = Path(cache)
    if cache.exists() and not cache.is_dir():
        raise CacheError(f"{cache}: exists and is not a folder; give a folder for the cache")
    writable_folder(cache, "cache", "cache folder")
    todo_all = dataset_videos(dataset, root)
    if videos is not None:
        wanted = set(videos)
        todo_all = [(v, p) for v, p in todo_all if v in wanted]
    with FolderLock(cache, "cache", wait=wait):
        _check_settings(cache, settings)
        return _prepare_locked(cache, settings, todo_all, workers, progress, device, batch)


def _prepare_locked(cache: Path, settings: dict, todo_all: list, workers: int, progress: bool, device: str,
                    batch: int) -> dict:
    vdir = cache / "videos"
    manifest_path = cache / "manifest.json"
    manifest = read_cache_json(manifest_path, "delete it and run prepare again: the finished videos are kept (read "
                                              "back from their index.json)") if manifest_path.exists() else {}
    entries = manifest.get("videos", {})
    failed = {}
    jobs, changed = [], []
    for vid, path in todo_all:
        out = vdir / vid
        for t in out.parent.glob(f"{out.name}.tmp-*") if out.parent.exists() else []:
            shutil.rmtree(t, ignore_errors=True)  # a half-written video from a killed run: redo it
        if (out / "index.json").exists():
            if vid not in entries:
                try:
                    idx = json.loads((out / "index.json").read_text())
                except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                    idx = None  # a damaged index: the video is prepared again
                if not isinstance(idx, dict):
                    jobs.append((path, out, settings))
                    continue
                entries[vid] = {k: idx.get(k) for k in _ENTRY_KEYS}
            try:
                same = entries[vid].get("source") == source_stamp(path, settings)
            except OSError:  # the source is gone: the worker reports it by name
                same = False
            if same:
                continue
            changed.append(vid)  # the source was replaced (or edited) after it was prepared: redo it
            entries.pop(vid)
        jobs.append((path, out, settings))
    if changed:
        print(f"prepare: {len(changed)} source video(s) changed since they were prepared, preparing them again "
              f"(e.g. {changed[0]})", file=sys.stderr)
    bar = _progress(len(jobs), progress, f"prepare {settings['dataset']} ({settings['flow']})")
    ids = {str(p): v for v, p in todo_all}
    t0 = time.perf_counter()
    if settings["flow"] == "tvl1-torch" and (device != "cpu" or workers == 1):  # one process, batched solver
        _prepare_batched(jobs, settings, device.split(","), batch,
                         lambda res: _collect(res, ids, entries, failed, bar))
    elif workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers, initializer=_die_with_parent, initargs=(os.getpid(),)) as ex:
            futs = [ex.submit(_worker, j) for j in jobs]
            for fut in as_completed(futs):
                _collect(fut.result(), ids, entries, failed, bar)
                if len(entries) % 200 == 0:
                    _save_manifest(manifest_path, settings, entries, failed)
    else:
        for job in jobs:
            _collect(_worker(job), ids, entries, failed, bar)
    bar.close()
    manifest = _save_manifest(manifest_path, settings, entries, failed)
    manifest["elapsed_s"] = time.perf_counter() - t0
    manifest["prepared_now"] = len(jobs) - len(failed)
    manifest["changed"] = changed
    if failed:
        print(f"prepare: {len(failed)} video(s) failed and are not in the cache:", file=sys.stderr)
        for vid, msg in failed.items():
            print(f"  {vid}: {msg}", file=sys.stderr)
    return manifest


def _collect(res, ids, entries, failed, bar):
    path, entry, err = res
    vid = ids[path]
    if err is None:
        entries[vid] = entry
        failed.pop(vid, None)
    else:
        failed[vid] = err
    bar.update(1)


def _save_manifest(path: Path, settings: dict, entries: dict, failed: dict) -> dict:
    clip = [e["clip_fraction"].get("forward", 0.0) for e in entries.values()]
    manifest = {"settings": settings, "num_videos": len(entries),
                "clip_fraction_mean": float(np.mean(clip)) if clip else 0.0,
                "videos": dict(sorted(entries.items())), "failed": dict(sorted(failed.items()))}
    atomic_write_json(path, manifest)
    return manifest


class _NoBar:
    def update(self, n=1):
        pass

    def close(self):
        pass


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="video")


def main(argv: list[str] | None = None) -> int:
    ap = ArgumentParser(prog="python -m twostream_lib prepare", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, choices=DATASETS)
    ap.add_argument("--root", required=True, help="dataset root in the official layout")
    ap.add_argument("--cache", required=True, help="output cache folder")
    ap.add_argument("--flow", default="tvl1", choices=FLOW_METHODS)
    ap.add_argument("--workers", type=IntRange(1, MAX_WORKERS), default=os.cpu_count() or 1)
    ap.add_argument("--bound", type=FloatRange(0.0, MAX_BOUND, lo_open=True), default=20.0,
                    help=f"flow quantisation bound, px, at most {MAX_BOUND:g} (default 20)")
    ap.add_argument("--short-side", type=_ShortSide(), default="auto",
                    help=f"frame short side: 'auto' (256 real, native lab), 'none', or an integer 16..{MAX_SHORT_SIDE}")
    ap.add_argument("--jpeg-quality", type=IntRange(1, 100), default=95)
    ap.add_argument("--backward", action="store_true", help="also store backward flow (bi-directional input)")
    ap.add_argument("--device", default="cpu",
                    help="--flow tvl1-torch: cpu, cuda, or several GPUs: cuda:0,cuda:1,... (one process, batched)")
    ap.add_argument("--batch", type=IntRange(1, MAX_BATCH), default=64,
                    help="--flow tvl1-torch on a GPU: frame pairs per solver call")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    short = a.short_side
    try:
        check_options(a.dataset, a.root, a.cache, a.flow, a.device, a.backward)
        m = prepare(a.dataset, a.root, a.cache, flow=a.flow, workers=a.workers, bound=a.bound, short_side=short,
                    jpeg_quality=a.jpeg_quality, backward=a.backward, progress=not a.no_progress,
                    device=a.device, batch=a.batch)
    except (UserError, ValueError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line
        return 2
    print(f"{a.cache}: {m['num_videos']} videos ({m['prepared_now']} now, {m['elapsed_s']:.1f} s), "
          f"flow clipped at ±{a.bound:g}: {100 * m['clip_fraction_mean']:.3f}% of values, "
          f"failed: {len(m['failed'])}")
    return 1 if m["failed"] else 0


class _ShortSide:
    """``--short-side``: ``auto``, ``none`` or an integer 16..MAX_SHORT_SIDE."""

    kind = "int"
    __name__ = "short side"

    def __call__(self, text: str) -> int | str | None:
        if text in ("auto", "none"):
            return None if text == "none" else text
        try:
            return IntRange(16, MAX_SHORT_SIDE)(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"must be 'auto', 'none' or an integer 16..{MAX_SHORT_SIDE}, "
                                             f"got {text!r}") from None


def check_options(dataset: str, root, cache, flow: str, device: str, backward: bool = False,
                  prefix: str = "--") -> None:
    """The command line's checks of ``prepare``'s options, before anything is read or written: one
    :class:`~twostream_lib.errors.OptionError` naming the option (``prefix`` + its name)."""
    if not _plainly_missing(Path(root)):  # a missing root is said by the split check below
        existing_folder(root, f"{prefix}root", "dataset root")  # a file, or a path under a file
    try:  # a dataset root in the official layout (what prepare reads first)
        load_split(dataset, root, 1)
    except SplitError as e:
        raise OptionError(f"{prefix}root {root}: {e}") from None
    writable_folder(cache, f"{prefix}cache", "cache folder")
    if flow == "gt" and not dataset.startswith("lab-"):
        raise OptionError(f"{prefix}flow gt: ground-truth flow exists only for the lab datasets, not {dataset}")
    if flow == "gt" and backward:
        raise OptionError(f"{prefix}backward: the lab renderer stores no backward ground-truth flow; "
                          f"use an estimator ({prefix}flow dis, tvl1, ...)")
    if device != "cpu":
        if flow != "tvl1-torch":
            raise OptionError(f"{prefix}device {device}: applies to {prefix}flow tvl1-torch only; {flow} runs on "
                              f"the CPU")
        check_device(f"{prefix}device", device, several=True)


def _plainly_missing(path: Path) -> bool:
    """``path`` doesn't exist, and no file stands in its way (its nearest existing folder is a folder)."""
    anc = next((a for a in path.parents if a.exists()), None)
    return not path.exists() and (anc is None or anc.is_dir())
