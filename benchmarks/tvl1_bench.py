#!/usr/bin/env python
"""Throughput of the batched PyTorch TV-L1 (:mod:`twostream_lib.tvl1`) against OpenCV's DualTVL1OpticalFlow.

    python benchmarks/tvl1_bench.py                          # CPU, 2 threads, 96x128 and 240x320, batches 1 and 16
    python benchmarks/tvl1_bench.py --device cuda            # GPU: batches 1, 16, 64, 256, with peak memory
    python benchmarks/tvl1_bench.py --device cuda --compile  # the same with the torch.compile'd iteration

Frame pairs are consecutive frames of lab clips (:mod:`twostream_lib.lab`, both datasets, several classes; the
``small`` scale for 96x128, ``full`` for 240x320, other sizes resized from the next larger scale); a batch larger
than the pairs rendered repeats them. Parameters: :data:`twostream_lib.flow.TVL1_DEFAULTS` for both. Each row
times one ``tvl1_solve`` call on the whole batch (after an untimed warm-up call on CUDA or when compiling,
which includes any ``torch.compile`` time, reported separately) and, on CPU, ``FlowEstimator("tvl1")`` on the
same pairs one at a time with the same number of threads, interleaved repeat by repeat so that the load of a
shared machine hits both; figures are medians over ``repeats``. On CUDA the timings synchronise the device
before and after each call and the peak memory is ``torch.cuda.max_memory_allocated`` during the timed calls;
OpenCV is not run (its CPU throughput does not depend on the batch; see a CPU row).
"""
from __future__ import annotations

import os

if __name__ == "__main__":
    # torch's OpenMP threads busy-wait between operations by default; on a machine shared with other jobs that
    # made 2 threads ~10x slower than 1 (measured). It must be set before torch is imported, so only the command
    # line gets it (callers of bench_tvl1 set it themselves); an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

if str(Path(__file__).resolve().parent) not in sys.path:  # benchmarks/ is not a package: its modules are siblings
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt, table  # noqa: E402  (also puts the repository on sys.path)

from twostream_lib import lab as _lab  # noqa: E402
from twostream_lib.flow import FlowEstimator, to_gray  # noqa: E402
from twostream_lib.tvl1 import CHECK_EVERY, tvl1_solve  # noqa: E402

#: The largest batch run on CPU unless asked otherwise (a 240x320 batch of 16 already takes ~a minute).
MAX_CPU_BATCH = 16

_CLIPS = (("lab-ucf", 0), ("lab-hmdb", 2), ("lab-ucf", 9), ("lab-hmdb", 7))  # (dataset, class index)


