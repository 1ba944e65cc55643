"""Section 5 of BENCHMARKS.md: CNN-M-2048 training samples/s on a CUDA GPU (fp32, bf16 AMP, channels_last,
torch.compile), TV-L1 in PyTorch and the device-side loader on it, and the loader's ceiling with all cores.
"""
from __future__ import annotations

from pathlib import Path
import sys
import time

import torch

if str(Path(__file__).resolve().parent) not in sys.path:  # benchmarks/ is not a package: its modules are siblings
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CORES, dataset as _dataset, fmt, loader_rate, log, med, table  # noqa: E402
from loader_bench import bench_device_loader  # noqa: E402


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


def render(g: dict | None) -> str:
    """Section 5 as markdown, from :func:`bench_gpu`'s result (``None``: not run)."""
    L: list[str] = []
    L += ["## 5. GPU", ""]
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
    return "\n".join(L).rstrip() + "\n"
