#!/usr/bin/env python
"""Training-batch throughput: the CPU DataLoader path vs the device path (twostream_lib.device_loader).

    python benchmarks/loader_bench.py                       # builds a 256-short-side lab cache, CPU (+ CUDA if any)
    python benchmarks/loader_bench.py --cache DIR           # an existing prepared cache
    python benchmarks/loader_bench.py --streams temporal --devices cuda --cuda-batches 40 --workers 0,16

Rows: the CPU path (``TemporalDataset`` / ``SpatialDataset`` in a DataLoader with 0 and 2 workers, batches left
on the CPU) and :class:`~twostream_lib.device_loader.DeviceLoader` on CPU and on CUDA (timed between
``torch.cuda.synchronize()`` calls; batches are on the device). The first batches (worker / thread start, CUDA
and nvJPEG initialisation) are not timed. Also printed: how far each decoder is from OpenCV's on the cache's
flow JPEGs, and where the device path's time goes (seconds per batch in its read / decode / process stages,
which overlap when prefetching; on CUDA "process" is kernel-launch time).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "benchmarks"):
    if str(p) not in sys.path:  # run from a checkout without the package installed
        sys.path.insert(0, str(p))

import run as _run  # noqa: E402  (benchmarks/run.py: lab clips -> cache, the CPU loader's rate)
from twostream_lib.data import SpatialDataset, TemporalDataset, VideoCache  # noqa: E402
from twostream_lib.device_loader import DeviceLoader, decode_jpegs  # noqa: E402
from twostream_lib.prepare import prepare  # noqa: E402

CORES = os.cpu_count() or 1


def make_cache(tmp: Path, n_videos: int = 4, n_frames: int = 40, flow: str = "dis") -> Path:
    """benchmarks/run.py's `224` loader cache: lab `full` clips (240x320) prepared at short side 256 (256x341)."""
    root, _ = _run.make_mini_ucf(tmp / "loader-224", "full", n_videos, n_frames)
    cache = tmp / "loadercache-224"
    with _run.quiet():
        prepare("lab-ucf", root, cache, flow=flow, workers=CORES, short_side=256, progress=False)
    return cache


def _dataset(cache, stream: str, L: int, crop: int):
    vc = VideoCache(cache)
    items = [(v, i % 2) for i, v in enumerate(vc.video_ids)]
    if stream == "spatial":
        return SpatialDataset(vc, items, mode="train", crop_size=crop)
    return TemporalDataset(vc, items, mode="train", crop_size=crop, L=L)


def bench_loader(cache_dir, stream: str = "temporal", L: int = 10, crop: int = 224, batch: int = 256,
                 device: str = "cpu", n_batches: int = 4, loader: str = "device", workers: int = 0,
                 warmup: int = 1, prefetch: int = 2, decode_device: str | None = None,
                 decode_threads: int | None = None, cpu_decode_share: float = 0.0, seed: int = 0) -> dict:
    """Training samples/s from the cache at ``cache_dir`` (random videos with replacement, batches of ``batch``).

    ``loader="device"``: :class:`DeviceLoader` building batches on ``device`` (decoding on ``decode_device``,
    default ``device``; on CPU with ``decode_threads`` threads, default all cores; ``cpu_decode_share`` of the
    JPEGs by CPU threads beside nvJPEG); ``warmup`` batches untimed,
    then ``n_batches`` timed (CUDA synchronised). ``loader="dataloader"``: the CPU path, a DataLoader with
    ``workers`` persistent workers (benchmarks/run.py's ``loader_rate``: a first untimed epoch of
    ``n_batches``, then one timed)."""
    ds = _dataset(cache_dir, stream, L, crop)
    res = {"loader": loader, "stream": stream, "L": L if stream == "temporal" else None, "crop": crop,
           "batch": batch, "n_batches": n_batches, "device": device}
    if loader == "dataloader":
        rates = _run.loader_rate(ds, workers, batch, n_batches, repeats=1, seed=seed)
        return {**res, "workers": workers, "device": "cpu", "samples_s": float(np.median(rates))}
    if loader != "device":
        raise ValueError(f"loader must be 'device' or 'dataloader', got {loader!r}")
    dev = torch.device(device)
    if decode_threads is None:
        decode_threads = CORES
    order = np.random.default_rng(seed).integers(0, len(ds), batch * (warmup + n_batches)).tolist()
    dl = DeviceLoader(ds, order, batch, generator=torch.Generator().manual_seed(seed), device=dev,
                      decode_device=decode_device, prefetch=prefetch, decode_threads=decode_threads,
                      cpu_decode_share=cpu_decode_share)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    it = iter(dl)
    for _ in range(warmup):
        next(it)
    sync()
    st0 = dict(dl.stats)
    t = time.perf_counter()
    n = 0
    for x, y in it:
        n += len(y)
    sync()
    dt = time.perf_counter() - t
    st = {k: dl.stats[k] - st0[k] for k in dl.stats}
    per = max(st["batches"], 1)
    dl.close()
    return {**res, "decode_device": str(dl.decode_device), "prefetch": prefetch, "decode_threads": decode_threads,
            "cpu_decode_share": cpu_decode_share,
            "samples_s": n / dt, "images_s": st["images"] / dt,
            "stage_s_per_batch": {k: st[k] / per for k in ("read", "decode", "process")}}


