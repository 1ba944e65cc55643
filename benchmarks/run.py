#!/usr/bin/env python
"""Reproducible performance table of twostream_lib: flow, loader, training, end to end (and GPU, optional).

    python benchmarks/run.py                        # everything on CPU (<= 15 min on 2 cores), writes BENCHMARKS.md
    python benchmarks/run.py --quick                # ~2 min smoke version (prints; writes only with --out)
    python benchmarks/run.py --sections flow,loader # a subset: flow, tvl1, loader, train, lrn, memfmt, e2e (gpu with --gpu)
    python benchmarks/run.py --gpu --sections train # + CUDA training throughput (skips with a message without CUDA)

Every figure is the median of >= 3 runs (end to end: one run, its stages are minutes long); figures compared
as ratios are measured interleaved in the same process so that the load of a shared machine hits both. All data
goes to a temporary folder; only BENCHMARKS.md (or --out) is written. See BENCHMARKS.md for what each row means.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import io
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without the package installed
    sys.path.insert(0, str(REPO))

from twostream_lib import lab as _lab  # noqa: E402
from twostream_lib.data import SpatialDataset, TemporalDataset, VideoCache  # noqa: E402
from twostream_lib.flow import DIS_PRESETS, FARNEBACK_DEFAULTS, TVL1_DEFAULTS, to_gray  # noqa: E402
from twostream_lib.prepare import prepare  # noqa: E402
from twostream_lib.splits import UCF101_MEAN_FRAMES, UCF101_VIDEOS  # noqa: E402
from twostream_lib.video import read_video, write_video  # noqa: E402

E2E_SMALL_MIN = 6  # minutes the lab `small` end-to-end run takes on 2 cores (measured)
SECTIONS = ("flow", "tvl1", "loader", "train", "lrn", "memfmt", "e2e", "gpu")
#: every section's last results, merged run after run: a run of some sections (e.g. `--sections gpu` on a GPU
#: machine) rewrites BENCHMARKS.md with the other sections' last results kept
RESULTS = REPO / "benchmarks" / "results.json"
CORES = os.cpu_count() or 1

# UCF-101 arithmetic: its size, as the library records it (twostream_lib.splits)
UCF_VIDEOS, UCF_FRAMES = UCF101_VIDEOS, UCF101_MEAN_FRAMES
# The paper's temporal net: 80K iterations x 256 in ~1 day on 4 Titans (3.2x one GPU), §5 "Multi-GPU training".
PAPER_ITERS, PAPER_BATCH, PAPER_SECONDS, PAPER_GPUS, PAPER_SPEEDUP = 80_000, 256, 86_400, 4, 3.2


# ============================================================================================ utilities
def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def med(xs) -> float:
    return float(statistics.median(xs))


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (no scientific notation for the usual ranges)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if x == 0:
        return "0"
    mag = int(math.floor(math.log10(abs(x))))
    dec = max(0, digits - 1 - mag)
    return f"{x:,.{dec}f}"


def table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu or "unknown", "cores": CORES, "ram_gib": ram, "load": load, "gpu": gpu,
            "python": platform.python_version(), "torch": torch.__version__, "cv2": cv2.__version__,
            "numpy": np.__version__, "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}


@contextlib.contextmanager
def quiet():
    """Silence stdout/stderr of library calls (progress bars, prints)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# ============================================================================================ lab data
def render_frames(dataset: str, scale: str, index: int, n_frames: int) -> np.ndarray:
    """``n_frames`` of the ``index``-th clip of a lab dataset at ``scale``: (T, H, W, 3) uint8 RGB."""
    specs = _lab.lab_clip_specs(dataset, scale)
    spec = specs[(index * 7) % len(specs)]  # spread over classes
    spec = dataclasses.replace(spec, n_frames=max(n_frames, 2))
    frames, _ = _lab.render_clip(spec)
    return frames


def make_mini_ucf(root: Path, scale: str, n_videos: int, n_frames: int) -> tuple[Path, list[str]]:
    """A UCF-101-layout dataset root of ``n_videos`` lab clips of ``n_frames`` frames (rendered at ``scale``),
    with split files listing them (the last one as the test set; with ``n_videos=1`` a second clip is rendered for
    it), so :func:`prepare` runs its real code path. Returns (root, the ``n_videos`` video ids)."""
    classes, vids, lines = set(), [], []
    specs = _lab.lab_clip_specs("lab-ucf", scale)
    for k in range(max(n_videos, 2)):  # a split needs a test video that its train list doesn't hold
        spec = specs[(k * 37) % len(specs)]
        spec = dataclasses.replace(spec, n_frames=n_frames)
        frames, _ = _lab.render_clip(spec)
        path = root / "UCF-101" / spec.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, frames)
        classes.add(spec.cls)
        vids.append(f"UCF-101/{spec.rel}")
        lines.append(spec.rel)
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    cls = sorted(classes)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(cls)))
    train, test = lines[:-1], lines[-1:]  # a split never lists a video on both sides (splits refuses it)
    for s in (1, 2, 3):
        (lists / f"trainlist0{s}.txt").write_text("".join(f"{r} {cls.index(r.split('/')[0]) + 1}\n" for r in train))
        (lists / f"testlist0{s}.txt").write_text("".join(f"{r}\n" for r in test))
    return root, vids[:n_videos]


# ============================================================================================ 1. flow
def _bare_flow(method: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The bare OpenCV call with the library's default parameters (flow.py), on grey uint8 frames."""
    if method == "tvl1":
        p = TVL1_DEFAULTS
        impl = cv2.optflow.DualTVL1OpticalFlow_create(
            tau=p["tau"], lambda_=p["lambda_"], theta=p["theta"], nscales=p["nscales"], warps=p["warps"],
            epsilon=p["epsilon"], innnerIterations=p["inner_iterations"], outerIterations=p["outer_iterations"],
            scaleStep=p["scale_step"], gamma=p["gamma"], medianFiltering=p["median_filtering"])
        return lambda a, b: impl.calc(a, b, None)
    if method == "dis":
        impl = cv2.DISOpticalFlow_create(DIS_PRESETS["medium"])
        return lambda a, b: impl.calc(a, b, None)
    p = FARNEBACK_DEFAULTS
    return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, p["pyr_scale"], p["levels"], p["winsize"],
                                                     p["iterations"], p["poly_n"], p["poly_sigma"], p["flags"])


def bench_flow(tmp: Path, quick: bool, repeats: int) -> dict:
    """pairs/s of each estimator, bare OpenCV vs our whole prepare pipeline on the same frames, and prepare's
    scaling with worker processes. Single-threaded OpenCV (prepare's workers set cv2.setNumThreads(1))."""
    cv2.setNumThreads(1)
    sizes = [("lab 96x128", "small"), ("UCF 240x320", "full")]
    # pairs per run: TV-L1 is ~50x slower than the others
    pairs = {("tvl1", "small"): 4 if quick else 10, ("tvl1", "full"): 2 if quick else 4,
             ("farneback", "small"): 10 if quick else 40, ("farneback", "full"): 4 if quick else 12,
             ("dis", "small"): 10 if quick else 40, ("dis", "full"): 4 if quick else 12}
    rows = []
    for label, scale in sizes:
        for method in ("tvl1", "farneback", "dis"):
            n = pairs[(method, scale)]
            root, vids = make_mini_ucf(tmp / f"flow-{scale}-{method}", scale, 1, n + 1)
            frames = read_video(root / vids[0])  # exactly the frames prepare decodes
            grays = [to_gray(f) for f in frames]
            fn = _bare_flow(method)
            fn(grays[0], grays[1])  # warm-up (allocations, OpenCL probing)
            bare, ours = [], []
            for r in range(repeats):  # interleaved: both see the same machine load
                bare.append(timed(lambda: [fn(grays[i], grays[i + 1]) for i in range(n)]))
                cache = tmp / f"flowcache-{scale}-{method}-{r}"
                with quiet():
                    ours.append(timed(lambda: prepare("lab-ucf", root, cache, flow=method, workers=1,
                                                      short_side=None, progress=False, videos=vids)))
                shutil.rmtree(cache, ignore_errors=True)
            b, o = n / med(bare), n / med(ours)
            rows.append({"size": label, "method": method, "pairs": n, "bare_pairs_s": b, "ours_pairs_s": o,
                         "ratio": med(ours) / med(bare), "h": frames.shape[1], "w": frames.shape[2]})
            log(f"flow {label} {method}: bare {b:.2f} pairs/s, prepare {o:.2f} pairs/s")
    # scaling of prepare with workers (processes over videos)
    method = "dis" if quick else "tvl1"
    nv, nf = (2 * CORES, 20) if quick else (4 * CORES, 8)
    root, _ = make_mini_ucf(tmp / "flow-scaling", "small", nv, nf)
    workers = sorted({1, 2, CORES})
    times = {w: [] for w in workers}
    for r in range(repeats):
        for w in workers:
            cache = tmp / f"scalecache-{w}-{r}"
            with quiet():
                times[w].append(timed(lambda: prepare("lab-ucf", root, cache, flow=method, workers=w,
                                                      short_side=None, progress=False)))
            shutil.rmtree(cache, ignore_errors=True)
    scaling = []
    for w in workers:
        t = med(times[w])
        scaling.append({"workers": w, "videos_s": nv / t, "pairs_s": nv * (nf - 1) / t,
                        "speedup": med(times[1]) / t})
        log(f"prepare scaling {method} w={w}: {nv * (nf - 1) / t:.1f} pairs/s")
    return {"rows": rows, "scaling": scaling, "scaling_method": method, "scaling_videos": nv,
            "scaling_frames": nf, "repeats": repeats}