def lab_pairs(h: int, w: int, n: int, frames_per_clip: int = 17) -> tuple[np.ndarray, np.ndarray]:
    """``n`` grey frame pairs ``(n, h, w)`` uint8 (prev, nxt) from lab clips, repeated if more are asked for
    than ``len(_CLIPS) × (frames_per_clip − 1)``."""
    scale = next((s for s, c in _lab.SCALES.items() if c["height"] >= h and c["width"] >= w), "full")
    prev, nxt = [], []
    for k, (dataset, ci) in enumerate(_CLIPS):
        classes = _lab.LAB_UCF_CLASSES if dataset == "lab-ucf" else _lab.LAB_HMDB_CLASSES
        frames, _ = _lab.render_clip(_lab.clip_spec(dataset, classes[ci % len(classes)], k, scale=scale,
                                                    n_frames=min(frames_per_clip, n + 1)))
        g = np.stack([to_gray(f) for f in frames])
        if g.shape[1:] != (h, w):
            g = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in g])
        prev.extend(g[:-1])
        nxt.extend(g[1:])
        if len(prev) >= n:
            break
    reps = -(-n // len(prev))
    return np.stack((prev * reps)[:n]), np.stack((nxt * reps)[:n])


def photo_pair(h: int, w: int, camera: tuple[float, float], patch: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """A frame pair of real image content with known motion (no video ships offline; matplotlib's sample photo
    ``grace_hopper.jpg`` does): a camera translating by ``camera`` px per frame (sub-pixel: frames are rendered at
    4x and area-downsampled) and a textured patch (another part of the photo, flipped) moving by ``patch`` px.

    Returns two ``(h, w)`` uint8 frames and the ``(h, w, 2)`` ground-truth forward flow: ``-camera`` on the
    background, ``patch`` on the patch (``h, w <= 256``).
    """
    from matplotlib import cbook

    photo = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), cv2.IMREAD_GRAYSCALE)
    if photo is None or photo.shape != (600, 512):
        raise RuntimeError("matplotlib's sample photo grace_hopper.jpg is missing or has changed")
    scene = cv2.resize(photo, (1024, 1200), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    up, ph, pw = 4, h // 3, w // 4
    src = cv2.resize(scene[560:560 + ph * up, 380:380 + pw * up], (pw, ph), interpolation=cv2.INTER_AREA)[::-1, ::-1]
    frames = []
    for t in (0, 1):
        x0, y0 = int(300 + t * camera[0] * up), int(200 + t * camera[1] * up)  # the window moves, content moves back
        f = cv2.resize(scene[y0:y0 + h * up, x0:x0 + w * up], (w, h), interpolation=cv2.INTER_AREA)
        px, py = w // 3 + t * patch[0], h // 3 + t * patch[1]
        f[py:py + ph, px:px + pw] = src
        frames.append(np.clip(np.rint(f), 0, 255).astype(np.uint8))
    gt = np.empty((h, w, 2), np.float32)
    gt[...] = (-camera[0], -camera[1])
    gt[h // 3:h // 3 + ph, w // 3:w // 3 + pw] = patch
    return frames[0], frames[1], gt


def accuracy_tvl1(device: str = "cpu", lab_pairs_n: int = 32, size: tuple[int, int] = (96, 128),
                  **params: Any) -> list[dict]:
    """Agreement with OpenCV and accuracy against ground truth, on lab clips and on photo pairs.

    Per source: ``epe_vs_opencv`` (mean endpoint difference to ``FlowEstimator("tvl1", **params)``, px) and its
    worst pair, ``uint8_within_1`` / ``uint8_equal`` (fractions of ``quantize_flow`` values within ±1 of / equal
    to OpenCV's), ``epe_gt_ours`` / ``epe_gt_opencv`` (endpoint error against the exact flow, px).
    """
    from twostream_lib.flow import endpoint_error, quantize_flow

    sources = {}
    h, w = size
    scale = next((s for s, c in _lab.SCALES.items() if (c["height"], c["width"]) == (h, w)), None)
    if scale is None:
        known = ", ".join(f"{c['height']}x{c['width']}" for c in _lab.SCALES.values())
        raise ValueError(f"size {size} is not a lab scale ({known})")
    prev, nxt, gt = [], [], []
    per_clip = max(1, lab_pairs_n // len(_CLIPS))
    for k, (dataset, ci) in enumerate(_CLIPS):
        classes = _lab.LAB_UCF_CLASSES if dataset == "lab-ucf" else _lab.LAB_HMDB_CLASSES
        frames, flow = _lab.render_clip(_lab.clip_spec(dataset, classes[ci % len(classes)], k, scale=scale,
                                                       n_frames=per_clip + 1))
        g = np.stack([to_gray(f) for f in frames])
        prev.extend(g[:-1]), nxt.extend(g[1:]), gt.extend(flow)
    sources[f"lab clips {h}x{w}"] = (np.stack(prev), np.stack(nxt), np.stack(gt))
    motions = [((0.75, -0.5), (2, 1)), ((-1.25, 0.25), (-1, 2)), ((1.5, 1.0), (-3, 0)), ((-0.25, -1.5), (1, -2))]
    photo = [photo_pair(h, w, cam, patch) for cam, patch in motions]
    sources[f"photo {h}x{w}"] = tuple(np.stack(x) for x in zip(*photo))

    rows = []
    est = FlowEstimator("tvl1", **params)
    for name, (a, b, g) in sources.items():
        ref = np.stack([est(x, y) for x, y in zip(a, b)])
        ours = tvl1_solve(torch.from_numpy(a).to(device), torch.from_numpy(b).to(device), **params).flow.cpu().numpy()
        per_pair = np.sqrt(((ours - ref) ** 2).sum(-1)).mean(axis=(1, 2))
        dq = np.abs(quantize_flow(ours).astype(int) - quantize_flow(ref).astype(int))
        rows.append(dict(source=name, pairs=len(a), epe_vs_opencv=float(per_pair.mean()),
                         epe_vs_opencv_worst_pair=float(per_pair.max()), uint8_within_1=float((dq <= 1).mean()),
                         uint8_equal=float((dq == 0).mean()), epe_gt_ours=endpoint_error(ours, g),
                         epe_gt_opencv=endpoint_error(ref, g)))
        print(f"[tvl1_bench] {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_mib(device: torch.device) -> float | None:
    """Peak memory allocated by torch on ``device`` since :func:`_reset_peak_memory` (None off CUDA)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _timed(fn: Any, device: torch.device) -> tuple[float, Any]:
    """Wall seconds of ``fn()`` with the device drained before and after (CUDA kernels run asynchronously)."""
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def bench_tvl1(
    sizes: tuple[tuple[int, int], ...] = ((96, 128), (240, 320)),
    batches: tuple[int, ...] = (1, 16, 64, 256),
    device: str = "cpu",
    threads: int = 2,
    repeats: int = 3,
    compile: bool | None = None,
    check_every: int | None = None,
    max_cpu_batch: int = MAX_CPU_BATCH,
    opencv: bool = True,
) -> list[dict]:
    """Pairs per second of :func:`twostream_lib.tvl1.tvl1_solve` (and, on CPU, of OpenCV) per size and batch.

    Args:
        sizes: ``(h, w)`` frame sizes.
        batches: batch sizes; on CPU those above ``max_cpu_batch`` are skipped (with a note on stderr).
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:1"``…).
        threads: torch intra-op threads and OpenCV threads on CPU (both restored afterwards); on CUDA only
            torch's host threads.
        repeats: timed calls per row; the figures are medians.
        compile, check_every: passed to ``tvl1_solve`` (``None``: its defaults for the device).
        opencv: time OpenCV as well (CPU rows only).

    Returns:
        One dict per row: ``size`` ("HxW"), ``batch``, ``device``, ``threads``, ``compile``, ``check_every``,
        ``pairs_per_s`` (ours), ``opencv_pairs_per_s`` (None on CUDA or with ``opencv=False``), ``speedup``,
        ``warmup_s`` (the untimed first call, with any compiling; None on CPU without compile),
        ``iters_per_warp`` (mean over samples, levels and warps of the iterations each sample ran: what OpenCV
        runs), ``steps_per_warp`` (mean iterations the batch loop ran), ``peak_mem_mib`` (CUDA: peak allocated
        during the timed calls; None on CPU).
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' asked for, but torch.cuda.is_available() is False")
    compile_eff = (dev.type == "cuda") if compile is None else bool(compile)
    check_eff = CHECK_EVERY.get(dev.type, 5) if check_every is None else int(check_every)
    old_threads, old_cv = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    rows = []
    try:
        for h, w in sizes:
            for n in batches:
                if dev.type == "cpu" and n > max_cpu_batch:
                    print(f"[tvl1_bench] skip {h}x{w} batch {n} on CPU (> max_cpu_batch={max_cpu_batch})",
                          file=sys.stderr)
                    continue
                prev_np, nxt_np = lab_pairs(h, w, n)
                prev, nxt = torch.from_numpy(prev_np).to(dev), torch.from_numpy(nxt_np).to(dev)

                def ours() -> Any:
                    return tvl1_solve(prev, nxt, compile=compile, check_every=check_every)

                warmup_s = _timed(ours, dev)[0] if compile_eff or dev.type != "cpu" else None
                est = FlowEstimator("tvl1")
                t_ours, t_cv, res = [], [], None
                _reset_peak_memory(dev)
                for _ in range(repeats):
                    dt, res = _timed(ours, dev)
                    t_ours.append(dt)
                    if opencv and dev.type == "cpu":
                        t = time.perf_counter()
                        for a, b in zip(prev_np, nxt_np):
                            est(a, b)
                        t_cv.append(time.perf_counter() - t)
                ours_pps = n / statistics.median(t_ours)
                cv_pps = n / statistics.median(t_cv) if t_cv else None
                rows.append(dict(
                    size=f"{h}x{w}", batch=n, device=str(dev), threads=threads, compile=compile_eff,
                    check_every=check_eff, pairs_per_s=ours_pps, opencv_pairs_per_s=cv_pps,
                    speedup=ours_pps / cv_pps if cv_pps else None, warmup_s=warmup_s,
                    iters_per_warp=float(res.iterations.float().mean()),
                    steps_per_warp=float(np.mean([s for level in res.steps for s in level])),
                    peak_mem_mib=_peak_memory_mib(dev),
                ))
                print(f"[tvl1_bench] {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(old_threads)
        cv2.setNumThreads(old_cv)
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows as a Markdown table."""

    def f(x: Any, nd: int = 2) -> str:
        return "–" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)

    head = ["size", "batch", "device", "threads", "compile", "check every", "pairs/s ours", "pairs/s OpenCV",
            "ours/OpenCV", "iters/warp (samples)", "steps/warp (batch loop)", "warm-up s", "peak MiB"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append("| " + " | ".join([
            r["size"], str(r["batch"]), r["device"], str(r["threads"]), str(r["compile"]), str(r["check_every"]),
            f(r["pairs_per_s"]), f(r["opencv_pairs_per_s"]), f(r["speedup"]), f(r["iters_per_warp"], 1),
            f(r["steps_per_warp"], 1), f(r["warmup_s"], 1), f(r["peak_mem_mib"], 0),
        ]) + " |")
    return "\n".join(out)


def accuracy_markdown(rows: list[dict]) -> str:
    head = ["source", "pairs", "EPE to OpenCV (px)", "worst pair", "uint8 within ±1", "uint8 equal",
            "EPE to GT, ours", "EPE to GT, OpenCV"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        out.append(f"| {r['source']} | {r['pairs']} | {r['epe_vs_opencv']:.4f} | {r['epe_vs_opencv_worst_pair']:.4f} "
                   f"| {100 * r['uint8_within_1']:.3f} % | {100 * r['uint8_equal']:.2f} % | {r['epe_gt_ours']:.4f} "
                   f"| {r['epe_gt_opencv']:.4f} |")
    return "\n".join(out)


# ============================================================================================ section 1b of BENCHMARKS.md
def bench_section(quick: bool, repeats: int) -> dict:
    """Section 1b of BENCHMARKS.md: TV-L1 in PyTorch (``tvl1-torch``) beside OpenCV's TV-L1 on the same 2 CPU threads, and their agreement."""
    sizes = ((96, 128),) if quick else ((96, 128), (240, 320))
    rows = bench_tvl1(sizes=sizes, batches=(1, 16), device="cpu", threads=2, repeats=repeats)
    return {"rows": rows, "accuracy": accuracy_tvl1(device="cpu", lab_pairs_n=8 if quick else 32)}


def render(tv: dict) -> str:
    """Section 1b as markdown, from :func:`bench_section`'s result."""
    L: list[str] = []
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
    return "\n".join(L).rstrip() + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="96x128,240x320", help="comma-separated HxW")
    ap.add_argument("--batches", default=None,
                    help=f"comma-separated; default 1,16,64,256 (on CPU those > {MAX_CPU_BATCH} are skipped)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the iteration (default: on CUDA only)")
    ap.add_argument("--check-every", type=int, default=None)
    ap.add_argument("--max-cpu-batch", type=int, default=MAX_CPU_BATCH)
    ap.add_argument("--no-opencv", action="store_true", help="do not time OpenCV on CPU")
    ap.add_argument("--accuracy", action="store_true",
                    help="instead of timing: agreement with OpenCV and error against ground truth (96x128)")
    a = ap.parse_args(argv)
    if a.accuracy:
        torch.set_num_threads(a.threads)
        rows = accuracy_tvl1(device=a.device)
        print("TV-L1 agreement with OpenCV and accuracy (parameters: flow.TVL1_DEFAULTS)\n")
        print(accuracy_markdown(rows))
        return rows
    sizes = tuple(tuple(int(v) for v in s.lower().split("x")) for s in a.sizes.split(","))
    batches = tuple(int(b) for b in a.batches.split(",")) if a.batches else (1, 16, 64, 256)
    rows = bench_tvl1(sizes=sizes, batches=batches, device=a.device, threads=a.threads,  # type: ignore[arg-type]
                      repeats=a.repeats,
                      compile=a.compile, check_every=a.check_every, max_cpu_batch=a.max_cpu_batch,
                      opencv=not a.no_opencv)
    dev = torch.device(a.device)
    info = (torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{a.threads} CPU threads") + \
        f", torch {torch.__version__}, OpenCV {cv2.__version__}"
    print(f"TV-L1 throughput ({info}; parameters: flow.TVL1_DEFAULTS)\n")
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