def decoder_agreement(cache_dir, device: str, max_images: int = 2000) -> dict:
    """Max and mean |difference| in grey levels between :func:`decode_jpegs` on ``device`` and OpenCV, over (up to
    ``max_images``) flow JPEGs of the cache; 1 level = 2 * bound / 255 px of flow."""
    vc = VideoCache(cache_dir)
    blobs = []
    for vid in vc.video_ids:
        offs = vc._index(vid)["offsets"]
        for stream in ("flow_x", "flow_y"):
            data = (vc.root / "videos" / vid / f"{stream}.bin").read_bytes()
            o = offs[stream]
            blobs += [data[o[i]:o[i + 1]] for i in range(len(o) - 1)]
    blobs = blobs[:max_images]
    ours = decode_jpegs([torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs], True, device)
    worst, total, size, differ = 0, 0, 0, 0
    for b, o in zip(blobs, ours):
        ref = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE).astype(np.int16)
        d = np.abs(o[0].cpu().numpy().astype(np.int16) - ref)
        worst, total, size, differ = max(worst, int(d.max())), total + int(d.sum()), size + d.size, differ + int(
            np.count_nonzero(d))
    step = 2 * vc.bound / 255
    return {"device": device, "images": len(blobs), "max_levels": worst, "max_px": worst * step,
            "mean_levels": total / size, "differing_fraction": differ / size}


