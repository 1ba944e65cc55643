"""Section 1 of BENCHMARKS.md: optical flow pairs/s, the bare OpenCV call vs ``prepare()``, and prepare's
scaling with worker processes.
"""
from __future__ import annotations

from pathlib import Path
import shutil
import sys
from typing import Callable

import cv2
import numpy as np

if str(Path(__file__).resolve().parent) not in sys.path:  # benchmarks/ is not a package: its modules are siblings
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CORES, log, make_mini_ucf, med, quiet, table, fmt, timed  # noqa: E402
from twostream_lib.flow import DIS_PRESETS, FARNEBACK_DEFAULTS, TVL1_DEFAULTS, to_gray  # noqa: E402
from twostream_lib.prepare import prepare  # noqa: E402
from twostream_lib.video import read_video  # noqa: E402


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
            rows.append({"size": label, "method": method, "pairs": n, "clip": vids[0].split("/")[-1], "bare_pairs_s": b, "ours_pairs_s": o,
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


def render(fl: dict) -> str:
    """Section 1 as markdown, from :func:`bench_flow`'s result."""
    clips = sorted({r["clip"] for r in fl["rows"] if r.get("clip")})
    L: list[str] = []
    L += ["## 1. Optical flow (pairs/s, one core)", "",
          "Frames are lab clips rendered at `small` (96x128) and `full` (240x320, UCF-101's size), written "
          "as XVID `.avi` and decoded back, so bare and ours see the same frames. *Bare* = the OpenCV call "
          "alone on grey frames (library defaults: TV-L1 3 warps/20 inner iterations, Farneback 3 levels, "
          "DIS `medium`); *ours* = `prepare()` on a one-video dataset: decode + grey + flow + ±20 px "
          "quantisation + JPEG encode (frames and flow x/y) + atomic write + manifest. OpenCV single-"
          "threaded (as in `prepare`'s workers). Frames kept at their size (`short_side=None`). Each row is one clip "
      f"({', '.join(f'`{c}`' for c in clips) or 'not recorded'}), "
      "timed after a warm-up call. TV-L1's time depends on the content, not only on the frame size: OpenCV stops "
      "a warp's inner iterations once the flow changes by less than `epsilon`, so a clip that converges sooner "
      "runs faster (chapter 7 times TV-L1 on two lab clips, raw and codec-decoded, with the iterations each "
      "ran).", "",
          table(["frame size", "method", "pairs/run", "bare OpenCV pairs/s", "ours (prepare) pairs/s",
                 "ours / bare time"],
                [[r["size"], r["method"], r["pairs"], fmt(r["bare_pairs_s"]), fmt(r["ours_pairs_s"]),
                  f"{r['ratio']:.2f}x"] for r in fl["rows"]]), "",
          f"`prepare` scaling with worker processes ({fl['scaling_method']}, {fl['scaling_videos']} lab "
          f"`small` videos of {fl['scaling_frames']} frames):", "",
          table(["workers", "videos/s", "pairs/s", "speed-up vs 1"],
                [[s["workers"], fmt(s["videos_s"]), fmt(s["pairs_s"]), f"{s['speedup']:.2f}x"]
                 for s in fl["scaling"]]), ""]
    return "\n".join(L).rstrip() + "\n"