# ============================================================================================ 2. loader
class PerFileCache(VideoCache):
    """The peers' layout: one JPEG file per frame and per flow x / y image (``img_00001.jpg``,
    ``flow_x_00001.jpg``, ``flow_y_00001.jpg`` per video folder), read one file at a time. Written from a
    prepared cache, so the JPEG bytes (and hence decode cost) are identical: only the storage differs."""

    NAMES = {"rgb": "img", "flow_x": "flow_x", "flow_y": "flow_y", "flow_bx": "flow_bx", "flow_by": "flow_by"}

    def __init__(self, cache_dir, files_dir):
        super().__init__(cache_dir)
        self.files = Path(files_dir)

    @classmethod
    def write(cls, cache_dir: Path, files_dir: Path) -> "PerFileCache":
        vc = VideoCache(cache_dir)
        for vid in vc.video_ids:
            idx = json.loads((vc.root / "videos" / vid / "index.json").read_text())
            d = files_dir / vid
            d.mkdir(parents=True, exist_ok=True)
            for stream, offs in idx["offsets"].items():
                blob = (vc.root / "videos" / vid / f"{stream}.bin").read_bytes()
                for i in range(len(offs) - 1):
                    (d / f"{cls.NAMES[stream]}_{i + 1:05d}.jpg").write_bytes(blob[offs[i]:offs[i + 1]])
        return cls(cache_dir, files_dir)

    def _read(self, vid, stream, indices, flags):
        out = []
        for i in indices:
            p = self.files / vid / f"{self.NAMES[stream]}_{i + 1:05d}.jpg"
            im = cv2.imread(str(p), flags)
            if im is None:
                raise FileNotFoundError(p)
            out.append(im)
        return out


def make_caches(tmp: Path, quick: bool) -> dict:
    """Two caches from lab clips, prepared with DIS (flow content hardly matters to the loader): lab ``full``
    (240x320) at short side 256 (-> 256x341, the real pipeline's size) and lab ``small`` at its own 96x128."""
    out = {}
    for key, scale, nv, nf, short in (("224", "full", 3 if quick else 4, 24 if quick else 40, 256),
                                      ("lab", "small", 4 if quick else 6, 30 if quick else 50, None)):
        root, _ = make_mini_ucf(tmp / f"loader-{key}", scale, nv, nf)
        cache = tmp / f"loadercache-{key}"
        with quiet():
            prepare("lab-ucf", root, cache, flow="dis", workers=CORES, short_side=short, progress=False)
        out[key] = cache
    return out


def _dataset(stream: str, cache, crop: int):
    vc = cache if isinstance(cache, VideoCache) else VideoCache(cache)
    items = [(v, i % 2) for i, v in enumerate(vc.video_ids)]
    if stream == "spatial":
        return SpatialDataset(vc, items, mode="train", crop_size=crop)
    return TemporalDataset(vc, items, mode="train", crop_size=crop, L=10)


def loader_rate(ds, workers: int, batch: int, batches: int, repeats: int, seed: int = 0) -> list[float]:
    """samples/s of a DataLoader over ``ds`` (random videos with replacement), one per timed epoch.
    Workers are persistent and the first epoch (process start, imports) is not timed: steady state."""
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=batch * batches,
                                             generator=torch.Generator().manual_seed(seed))
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                                     persistent_workers=workers > 0)
    rates = []
    for r in range(repeats + 1):
        t = time.perf_counter()
        n = sum(len(b[1]) for b in dl)
        if r:
            rates.append(n / (time.perf_counter() - t))
    del dl
    return rates


def bench_loader(tmp: Path, quick: bool, repeats: int, caches: dict) -> dict:
    """The CPU loader (DataLoader, 0/1/2/all workers) and the device-side loader on the CPU."""
    res = _bench_loader_cpu(tmp, quick, repeats, caches)
    res["device_cpu"] = bench_device_loader(caches, "cpu", 2 if quick else 4, cuda_rows=False)
    return res


