#!/usr/bin/env python
"""Training-batch throughput: the CPU DataLoader path vs the device path (twostream_lib.device_loader); and section 2
of BENCHMARKS.md (``bench_section``, ``render``): the CPU loader vs a per-file layout, and the device loader on CPU.

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

if str(Path(__file__).resolve().parent) not in sys.path:  # benchmarks/ is not a package: its modules are siblings
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CORES, dataset, fmt, loader_rate, log, machine_info, make_mini_ucf, med, quiet, table  # noqa: E402
from twostream_lib.data import SpatialDataset, TemporalDataset, VideoCache  # noqa: E402
from twostream_lib.device_loader import DeviceLoader, decode_jpegs  # noqa: E402
from twostream_lib.prepare import prepare  # noqa: E402

def make_cache(tmp: Path, n_videos: int = 4, n_frames: int = 40, flow: str = "dis") -> Path:
    """section 2's `224` loader cache (common.make_caches): lab `full` clips (240x320) prepared at short side 256 (256x341)."""
    root, _ = make_mini_ucf(tmp / "loader-224", "full", n_videos, n_frames)
    cache = tmp / "loadercache-224"
    with quiet():
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
    ``workers`` persistent workers (common.loader_rate: a first untimed epoch of
    ``n_batches``, then one timed)."""
    ds = _dataset(cache_dir, stream, L, crop)
    res = {"loader": loader, "stream": stream, "L": L if stream == "temporal" else None, "crop": crop,
           "batch": batch, "n_batches": n_batches, "device": device}
    if loader == "dataloader":
        rates = loader_rate(ds, workers, batch, n_batches, repeats=1, seed=seed)
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


# ============================================================================================ section 2 of BENCHMARKS.md
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


def bench_section(tmp: Path, quick: bool, repeats: int, caches: dict) -> dict:
    """Section 2 of BENCHMARKS.md: the CPU loader (DataLoader, 0/1/2/all workers) and the device-side loader
    on the CPU."""
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
            ds = dataset(stream, caches[key], crop)
            h, w = ds.cache.frame_size(ds.video_ids[0])
            row = {"input": f"{stream} {crop}" + (" (L=10)" if stream == "temporal" else ""),
                   "frame": f"{h}x{w}", "key": key, "stream": stream, "files": nfiles, "rates": {}}
            naive = dataset(stream, files, crop)
            kept = dataset(stream, VideoCache(caches[key], memory_mb=8192), crop)  # streams kept decoded
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


def bench_device_loader(caches: dict, device: str, batches: int, cuda_rows: bool) -> list[dict]:
    """The device-side loader (``loader: device``) at 224 from the 256-short-side cache, temporal and spatial."""
    rows = []
    for stream in ("temporal", "spatial"):
        rows.append(bench_loader(caches["224"], stream=stream, device=device, n_batches=batches,
                                              batch=256 if cuda_rows else 64))
        if cuda_rows:  # nvJPEG with part of each batch decoded by the CPU cores beside it
            rows.append(bench_loader(caches["224"], stream=stream, device=device, n_batches=batches,
                                                  cpu_decode_share=0.5))
        log(f"device loader {stream} on {device}: {rows[-1]['samples_s']:.0f} samples/s")
    return rows


def render(lo: dict) -> str:
    """Section 2 as markdown, from :func:`bench_section`'s result."""
    L: list[str] = []
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
    return "\n".join(L).rstrip() + "\n"


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
            log(f"building a cache: {a.videos} lab `full` videos x {a.frames} frames, short side 256, {a.flow}")
            cache = make_cache(tmp, a.videos, a.frames, a.flow)
        vc = VideoCache(cache)
        h, w = vc.frame_size(vc.video_ids[0])
        rows, results = [], {"cache": str(cache), "frame": [h, w], "machine": machine_info(), "runs": [],
                             "decoders": []}
        for stream in [s for s in a.streams.split(",") if s]:
            what = f"{stream} {a.crop}" + (f" (L={a.L})" if stream == "temporal" else "")
            for wk in workers:
                nb = a.n_batches
                threads = torch.get_num_threads()
                torch.set_num_threads(1)  # as in section 2: 0 workers = one core
                try:
                    r = bench_loader(cache, stream, a.L, a.crop, a.batch, "cpu", nb, loader="dataloader", workers=wk)
                finally:
                    torch.set_num_threads(threads)
                results["runs"].append(r)
                rows.append([what, f"CPU path: DataLoader, {wk} workers", "OpenCV (libjpeg-turbo)", f"{max(wk, 1)}",
                             fmt(r["samples_s"]), "–"])
                log(f"{what}: DataLoader {wk} workers {r['samples_s']:.0f} samples/s")
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
                    rows.append([what, f"device path on {dev}", decoder, cores, fmt(r["samples_s"]),
                                 f"{1e3 * s['read']:.0f} / {1e3 * s['decode']:.0f} / {1e3 * s['process']:.0f}"])
                    log(f"{what}: device path on {dev}, {decoder}: {r['samples_s']:.0f} samples/s, "
                             f"stages {s}")
        for dev in devices:
            results["decoders"].append(decoder_agreement(cache, dev))
        print(f"\nCache: {cache} ({len(vc.video_ids)} videos, {h}x{w} frames, flow {vc.settings['flow']}); "
              f"batch {a.batch}; {CORES} cores; load {os.getloadavg()[0]:.1f}; torch {torch.__version__}"
              + (f"; GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "") + "\n")
        print(table(["input", "loader", "decoder", "cores", "samples/s",
                          "device path ms/batch: read / decode / process"], rows))
        print()
        print(table(["decoder", "flow JPEGs", "max abs diff vs OpenCV (levels)", "max abs diff (px)",
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