def _fmt(x: float) -> str:
    return _run.fmt(x)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=None, help="a prepared cache (default: build one at 256 short side)")
    ap.add_argument("--flow", default="dis", help="flow method of the cache built when --cache isn't given")
    ap.add_argument("--videos", type=int, default=4, help="videos of the cache built (default 4)")
    ap.add_argument("--frames", type=int, default=40, help="frames per video of the cache built (default 40)")
    ap.add_argument("--streams", default="temporal,spatial")
    ap.add_argument("--devices", default="auto", help="device path on: cpu,cuda (default: cpu, and cuda if any)")
    ap.add_argument("--workers", default="0,2", help="CPU DataLoader rows, by worker count ('' = none)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--n-batches", type=int, default=3, help="timed batches of the CPU rows (default 3)")
    ap.add_argument("--cuda-batches", type=int, default=20, help="timed batches of the CUDA rows (default 20)")
    ap.add_argument("--L", type=int, default=10)
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--prefetch", type=int, default=2)
    ap.add_argument("--cpu-shares", default="0,0.5",
                    help="CUDA rows: shares of the JPEGs decoded by CPU threads beside nvJPEG (default 0,0.5)")
    ap.add_argument("--no-cpu-decode-row", action="store_true",
                    help="CUDA: skip the row that decodes every JPEG on the CPU (all cores) and processes on the GPU")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = ap.parse_args(argv)
    cv2.setNumThreads(1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if a.devices == "auto" else \
        [d for d in a.devices.split(",") if d]
    workers = [int(w) for w in a.workers.split(",") if w.strip()]
    tmp = None
    try:
        cache = a.cache
        if cache is None:
            tmp = Path(tempfile.mkdtemp(prefix="loader-bench-"))
            _run.log(f"building a cache: {a.videos} lab `full` videos x {a.frames} frames, short side 256, {a.flow}")
            cache = make_cache(tmp, a.videos, a.frames, a.flow)
        vc = VideoCache(cache)
        h, w = vc.frame_size(vc.video_ids[0])
        rows, results = [], {"cache": str(cache), "frame": [h, w], "machine": _run.machine_info(), "runs": [],
                             "decoders": []}
        for stream in [s for s in a.streams.split(",") if s]:
            what = f"{stream} {a.crop}" + (f" (L={a.L})" if stream == "temporal" else "")
            for wk in workers:
                nb = a.n_batches
                threads = torch.get_num_threads()
                torch.set_num_threads(1)  # as in benchmarks/run.py: 0 workers = one core
                try:
                    r = bench_loader(cache, stream, a.L, a.crop, a.batch, "cpu", nb, loader="dataloader", workers=wk)
                finally:
                    torch.set_num_threads(threads)
                results["runs"].append(r)
                rows.append([what, f"CPU path: DataLoader, {wk} workers", "OpenCV (libjpeg-turbo)", f"{max(wk, 1)}",
                             _fmt(r["samples_s"]), "–"])
                _run.log(f"{what}: DataLoader {wk} workers {r['samples_s']:.0f} samples/s")
            for dev in devices:
                if dev == "cpu":  # one core's work, as the DataLoader's 0-worker row (and its reader thread)
                    variants = [("libjpeg-turbo", "1 (+ a reader thread)", dict(decode_threads=1))]
                else:
                    variants = [("nvJPEG" if share == 0 else f"nvJPEG + {100 * share:.0f}% on CPU ({CORES} threads)",
                                 "2 threads + GPU" if share == 0 else f"{CORES} + GPU",
                                 dict(cpu_decode_share=share, decode_threads=CORES))
                                for share in [float(x) for x in a.cpu_shares.split(",") if x.strip()]]
                    if not a.no_cpu_decode_row:
                        variants.append((f"libjpeg-turbo on CPU ({CORES} threads)", f"{CORES} + GPU",
                                         dict(decode_device="cpu", decode_threads=CORES)))
                for decoder, cores, kw in variants:
                    nb = a.cuda_batches if dev == "cuda" else a.n_batches
                    threads = torch.get_num_threads()
                    if dev == "cpu":
                        torch.set_num_threads(1)
                    try:
                        r = bench_loader(cache, stream, a.L, a.crop, a.batch, dev, nb, prefetch=a.prefetch, **kw)
                    finally:
                        torch.set_num_threads(threads)
                    results["runs"].append(r)
                    s = r["stage_s_per_batch"]
                    rows.append([what, f"device path on {dev}", decoder, cores, _fmt(r["samples_s"]),
                                 f"{1e3 * s['read']:.0f} / {1e3 * s['decode']:.0f} / {1e3 * s['process']:.0f}"])
                    _run.log(f"{what}: device path on {dev}, {decoder}: {r['samples_s']:.0f} samples/s, "
                             f"stages {s}")
        for dev in devices:
            results["decoders"].append(decoder_agreement(cache, dev))
        print(f"\nCache: {cache} ({len(vc.video_ids)} videos, {h}x{w} frames, flow {vc.settings['flow']}); "
              f"batch {a.batch}; {CORES} cores; load {os.getloadavg()[0]:.1f}; torch {torch.__version__}"
              + (f"; GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "") + "\n")
        print(_run.table(["input", "loader", "decoder", "cores", "samples/s",
                          "device path ms/batch: read / decode / process"], rows))
        print()
        print(_run.table(["decoder", "flow JPEGs", "max abs diff vs OpenCV (levels)", "max abs diff (px)",
                          "mean abs diff (levels)", "pixels differing"],
                         [[("nvJPEG" if d["device"] == "cuda" else "torchvision libjpeg-turbo") + f" ({d['device']})",
                           d["images"], d["max_levels"], f"{d['max_px']:.3f}", f"{d['mean_levels']:.4f}",
                           f"{100 * d['differing_fraction']:.2f}%"] for d in results["decoders"]]))
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1, default=str))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