def _bench_loader_cpu(tmp: Path, quick: bool, repeats: int, caches: dict) -> dict:
    """samples/s of training batches: ours with 0/1/2/all workers vs the per-file baseline. The main process
    runs torch single-threaded here (as DataLoader workers do), so "0 workers" is one core's rate: with 2
    intra-op threads on a busy machine, collating a batch (torch.stack of 16 MB) was seen to take 0.5 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _bench_loader(tmp, quick, repeats, caches)
    finally:
        torch.set_num_threads(threads)


def _bench_loader(tmp: Path, quick: bool, repeats: int, caches: dict) -> dict:
    batch = 32
    workers = sorted({0, 1, 2, CORES})
    rows = []
    for key, crop in (("224", 224), ("lab", 80)):
        files = PerFileCache.write(caches[key], tmp / f"perfile-{key}")
        nfiles = sum(1 for _ in files.files.rglob("*.jpg"))
        for stream in ("spatial", "temporal"):
            heavy = key == "224" and stream == "temporal"
            batches = (2 if quick else 3) if heavy else (3 if quick else 6)
            ds = _dataset(stream, caches[key], crop)
            h, w = ds.cache.frame_size(ds.video_ids[0])
            row = {"input": f"{stream} {crop}" + (" (L=10)" if stream == "temporal" else ""),
                   "frame": f"{h}x{w}", "key": key, "stream": stream, "files": nfiles, "rates": {}}
            naive = _dataset(stream, files, crop)
            kept = _dataset(stream, VideoCache(caches[key], memory_mb=8192), crop)  # streams kept decoded
            # per-file baseline (main process), ours with 0 workers, and with the streams kept decoded, interleaved
            nv, ours0, mem0 = [], [], []
            for r in range(repeats):
                nv += loader_rate(naive, 0, batch, batches, 1, seed=r)
                ours0 += loader_rate(ds, 0, batch, batches, 1, seed=r)
                mem0 += loader_rate(kept, 0, batch, batches, 1, seed=r)
            row["naive"] = med(nv)
            row["rates"][0] = med(ours0)
            row["memory"] = med(mem0)
            for w in workers:
                if w:
                    row["rates"][w] = med(loader_rate(ds, w, batch, batches, repeats))
            rows.append(row)
            log(f"loader {row['input']}: naive {row['naive']:.0f}, ours " +
                ", ".join(f"w{w}={v:.0f}" for w, v in row["rates"].items()) +
                f", w0 decoded in memory={row['memory']:.0f} samples/s")
    return {"rows": rows, "workers": workers, "batch": batch, "repeats": repeats}


# ============================================================================================ 3. training
@dataclasses.dataclass
class TrainCase:
    name: str
    stream: str
    crop: int
    width: float
    batch: int
    iters: int
    cache_key: str
    full_trainer: bool  # also run train(cfg)

    @property
    def channels(self) -> int:
        return 3 if self.stream == "spatial" else 20


def _cfg(case: TrainCase, out_dir: Path, workers: int, iters: int):
    from twostream_lib.config import TrainConfig
    return TrainConfig(name=case.name, stream=case.stream, datasets=["lab-ucf"], roots=["-"], caches=["-"],
                       crop_size=case.crop, L=10, width=case.width, batch_size=case.batch,
                       dropout=0.5, max_iters=iters, ckpt_every=iters, val_every=0, log_every=max(1, iters // 4),
                       lr_steps=[10 ** 9], workers=workers, device="cpu", out_dir=str(out_dir), seed=0,
                       val_fraction=0.0)


def bench_train(tmp: Path, quick: bool, repeats: int, caches: dict, device: str = "cpu") -> dict:
    """Per-iteration time of one SGD step of CNN-M-2048: a bare loop on pre-made tensors vs the trainer's
    train_step on the same tensors vs train_step fed by the trainer's real DataLoader vs the whole train().
    All modes of a case run interleaved (order reversed every other repeat), so machine load hits them alike."""
    from twostream_lib.data import RunData
    from twostream_lib.models import build_model_for
    from twostream_lib.train import make_train_loader, train, train_step

    dev = torch.device(device)
    n224, nlab = (1, 6) if quick else (2, 8)
    cases = [
        TrainCase("spatial 224, width 1.0, batch 8", "spatial", 224, 1.0, 8, n224, "224", False),
        TrainCase("temporal 224, width 1.0, batch 8", "temporal", 224, 1.0, 8, n224, "224", False),
        TrainCase("spatial lab 80, width 0.25, batch 32", "spatial", 80, 0.25, 32, nlab, "lab", True),
        TrainCase("temporal lab 80, width 0.25, batch 32", "temporal", 80, 0.25, 32, nlab, "lab", True),
    ]
    threads = torch.get_num_threads()
    rows = []
    for case in cases:
        lab_case = case.cache_key == "lab"
        loader_workers = ([0, 1] if lab_case and not quick else [1])
        cfg = _cfg(case, tmp / "train-out", 0, case.iters)
        torch.manual_seed(0)
        model = build_model_for(cfg, 101).to(dev)
        model.train()
        g = torch.Generator().manual_seed(0)
        xs = [torch.randn(case.batch, case.channels, case.crop, case.crop, generator=g).to(dev) for _ in range(2)]
        ys = [torch.randint(0, 101, (case.batch,), generator=g).to(dev) for _ in range(2)]
        opt = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9, weight_decay=5e-4)  # tiny lr: timing only, never diverges
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[10 ** 9])
        ds = _dataset(case.stream, caches[case.cache_key], case.crop)
        rd = RunData(ds, list(ds.labels), [], [[str(k) for k in range(101)]])

        def run_bare():
            t = time.perf_counter()
            for k in range(case.iters):
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(xs[k % 2]), ys[k % 2])
                loss.backward()
                opt.step()
            return (time.perf_counter() - t) / case.iters

        def run_step():
            t = time.perf_counter()
            for k in range(case.iters):
                train_step(model, (xs[k % 2], ys[k % 2]), opt, sched, dev)
            return (time.perf_counter() - t) / case.iters

        def run_loader(w: int, r: int, nthreads: int | None = None):
            # train_step fed by the trainer's own DataLoader (make_train_loader: BalancedSampler, new workers
            # per chunk); the first iteration (worker start-up + first batch) is returned apart.
            c = _cfg(case, tmp / "train-out", w, case.iters + 1)
            c.seed = r
            dl = make_train_loader(rd, c, 0, 0, case.iters + 1)
            if nthreads:
                torch.set_num_threads(nthreads)
            try:
                t0 = time.perf_counter()
                it = iter(dl)
                train_step(model, next(it), opt, sched, dev)
                t1 = time.perf_counter()
                for batch in it:
                    train_step(model, batch, opt, sched, dev)
                t2 = time.perf_counter()
            finally:
                torch.set_num_threads(threads)
            del it, dl
            return (t2 - t1) / case.iters, t1 - t0

        def run_train(r: int):
            # the whole trainer, train(cfg): its loader (1 worker, the lab configs' value), logging, TensorBoard,
            # final checkpoint; steady-state s/iteration from its own log rows (the first row holds start-up).
            out = tmp / f"train-run-{case.stream}-{r}"
            c = _cfg(case, out, 1, 3 * case.iters)
            c.log_every = case.iters
            c.seed = r
            t = time.perf_counter()
            with quiet():
                res = train(c, progress=False, data=rd)
            wall = time.perf_counter() - t
            rates = [h["samples_per_s"] for h in res["history"][1:] if h.get("samples_per_s")]
            shutil.rmtree(out, ignore_errors=True)
            return case.batch / med(rates), wall

        run_bare()
        run_step()  # warm-up: allocator, oneDNN primitive caches
        m: dict[str, list] = {}
        for r in range(repeats):
            jobs = [("bare", run_bare), ("step", run_step)]
            jobs += [(f"w{w}", lambda w=w, r=r: run_loader(w, r)) for w in loader_workers]
            if lab_case and threads > 1:  # the fix to test: leave a core to the loader worker
                jobs.append((f"w1t{threads - 1}", lambda r=r: run_loader(1, r, threads - 1)))
            if case.full_trainer and device == "cpu":
                jobs.append(("train", lambda r=r: run_train(r)))
            for name, fn in (jobs if r % 2 == 0 else jobs[::-1]):
                m.setdefault(name, []).append(fn())
        first = lambda k: med([v[0] for v in m[k]])  # noqa: E731
        second = lambda k: med([v[1] for v in m[k]])  # noqa: E731
        row = {"case": case.name, "batch": case.batch, "bare": med(m["bare"]), "step": med(m["step"]),
               "loader": {w: {"per_it": first(f"w{w}"), "first": second(f"w{w}")} for w in loader_workers},
               "loader_fewer_threads": ({"threads": threads - 1, "per_it": first(f"w1t{threads - 1}")}
                                        if f"w1t{threads - 1}" in m else None),
               "train": ({"per_it": first("train"), "wall": second("train"), "iters": 3 * case.iters}
                         if "train" in m else None),
               "key": case.cache_key, "stream": case.stream, "iters": case.iters}
        rows.append(row)
        log(f"train {case.name}: bare {row['bare']:.3f} s/it, train_step {row['step']:.3f} s/it, " +
            ", ".join(f"loader w{w} {v['per_it']:.3f} s/it" for w, v in row["loader"].items()) +
            (f", w1 threads {threads - 1} {row['loader_fewer_threads']['per_it']:.3f}"
             if row["loader_fewer_threads"] else "") +
            (f", train() {row['train']['per_it']:.3f} s/it" if row["train"] else ""))
    return {"rows": rows, "repeats": repeats, "threads": threads}


def profile_trainer(tmp: Path, caches: dict, iters: int = 20) -> str:
    """cProfile of a short lab-size temporal train() run: the top functions by own time (for the report)."""
    import cProfile
    import pstats
    from twostream_lib.data import RunData
    from twostream_lib.train import train
    case = TrainCase("temporal lab", "temporal", 80, 0.25, 32, iters, "lab", True)
    ds = _dataset("temporal", caches["lab"], 80)
    rd = RunData(ds, list(ds.labels), [], [["a", "b"]])
    c = _cfg(case, tmp / "profile-run", 1, iters)
    pr = cProfile.Profile()
    with quiet():
        pr.enable()
        train(c, progress=False, data=rd)
        pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(25)
    return s.getvalue()


# ============================================================================================ 4. end to end
def bench_e2e(tmp: Path, scale: str, iters: int, eval_frames: int, eval_crops: int) -> dict:
    """Lab ``scale`` from nothing to fused accuracy through the command line, one run, wall time per stage."""
    py = sys.executable
    root, cache, runs = tmp / "e2e-lab", tmp / "e2e-cache", tmp / "e2e-runs"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    w = str(CORES)
    steps = [max(1, int(iters * 0.7)), max(1, int(iters * 0.9))]
    common = [f"roots=[{root / 'lab-ucf'}]", f"caches=[{cache}]", f"max_iters={iters}",
              f"lr_steps=[{steps[0]},{steps[1]}]", f"val_every={max(1, iters // 2)}",
              f"ckpt_every={max(1, iters // 2)}", "device=cpu", "tensorboard=false"]
    if scale == "tiny":  # 48x64 frames: too small for CNN-M-2048 (the config needs crops >= 59)
        common += ["arch=resnet18", "width=1", "crop_size=40"]
    stages: list[tuple[str, list[str]]] = [
        ("generate lab-ucf", [py, str(REPO / "data_scripts" / "make_lab_dataset.py"), "--root", str(root),
                              "--scale", scale, "--workers", w, "--datasets", "lab-ucf", "--quiet"]),
        ("prepare (DIS)", [py, "-m", "twostream_lib", "prepare", "--dataset", "lab-ucf", "--root",
                           str(root / "lab-ucf"), "--cache", str(cache), "--flow", "dis", "--workers", w,
                           "--no-progress"]),
        ("train spatial", [py, "-m", "twostream_lib", "train", str(REPO / "configs" / "lab_spatial.yaml"),
                           *common, f"out_dir={runs / 'spatial'}", "--no-progress"]),
        ("train temporal", [py, "-m", "twostream_lib", "train", str(REPO / "configs" / "lab_temporal.yaml"),
                            *common, f"out_dir={runs / 'temporal'}", "--no-progress"]),
    ]
    for s in ("spatial", "temporal"):
        stages.append((f"evaluate {s}", [py, "-m", "twostream_lib", "evaluate", str(runs / s / "best.pt"),
                                         "--subset", "test", "--out", str(runs / f"{s}.npz"), "--frames",
                                         str(eval_frames), "--crops", str(eval_crops), "--no-progress"]))
    res = {"scale": scale, "iters": iters, "frames": eval_frames, "crops": eval_crops, "stages": [],
           "commands": []}
    for name, cmd in stages:
        t = time.perf_counter()
        p = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t
        res["commands"].append(" ".join(Path(c).name if c == py else c for c in cmd))
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
            res["stages"].append({"stage": name, "s": dt, "note": "FAILED: " + " / ".join(tail)})
            log(f"e2e {name} FAILED ({dt:.1f} s): {tail}")
            res["error"] = name
            return res
        note = (p.stdout.strip().splitlines() or [""])[-1]
        res["stages"].append({"stage": name, "s": dt, "note": note})
        log(f"e2e {name}: {dt:.1f} s — {note}")
    # fuse: the CLI when fusion.py has main(), else the library call
    from twostream_lib import fusion
    scores = [str(runs / "spatial.npz"), str(runs / "temporal.npz")]
    t = time.perf_counter()
    if hasattr(fusion, "main"):
        p = subprocess.run([py, "-m", "twostream_lib", "fuse", *scores], cwd=tmp, env=env, capture_output=True,
                           text=True)
        note = (p.stdout.strip().splitlines() or [""])[-1] if p.returncode == 0 else "FAILED: " + p.stderr[-300:]
        res["commands"].append("python -m twostream_lib fuse spatial.npz temporal.npz")
    else:
        note = "(no `fuse` CLI yet: twostream_lib.fusion.fuse_files)"
    r = fusion.fuse_files(scores, method="average")
    dt = time.perf_counter() - t
    res["stages"].append({"stage": "fuse (average)", "s": dt, "note": note})
    res["accuracy"] = {"spatial": r["stream_accuracy"][0], "temporal": r["stream_accuracy"][1],
                       "fused": r["accuracy"], "videos": len(r["labels"]), "classes": len(r["classes"])}
    log(f"e2e fused accuracy {100 * r['accuracy']:.1f}% (spatial {100 * r['stream_accuracy'][0]:.1f}%, "
        f"temporal {100 * r['stream_accuracy'][1]:.1f}%)")
    return res


# ============================================================================================ 5. GPU
def bench_gpu(tmp: Path, quick: bool, repeats: int, caches: dict | None, device: str = "cuda",
              batch: int = 256, crop: int = 224) -> dict:
    """Training samples/s of CNN-M-2048 at 224 (batch 256) on the GPU: fp32, bf16 autocast, channels_last,
    torch.compile; vs the loader's ceiling with all cores."""
    if device == "cuda" and not torch.cuda.is_available():
        return {"skipped": "CUDA is not available (torch.cuda.is_available() is False)"}
    from twostream_lib.config import TrainConfig
    from twostream_lib.models import build_model_for
    from twostream_lib.train import train_step

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    variants = [("fp32", dict()), ("bf16 AMP", dict(amp=True)), ("bf16 AMP + channels_last",
                                                                  dict(amp=True, channels_last=True)),
                ("bf16 AMP + channels_last + compile", dict(amp=True, channels_last=True, compile=True))]
    iters = 5 if quick else 20
    rows = []
    for stream in ("spatial", "temporal"):
        ch = 3 if stream == "spatial" else 20
        for vname, opts in variants:
            cfg = TrainConfig(stream=stream, crop_size=crop, width=1.0, batch_size=batch, L=10,
                              dropout=0.5 if stream == "spatial" else 0.9, device=device)
            torch.manual_seed(0)
            model = build_model_for(cfg, 101).to(dev)
            if opts.get("channels_last"):
                model = model.to(memory_format=torch.channels_last)
            net = model
            try:
                if opts.get("compile"):
                    net = torch.compile(model)
                opt = torch.optim.SGD(model.parameters(), lr=1e-5, momentum=0.9, weight_decay=5e-4)  # tiny lr: timing only, never diverges
                sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[10 ** 9])
                x = torch.randn(batch, ch, crop, crop, device=dev)
                y = torch.randint(0, 101, (batch,), device=dev)
                t = time.perf_counter()
                for _ in range(3):  # warm-up (cudnn autotune, compilation)
                    train_step(net, (x, y), opt, sched, dev, amp=opts.get("amp", False),
                               channels_last=opts.get("channels_last", False))
                sync()
                warm = time.perf_counter() - t
                per = []
                for r in range(repeats):
                    sync()
                    t = time.perf_counter()
                    for _ in range(iters):
                        train_step(net, (x, y), opt, sched, dev, amp=opts.get("amp", False),
                                   channels_last=opts.get("channels_last", False))
                    sync()
                    per.append((time.perf_counter() - t) / iters)
                mem = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
                rows.append({"stream": stream, "variant": vname, "samples_s": batch / med(per), "warm_s": warm,
                             "mem_gib": mem})
                log(f"gpu {stream} {vname}: {batch / med(per):.0f} samples/s")
            except Exception as e:  # e.g. torch.compile without a compiler
                rows.append({"stream": stream, "variant": vname, "error": f"{type(e).__name__}: {str(e)[:120]}"})
                log(f"gpu {stream} {vname}: failed {e!r:.200}")
            finally:
                del net, model
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
    tvl1 = device_loader = []
    if dev.type == "cuda":
        import tvl1_bench

        tvl1 = tvl1_bench.bench_tvl1(sizes=((240, 320), (96, 128)), batches=(1, 16, 64, 256), device=device,
                                     repeats=repeats, opencv=False)
        if caches is not None:
            device_loader = bench_device_loader(caches, device, 10 if quick else 40, cuda_rows=True)
    loader = {}
    if caches is not None:  # the loader's ceiling with all cores, 224 crops from 256-short-side frames
        torch.set_num_threads(1)
        for stream in ("spatial", "temporal"):
            ds = _dataset(stream, caches["224"], 224)
            loader[stream] = med(loader_rate(ds, CORES, 32, 2 if quick else 4, repeats))
            log(f"gpu: loader {stream} all {CORES} cores: {loader[stream]:.0f} samples/s")
    return {"rows": rows, "loader": loader, "batch": batch, "iters": iters, "repeats": repeats, "tvl1": tvl1,
            "device_loader": device_loader,
            "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else str(dev)}


def bench_tvl1_section(quick: bool, repeats: int) -> dict:
    """TV-L1 in PyTorch (``tvl1-torch``) beside OpenCV's TV-L1 on the same 2 CPU threads, and their agreement."""
    import tvl1_bench

    sizes = ((96, 128),) if quick else ((96, 128), (240, 320))
    rows = tvl1_bench.bench_tvl1(sizes=sizes, batches=(1, 16), device="cpu", threads=2, repeats=repeats)
    return {"rows": rows, "accuracy": tvl1_bench.accuracy_tvl1(device="cpu", lab_pairs_n=8 if quick else 32)}


def _swap_lrn(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` with every :class:`CrossChannelLRN` replaced by torch's own ``nn.LocalResponseNorm``."""
    from twostream_lib.models import CrossChannelLRN

    for name, child in module.named_children():
        if isinstance(child, CrossChannelLRN):
            setattr(module, name, torch.nn.LocalResponseNorm(child.size, child.alpha, child.beta, child.k))
        else:
            _swap_lrn(child)
    return module


def bench_lrn(quick: bool, repeats: int) -> dict:
    """CPU, torch threads 2: torch's ``nn.LocalResponseNorm`` vs the nets' :class:`CrossChannelLRN` (forward,
    forward + backward) at the shapes of CNN-M-2048's norm1/norm2, and a whole bare SGD step of the lab nets with
    each. Interleaved, median of ``repeats`` runs."""
    from twostream_lib.config import load_config
    from twostream_lib.models import CNN_M_LRN, CrossChannelLRN, build_model_for

    torch.set_num_threads(2)
    n = 3 if quick else 10
    shapes = [("lab norm1 (width 0.25, 80 crops)", (32, 24, 37, 37)), ("lab norm2", (32, 64, 8, 8)),
              ("paper norm1 (width 1, 224 crops)", (8, 96, 109, 109)), ("paper norm2", (8, 256, 26, 26))]
    rows = []
    for name, shape in shapes:
        torch.manual_seed(0)
        x = torch.relu(3 * torch.randn(*shape))
        impl = {"torch": torch.nn.LocalResponseNorm(**CNN_M_LRN), "ours": CrossChannelLRN(**CNN_M_LRN)}
        err = ((impl["ours"](x) - impl["torch"](x)).abs().max() / impl["torch"](x).abs().max()).item()
        fwd, both = {k: [] for k in impl}, {k: [] for k in impl}
        xg = x.clone().requires_grad_()
        for r in range(repeats):
            for k in (("torch", "ours") if r % 2 == 0 else ("ours", "torch")):
                with torch.no_grad():
                    fwd[k].append(timed(lambda: [impl[k](x) for _ in range(n)]) / n)
                both[k].append(timed(lambda: [impl[k](xg).sum().backward() for _ in range(n)]) / n)
        rows.append({"case": name, "shape": shape, "err": err, **{f"fwd_{k}": med(v) for k, v in fwd.items()},
                     **{f"both_{k}": med(v) for k, v in both.items()}})
        log(f"lrn {name}: fwd+bwd torch {rows[-1]['both_torch'] * 1e3:.1f} ms, ours {rows[-1]['both_ours'] * 1e3:.1f} ms")
    steps = []
    for stream in ("spatial", "temporal"):
        cfg = load_config(REPO / "configs" / f"lab_{stream}.yaml")
        x = torch.randn(32, 3 if stream == "spatial" else 2 * cfg.L, cfg.crop_size, cfg.crop_size)
        y = torch.randint(0, 16, (32,))
        nets = {"ours": build_model_for(cfg, 16), "torch": _swap_lrn(build_model_for(cfg, 16))}
        opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in nets.items()}

        def step(k):
            opts[k].zero_grad()
            F.cross_entropy(nets[k](x), y).backward()
            opts[k].step()

        times = {k: [] for k in nets}
        for k in nets:
            step(k)  # warm-up
        for r in range(repeats):
            for k in (("torch", "ours") if r % 2 == 0 else ("ours", "torch")):
                times[k].append(timed(lambda: [step(k) for _ in range(n)]) / n)
        steps.append({"case": f"lab {stream} net, batch 32 (bare SGD step)", **{k: med(v) for k, v in times.items()}})
        log(f"lrn {steps[-1]['case']}: torch {steps[-1]['torch']:.3f} s, ours {steps[-1]['ours']:.3f} s")
    return {"rows": rows, "steps": steps, "n": n, "repeats": repeats}


def bench_memory_format(quick: bool, repeats: int) -> dict:
    """CPU, torch threads 2: the lab and paper nets in torch's default layout (NCHW) and in ``channels_last``
    (NHWC, the configs' ``channels_last``): a bare SGD step and a test-time forward pass (no grad) of one video's
    views. Interleaved, median of ``repeats`` runs; *max diff* = largest |NHWC - NCHW| of the test logits."""
    from twostream_lib.config import load_config
    from twostream_lib.models import build_model_for

    torch.set_num_threads(2)
    cases = [("lab spatial", "lab_spatial", 32, 250, 3 if quick else 10),
             ("lab temporal", "lab_temporal", 32, 250, 3 if quick else 10),
             ("paper spatial", "ucf101_spatial_scratch", 8, 50, 1 if quick else 2),
             ("paper temporal", "ucf101_temporal", 8, 50, 1 if quick else 2)]
    rows = []
    for name, config, batch, views, n in cases:
        cfg = load_config(REPO / "configs" / f"{config}.yaml")
        torch.manual_seed(0)
        net = build_model_for(cfg, 16)
        opt = torch.optim.SGD(net.parameters(), lr=1e-5, momentum=0.9)
        shape = (cfg.in_channels, cfg.crop_size, cfg.crop_size)
        xs = {"nchw": torch.randn(batch, *shape), "test": torch.randn(views, *shape)}
        fmt_of = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}
        y = torch.randint(0, 16, (batch,))

        def step(f):
            opt.zero_grad()
            F.cross_entropy(net(xs["nchw"].contiguous(memory_format=fmt_of[f])), y).backward()
            opt.step()

        def test(f):
            with torch.no_grad():
                return net.eval()(xs["test"].contiguous(memory_format=fmt_of[f]))

        err = (test("nhwc") - test("nchw")).abs().max().item()
        net.train()
        times = {(k, f): [] for k in ("step", "test") for f in fmt_of}
        for f in fmt_of:
            step(f)  # warm-up
        for r in range(repeats):
            for f in (("nchw", "nhwc") if r % 2 == 0 else ("nhwc", "nchw")):
                times[("step", f)].append(timed(lambda: [step(f) for _ in range(n)]) / n)
                times[("test", f)].append(timed(lambda: [test(f) for _ in range(n)]) / n)
                net.train()
        row = {"case": name, "batch": batch, "views": views, "err": err,
               **{f"{k}_{f}": med(v) for (k, f), v in times.items()}}
        rows.append(row)
        log(f"memory format {name}: step {row['step_nchw']:.3f} -> {row['step_nhwc']:.3f} s, test "
            f"{row['test_nchw']:.3f} -> {row['test_nhwc']:.3f} s")
    return {"rows": rows, "repeats": repeats}


def bench_device_loader(caches: dict, device: str, batches: int, cuda_rows: bool) -> list[dict]:
    """The device-side loader (``loader: device``) at 224 from the 256-short-side cache, temporal and spatial."""
    import loader_bench

    rows = []
    for stream in ("temporal", "spatial"):
        rows.append(loader_bench.bench_loader(caches["224"], stream=stream, device=device, n_batches=batches,
                                              batch=256 if cuda_rows else 64))
        if cuda_rows:  # nvJPEG with part of each batch decoded by the CPU cores beside it
            rows.append(loader_bench.bench_loader(caches["224"], stream=stream, device=device, n_batches=batches,
                                                  cpu_decode_share=0.5))
        log(f"device loader {stream} on {device}: {rows[-1]['samples_s']:.0f} samples/s")
    return rows


# ============================================================================================ report
def render(results: dict, info: dict, args, elapsed: float) -> str:
    L: list[str] = []
    cmd = "python benchmarks/run.py " + " ".join(sys.argv[1:])
    L += ["# Benchmarks", "",
          f"Generated by `{cmd.strip()}` (`make bench`) on {info['date']}, in {elapsed / 60:.1f} min"
          + (" — **quick smoke run: few iterations, numbers are rough**" if args.quick else "") + ".", "",
          "## Machine", "",
          table(["", ""], [
              ["CPU", info["cpu"]], ["cores (os.cpu_count)", info["cores"]],
              ["RAM", f"{info['ram_gib']:.1f} GiB" if info["ram_gib"] else "?"],
              ["GPU", info["gpu"] or "none"],
              ["load average at start (1/5/15 min)", " / ".join(f"{x:.1f}" for x in info["load"])
               if info["load"] else "?"],
              ["python / torch / cv2 / numpy", f"{info['python']} / {info['torch']} / {info['cv2']} / "
                                                f"{info['numpy']}"],
              ["torch threads (training)", info["torch_threads"]], ["platform", info["platform"]],
          ]), "",
          "Every figure is the median of ≥ 3 runs; figures compared as ratios were measured interleaved in "
          "the same process. A load average above the core count means other jobs shared the machine: "
          "absolute rates are then low, ratios still hold.", ""]
    if "flow" in results:
        fl = results["flow"]
        L += ["## 1. Optical flow (pairs/s, one core)", "",
              "Frames are lab clips rendered at `small` (96x128) and `full` (240x320, UCF-101's size), written "
              "as XVID `.avi` and decoded back, so bare and ours see the same frames. *Bare* = the OpenCV call "
              "alone on grey frames (library defaults: TV-L1 3 warps/20 inner iterations, Farneback 3 levels, "
              "DIS `medium`); *ours* = `prepare()` on a one-video dataset: decode + grey + flow + ±20 px "
              "quantisation + JPEG encode (frames and flow x/y) + atomic write + manifest. OpenCV single-"
              "threaded (as in `prepare`'s workers). Frames kept at their size (`short_side=None`).", "",
              table(["frame size", "method", "pairs/run", "bare OpenCV pairs/s", "ours (prepare) pairs/s",
                     "ours / bare time"],
                    [[r["size"], r["method"], r["pairs"], fmt(r["bare_pairs_s"]), fmt(r["ours_pairs_s"]),
                      f"{r['ratio']:.2f}x"] for r in fl["rows"]]), "",
              f"`prepare` scaling with worker processes ({fl['scaling_method']}, {fl['scaling_videos']} lab "
              f"`small` videos of {fl['scaling_frames']} frames):", "",
              table(["workers", "videos/s", "pairs/s", "speed-up vs 1"],
                    [[s["workers"], fmt(s["videos_s"]), fmt(s["pairs_s"]), f"{s['speedup']:.2f}x"]
                     for s in fl["scaling"]]), ""]
    if "tvl1" in results:
        tv = results["tvl1"]
        L += ["## 1b. TV-L1 in PyTorch (`tvl1-torch`) beside OpenCV's TV-L1", "",
              "`twostream_lib.tvl1`: the same algorithm and parameters (`TVL1_DEFAULTS`: OpenCV's model parameters "
              "tau 0.25, lambda 0.15, theta 0.3, 5 scales x 0.8, median 5; a cheaper solver than OpenCV's defaults: "
              "3 warps instead of 5, 20 inner iterations instead of 30, epsilon 0.02 instead of 0.01 — 2-3x "
              "faster, within ~0.02 px of OpenCV's own defaults on smooth motion), batched over frame pairs. "
              "CPU, 2 threads for both (`OMP_WAIT_POLICY=PASSIVE`). *iters/warp*: the iterations each pair "
              "actually runs per warp (what OpenCV runs); *steps/warp*: what the batch loop ran.", "",
              table(["size", "batch", "ours pairs/s", "OpenCV pairs/s", "ours / OpenCV", "iters/warp",
                     "steps/warp"],
                    [[r["size"], r["batch"], fmt(r["pairs_per_s"]), fmt(r["opencv_pairs_per_s"]),
                      f"{r['speedup']:.2f}x" if r["speedup"] else "–", f"{r['iters_per_warp']:.1f}",
                      f"{r['steps_per_warp']:.1f}"] for r in tv["rows"]]), "",
              "Agreement with OpenCV (same parameters; 96x128 lab clips, and a photo moved by a known camera "
              "motion with a moving patch), and error against ground truth:", "",
              table(["source", "pairs", "mean EPE to OpenCV (px)", "worst pair", "uint8 within ±1",
                     "EPE to GT, ours", "EPE to GT, OpenCV"],
                    [[r["source"], r["pairs"], f"{r['epe_vs_opencv']:.4f}", f"{r['epe_vs_opencv_worst_pair']:.4f}",
                      f"{100 * r['uint8_within_1']:.2f} %", f"{r['epe_gt_ours']:.4f}", f"{r['epe_gt_opencv']:.4f}"]
                     for r in tv["accuracy"]]), ""]
    if "loader" in results:
        lo = results["loader"]
        ws = [w for w in lo["workers"]]
        L += ["## 2. Data loader (samples/s, DataLoader batch 32)", "",
              "Training samples (random video, random frame / flow stack, random crop, flip; RGB jitter for "
              "spatial; L=10 stacking + mean subtraction for temporal) from a prepared cache. `224` rows: lab "
              "`full` clips (240x320) prepared with `short_side=256` (→ 256x341, the real pipeline's frames); "
              "`80` rows: lab `small` (96x128). *Per-file baseline* = the peers' layout (one JPEG file per "
              "frame and per flow x / y image, same JPEG bytes) opened one by one in the main process; *ours* "
              "= one packed `.bin` per stream per video, one open + one read per sample. Steady state "
              "(persistent workers, first epoch not timed), files in the page cache; torch single-threaded in "
              "the main process (as in workers), so \"0 workers\" is one core's rate. *Decoded in memory* = "
              "ours, 0 workers, with the cache's streams kept decoded (`VideoCache(memory_mb=...)`, the configs' "
              "`cache_memory_mb`): each JPEG decoded once, then served from memory (the lab configs' setting).", "",
              table(["input", "frames", "per-file baseline (main process)"] +
                    [f"ours, {w} workers" if w != CORES else f"ours, {w} workers (all cores)" for w in ws] +
                    ["ours, 0 workers, decoded in memory", "ours (0 workers) / baseline",
                     "decoded in memory / ours (0 workers)"],
                    [[r["input"], r["frame"], fmt(r["naive"])] + [fmt(r["rates"][w]) for w in ws] +
                     [fmt(r.get("memory")), f"{r['rates'][0] / r['naive']:.2f}x",
                      f"{r['memory'] / r['rates'][0]:.2f}x" if r.get("memory") else "–"] for r in lo["rows"]]), ""]
        if lo.get("device_cpu"):
            L += ["The device-side loader (`loader: device`, `twostream_lib.device_loader`) run on the CPU: the "
                  "cache's JPEG bytes read in bulk, decoded in one call per batch (libjpeg-turbo here, nvJPEG on "
                  "CUDA) and augmented with batched tensor ops, all cores; 224 crops, batch "
                  f"{lo['device_cpu'][0]['batch']}:", "",
                  table(["stream", "samples/s", "read / decode / process, s per batch"],
                        [[r["stream"], fmt(r["samples_s"]), " / ".join(f"{r['stage_s_per_batch'][k]:.3f}"
                                                                      for k in ("read", "decode", "process"))]
                         for r in lo["device_cpu"]]), ""]
    if "train" in results:
        tr = results["train"]
        lw = sorted({w for r in tr["rows"] for w in r["loader"]})
        t1 = tr["threads"] - 1

        def cell(r, w):
            v = r["loader"].get(w)
            return f"{v['per_it']:.3f} (first {v['first']:.1f} s)" if v else "–"

        def pct(a, b):
            return f"{100 * (a / b - 1):+.0f}%"

        L += ["## 3. Training step, CPU (seconds per iteration; samples/s in brackets)", "",
              f"CNN-M-2048 forward + backward + SGD step (momentum 0.9, weight decay), torch threads "
              f"{tr['threads']}. *Bare* = `zero_grad; cross_entropy(model(x), y).backward(); step()` on "
              "pre-made tensors; *train_step* = the trainer's `train_step` on the same tensors; *+ loader, w "
              "workers* = `train_step` fed by the trainer's own `make_train_loader` (class-balanced sampler) from "
              "the caches of section 2, steady state (the first iteration, with worker start-up, shown apart); "
              "*train()* = the whole trainer (`train(cfg)`: its loader with 1 worker, "
              "logging, TensorBoard, checkpoint), steady-state rate from its own log rows. All columns of a row "
              "ran interleaved.", "",
              table(["case", "bare", "train_step", "step overhead"] +
                    [f"+ loader, {w} workers" for w in lw] +
                    ([f"+ loader, 1 worker, torch threads {t1}"] if t1 >= 1 else []) +
                    ["waiting on data (best loader vs train_step)", "train()", "train() vs bare + loader (1 w)",
                     "train() vs bare"],
                    [[r["case"], f"{r['bare']:.3f} ({fmt(r['batch'] / r['bare'])})",
                      f"{r['step']:.3f}", pct(r["step"], r["bare"])] +
                     [cell(r, w) for w in lw] +
                     ([f"{r['loader_fewer_threads']['per_it']:.3f}" if r.get("loader_fewer_threads") else "–"]
                      if t1 >= 1 else []) +
                     [pct(min(v["per_it"] for v in r["loader"].values()), r["step"]),
                      f"{r['train']['per_it']:.3f} ({fmt(r['batch'] / r['train']['per_it'])})"
                      if r["train"] else "–",
                      pct(r["train"]["per_it"], r["loader"][1]["per_it"]) if r["train"] and 1 in r["loader"]
                      else "–",
                      pct(r["train"]["per_it"], r["bare"]) if r["train"] else "–"]
                     for r in tr["rows"]]), ""]
        if results.get("profile"):
            L += ["<details><summary>cProfile of a lab-size temporal <code>train()</code> run "
                  "(cumulative time)</summary>", "", "```", results["profile"].strip(), "```", "", "</details>",
                  ""]
    if "lrn" in results:
        ln = results["lrn"]
        L += ["## 3b. Local response normalisation, CPU (ms per call)", "",
              "CNN-M-2048's LRN (norm1, norm2; size 5, alpha 5e-4, beta 0.75, k 2) on ReLU outputs of the layer's "
              "shape, torch threads 2: torch's `nn.LocalResponseNorm` (pads the channels, 3-D average pool) vs "
              "the nets' `CrossChannelLRN` (`twostream_lib.models`: the channel-window sums as one 1x1 "
              f"convolution with a 0/1 band matrix). Median of {ln['repeats']} interleaved runs of "
              f"{ln['n']} calls; *max diff* = largest |ours - torch| / largest |torch|.", "",
              table(["layer", "input (B, C, H, W)", "forward: torch", "ours", "forward + backward: torch", "ours",
                     "speed-up (fwd + bwd)", "max diff"],
                    [[r["case"], " x ".join(map(str, r["shape"])), f"{1e3 * r['fwd_torch']:.2f}",
                      f"{1e3 * r['fwd_ours']:.2f}", f"{1e3 * r['both_torch']:.2f}", f"{1e3 * r['both_ours']:.2f}",
                      f"{r['both_torch'] / r['both_ours']:.1f}x", f"{r['err']:.0e}"] for r in ln["rows"]]), "",
              "A whole bare SGD step (forward, backward, step; as section 3's *bare*) of the lab nets, with each "
              "LRN (seconds per iteration):", "",
              table(["case", "torch's LRN", "CrossChannelLRN", "speed-up"],
                    [[r["case"], f"{r['torch']:.3f}", f"{r['ours']:.3f}", f"{r['torch'] / r['ours']:.2f}x"]
                     for r in ln["steps"]]), ""]
    if "memfmt" in results:
        mf = results["memfmt"]
        L += ["## 3c. Memory format, CPU (seconds per call)", "",
              "The lab nets (width 0.25, 80 crops) and the paper's (width 1, 224 crops) with their input in torch's "
              "default layout (NCHW) and in `channels_last` (NHWC; the configs' `channels_last`, on in the lab and "
              "paper configs): a bare SGD step (as section 3's *bare*) and a test-time forward pass of one video's "
              "views (no grad; 250 = the paper's 25 x 10). Torch threads 2, median of "
              f"{mf['repeats']} interleaved runs; *max diff* = largest |NHWC - NCHW| of the test logits (the same "
              "function, other float rounding).", "",
              table(["net", "SGD step, batch: NCHW", "NHWC", "speed-up", "test forward, views: NCHW", "NHWC",
                     "speed-up", "max diff"],
                    [[r["case"], f"{r['batch']}: {r['step_nchw']:.3f}", f"{r['step_nhwc']:.3f}",
                      f"{r['step_nchw'] / r['step_nhwc']:.2f}x", f"{r['views']}: {r['test_nchw']:.3f}",
                      f"{r['test_nhwc']:.3f}", f"{r['test_nchw'] / r['test_nhwc']:.2f}x", f"{r['err']:.0e}"]
                     for r in mf["rows"]]), ""]
    if "e2e" in results:
        e = results["e2e"]
        total = sum(s["s"] for s in e["stages"])
        L += [f"## 4. End to end: lab `{e['scale']}` from nothing to fused accuracy (one run, command line)", "",
              f"**Reduced schedule to fit the time budget:** each stream trains {e['iters']} iterations "
              f"(the lab configs: 1000), lr steps at 70% / 90%; test protocol {e['frames']} frames x "
              f"{e['crops']} crops per video (paper: 25 x 10). Only `lab-ucf` is generated. Accuracies are "
              "therefore far below the chapters'; this row times the pipeline, it doesn't score it."
              + (" Tiny frames are 48x64, too small for CNN-M-2048: ResNet-18 on 40 px crops (as the unit tests)." if e["scale"] == "tiny" else "")
              + (f" **Why tiny:** {e['why']}." if e.get("why") else ""), "",
              table(["stage", "wall s", "output"],
                    [[s["stage"], f"{s['s']:.1f}", s["note"].replace("|", "/")[:140]] for s in e["stages"]]
                    + [["**total**", f"**{total:.1f}**", ""]]), ""]
        if "accuracy" in e:
            a = e["accuracy"]
            L += [f"Test accuracy ({a['videos']} videos, {a['classes']} classes, split 1): spatial "
                  f"{100 * a['spatial']:.1f}%, temporal {100 * a['temporal']:.1f}%, fused (average) "
                  f"{100 * a['fused']:.1f}%.", ""]
        L += ["<details><summary>commands</summary>", "", "```"] + e["commands"] + ["```", "", "</details>", ""]
    L += ["## 5. GPU", ""]
    g = results.get("gpu")
    if g is None or "skipped" in g:
        why = g["skipped"] if g else ("CUDA is not available" if not torch.cuda.is_available()
                                      else "CUDA is available but the GPU section was not requested")
        L += [f"No GPU was available in this session ({why}); run `make bench ARGS=--gpu` (or "
              "`python benchmarks/run.py --gpu --sections train`) on a GPU machine. It measures training "
              "samples/s of CNN-M-2048 at 224, batch 256, spatial and temporal, fp32 vs bf16 AMP vs "
              "channels_last vs torch.compile, and the loader's ceiling with all cores beside it.", ""]
    else:
        L += [f"Device: {g['device']}; batch {g['batch']}, 224 crops, width 1.0, {g['iters']} iterations x "
              f"{g['repeats']} runs (median), `train_step` on pre-made device tensors.", "",
              table(["stream", "variant", "samples/s", "warm-up s", "peak GiB"],
                    [[r["stream"], r["variant"], fmt(r.get("samples_s")) if "error" not in r else r["error"],
                      f"{r['warm_s']:.1f}" if "warm_s" in r else "–",
                      fmt(r.get("mem_gib")) if r.get("mem_gib") else "–"] for r in g["rows"]]), ""]
        if g.get("tvl1"):
            L += ["TV-L1 in PyTorch on the GPU (`tvl1-torch`, torch.compile on, convergence checked every 5 "
                  "iterations):", "",
                  table(["size", "batch", "pairs/s", "iters/warp", "steps/warp", "warm-up s", "peak MiB"],
                        [[r["size"], r["batch"], fmt(r["pairs_per_s"]), f"{r['iters_per_warp']:.1f}",
                          f"{r['steps_per_warp']:.1f}", fmt(r["warmup_s"]), fmt(r["peak_mem_mib"])]
                         for r in g["tvl1"]]), ""]
        if g.get("device_loader"):
            L += ["The device-side loader on the GPU (224 crops, batch 256; nvJPEG, or nvJPEG with half of each "
                  "batch decoded by the CPU cores):", "",
                  table(["stream", "CPU decode share", "samples/s", "read / decode / process, s per batch"],
                        [[r["stream"], r["cpu_decode_share"], fmt(r["samples_s"]),
                          " / ".join(f"{r['stage_s_per_batch'][k]:.3f}" for k in ("read", "decode", "process"))]
                         for r in g["device_loader"]]), ""]
        if g["loader"]:
            best = {s: max((r["samples_s"] for r in g["rows"] if r["stream"] == s and "samples_s" in r),
                           default=float("nan")) for s in ("spatial", "temporal")}
            L += [table(["stream", f"loader, all {CORES} cores", "best GPU variant", "GPU / loader"],
                        [[s, fmt(g["loader"][s]), fmt(best[s]), f"{best[s] / g['loader'][s]:.1f}x"]
                         for s in ("spatial", "temporal")]), ""]
    L += bottleneck(results)
    return "\n".join(L).rstrip() + "\n"


def _blocks(text: str) -> dict[str, str]:
    """``{"head": ..., "## 1.": ..., "## Machine": ...}``: a report cut at its ``## `` headers."""
    out, key, cur = {}, "head", []
    for line in text.splitlines():
        if line.startswith("## "):
            out[key] = "\n".join(cur)
            key, cur = line.split(" ")[0] + " " + line.split(" ")[1], [line]
        else:
            cur.append(line)
    out[key] = "\n".join(cur)
    return out


def merge_markdown(old: str, new: str, cpu_ran: bool) -> str:
    """The new report, with each section that was not measured this time ("not run" / "needs" placeholders) taken
    from the old report; the machine block stays the old one when only the GPU section ran."""
    o, n = _blocks(old), _blocks(new)
    keep = lambda k: k in o and (k not in n or "(needs the" in n[k] or (k in ("head", "## Machine") and not cpu_ran)
                                 or (k == "## 5." and "No GPU was available" in n[k] and "No GPU" not in o[k]))
    merged = {k: (o[k] if keep(k) else v) for k, v in n.items()}
    merged.update({k: v for k, v in o.items() if k not in n})
    old_sections = [k for k in merged if k.startswith("## ") and k != "## Machine" and merged[k] is o.get(k)]
    if old_sections and merged["head"] is n.get("head"):  # say which figures come from an earlier run, and where
        when = next((line for line in o.get("head", "").splitlines() if line.startswith("Generated by")), "")
        cpu = next((line for line in o.get("## Machine", "").splitlines() if line.startswith("| CPU |")), "")
        merged["head"] = n["head"].rstrip() + (
            f"\n\n{'Sections' if len(old_sections) > 1 else 'Section'} "
            f"{', '.join(k[3:].rstrip('.') for k in sorted(old_sections))} {'are' if len(old_sections) > 1 else 'is'} "
            f"kept from an earlier "
            f"report ({when.rstrip('.').replace('Generated by', 'generated by')}; CPU: "
            f"{cpu.strip('| ').replace('CPU |', '').strip(' |') or 'not recorded'}).\n")
    order = sorted(merged, key=lambda k: (k != "head", k != "## Machine", k))
    return "\n".join(merged[k].rstrip() + "\n" for k in order).rstrip() + "\n"


def bottleneck(results: dict) -> list[str]:
    L = ["## 6. Bottleneck of a full UCF-101 run", ""]
    fl, lo = results.get("flow"), results.get("loader")
    if not fl or not lo:
        return L + ["(needs the `flow` and `loader` sections.)", ""]
    row = next(r for r in fl["rows"] if r["method"] == "tvl1" and r["w"] == 320)
    dis = next(r for r in fl["rows"] if r["method"] == "dis" and r["w"] == 320)
    pairs = UCF_VIDEOS * (UCF_FRAMES - 1)
    rate = row["ours_pairs_s"]
    sc = {s["workers"]: s for s in fl["scaling"]}
    eff = sc[max(sc)]["speedup"] / max(sc)
    hours1 = pairs / rate / 3600
    paper_rate = PAPER_ITERS * PAPER_BATCH / PAPER_SECONDS
    tl = next(r for r in lo["rows"] if r["key"] == "224" and r["stream"] == "temporal")
    sp = next(r for r in lo["rows"] if r["key"] == "224" and r["stream"] == "spatial")
    per_core_t = tl["rates"][0]  # one process does all the work with 0 workers: one core
    per_core_s = sp["rates"][0]
    need_t = paper_rate / per_core_t
    g = results.get("gpu")
    gpu_line = []
    if g and "rows" in g:
        best_t = max((r["samples_s"] for r in g["rows"] if r["stream"] == "temporal" and "samples_s" in r),
                     default=None)
        if best_t:
            gpu_line = [f"- Measured here: the temporal net trains at {fmt(best_t)} samples/s on {g['device']}; "
                        f"feeding it needs ≈ {best_t / per_core_t:.0f} loader cores at this machine's per-core "
                        f"rate.", ""]
    L += [
        "**Flow extraction.** UCF-101 has 13,320 videos x ~180 frames ≈ "
        f"{pairs / 1e6:.2f}M frame pairs. Our TV-L1 pipeline (`prepare`, 320x240, section 1) runs at "
        f"{fmt(rate)} pairs/s per core, so one core needs {pairs:,} / {fmt(rate)} = **{fmt(hours1)} h** "
        f"(≈ {fmt(hours1 / 24)} days). `prepare`'s worker processes share nothing but the disk, so N free cores "
        f"should take ≈ {fmt(hours1)} / N h (measured here with {max(sc)} workers: "
        f"{sc[max(sc)]['speedup']:.2f}x, {100 * eff:.0f}% efficiency — low when other jobs hold the cores): "
        f"{fmt(hours1 / 16)} h on 16 cores, {fmt(hours1 / 64)} h on 64. At 256 short side (the cache's real "
        f"size, 341x256 = 1.14x the pixels) add ~14%. DIS would take {fmt(pairs / dis['ours_pairs_s'] / 3600)} "
        f"core-hours instead; the paper's GPU Brox flow took 0.06 s a pair = {fmt(pairs * 0.06 / 3600)} GPU-hours.",
        "",
        "**Loader vs GPU.** The paper's temporal net: 80,000 iterations x 256 samples in ~1 day on 4 Titans "
        f"= 80,000 x 256 / 86,400 s = **{fmt(paper_rate)} samples/s** (4 GPUs; ≈ {fmt(paper_rate / PAPER_SPEEDUP)} "
        f"samples/s for one Titan, as 4 GPUs gave a 3.2x speed-up). A modern GPU is one to two orders of "
        f"magnitude faster than a 2014 Titan (not measured here: run the GPU section). Our loader makes "
        f"{fmt(per_core_t)} temporal samples/s (L=10, 224 crops of 256x341 flow) and {fmt(per_core_s)} spatial "
        f"samples/s per core (0 workers = one core, section 2). So even the paper's 2014 rate needs "
        f"{fmt(paper_rate)} / {fmt(per_core_t)} ≈ **{need_t:.0f} cores** of temporal loading, and a GPU that "
        f"trains 10x faster ≈ {10 * need_t:.0f} cores.",
        "",
    ] + gpu_line + [
        "**Verdict.** Flow extraction is the one-off bottleneck (days of CPU on a workstation, hours on a "
        "large node); after it, the temporal loader (20 JPEG decodes per sample) is the steady-state "
        "bottleneck of training on a GPU: budget CPU cores for the DataLoader (`workers=`) in proportion to "
        "the GPU's samples/s, or decode on the GPU (e.g. nvJPEG / DALI) if the cores aren't there.", ""]
    return L


# ============================================================================================ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~2 min smoke run (prints; writes only with --out)")
    p.add_argument("--sections", default="flow,tvl1,loader,train,lrn,memfmt,e2e",
                   help="comma-separated subset of flow,tvl1,loader,train,lrn,memfmt,e2e[,gpu] (default: all CPU "
                        "sections); "
                        "the other sections of an existing BENCHMARKS.md are kept")
    p.add_argument("--gpu", action="store_true", help="also run the GPU section (skips without CUDA)")
    p.add_argument("--gpu-device", default="cuda", help=argparse.SUPPRESS)  # 'cpu' to dry-run the GPU code
    p.add_argument("--repeats", type=int, default=3, help="runs per figure (median), >= 3")
    p.add_argument("--e2e-scale", default=None, choices=("tiny", "small"),
                   help="lab scale of the end-to-end run (default: small, quick: tiny)")
    p.add_argument("--e2e-iters", type=int, default=None, help="training iterations per stream in e2e")
    p.add_argument("--budget-min", type=float, default=15.0,
                   help="wall-time budget: e2e runs at lab `small` only if it still fits, else at `tiny`")
    p.add_argument("--profile", action="store_true", help="add a cProfile of the trainer (train section)")
    p.add_argument("--out", default=None, help="markdown file to write (default BENCHMARKS.md in the repo)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    a = p.parse_args(argv)
    sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    if a.gpu and "gpu" not in sections:
        sections.append("gpu")
    if a.repeats < 3:
        p.error("--repeats must be >= 3 (every figure is a median of at least 3 runs)")
    cv2.setNumThreads(1)
    info = machine_info()
    log(f"{info['cpu']}, {CORES} cores, load {info['load']}; sections {', '.join(sections)}"
        f"{' (quick)' if a.quick else ''}")
    t_start = time.perf_counter()
    results: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="twostream-bench-"))
    try:
        caches = None
        if {"loader", "train", "gpu"} & set(sections):
            log("rendering and preparing the loader caches")
            caches = make_caches(tmp, a.quick)
        if "flow" in sections:
            results["flow"] = bench_flow(tmp, a.quick, a.repeats)
        if "tvl1" in sections:
            results["tvl1"] = bench_tvl1_section(a.quick, a.repeats)
        if "loader" in sections:
            results["loader"] = bench_loader(tmp, a.quick, a.repeats, caches)
        if "train" in sections:
            results["train"] = bench_train(tmp, a.quick, a.repeats, caches)
            if a.profile:
                results["profile"] = profile_trainer(tmp, caches)
        if "lrn" in sections:
            results["lrn"] = bench_lrn(a.quick, a.repeats)
        if "memfmt" in sections:
            results["memfmt"] = bench_memory_format(a.quick, a.repeats)
        if "e2e" in sections:
            scale, why = a.e2e_scale, ""
            if scale is None:
                left = a.budget_min * 60 - (time.perf_counter() - t_start)
                scale = "small" if (not a.quick and left >= E2E_SMALL_MIN * 60) else "tiny"
                if scale == "tiny" and not a.quick:
                    why = (f"lab `small` takes ~{E2E_SMALL_MIN} min here and only {left / 60:.1f} of the "
                           f"{a.budget_min:g} min budget were left, so this ran at `tiny` (48x64 frames)")
            iters = a.e2e_iters or ((10 if a.quick else 20) if scale == "tiny" else 60)
            frames, crops = (5, 1) if a.quick else (25, 10)
            results["e2e"] = bench_e2e(tmp, scale, iters, frames, crops)
            results["e2e"]["why"] = why
        if "gpu" in sections:
            if a.gpu_device == "cuda" and not torch.cuda.is_available():
                msg = "CUDA is not available (torch.cuda.is_available() is False)"
                log(f"GPU section skipped: {msg}")
                results["gpu"] = {"skipped": msg}
            else:
                small = a.gpu_device != "cuda"  # dry run on CPU: tiny sizes
                results["gpu"] = bench_gpu(tmp, a.quick or small, a.repeats, caches, a.gpu_device,
                                           batch=4 if small else 256, crop=224)
    finally:
        if a.keep:
            log(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    md = render(results, info, a, time.perf_counter() - t_start)
    print(md)
    out = Path(a.out) if a.out else (None if (a.quick or a.no_write) else REPO / "BENCHMARKS.md")
    if out is not None and not a.no_write:
        if out.is_file():  # keep the sections that did not run this time
            md = merge_markdown(out.read_text(), md, cpu_ran=bool(set(sections) - {"gpu"}))
        out.write_text(md)
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
