#!/usr/bin/env python
"""Reproducible performance table of twostream_lib: flow, loader, training, end to end (and GPU, optional).

    python benchmarks/run.py                        # everything on CPU (<= 15 min on 2 cores), writes BENCHMARKS.md
    python benchmarks/run.py --quick                # ~2 min smoke version (prints; writes only with --out)
    python benchmarks/run.py --sections flow,loader # a subset: flow, tvl1, loader, train, lrn, memfmt, e2e (gpu with --gpu)
    python benchmarks/run.py --gpu --sections train # + CUDA training throughput (skips with a message without CUDA)

Every figure is the median of >= 3 runs (end to end: one run, its stages are minutes long); figures compared
as ratios are measured interleaved in the same process so that the load of a shared machine hits both. All data
goes to a temporary folder; only BENCHMARKS.md and benchmarks/results.json (or --out and its .json) are written.
See BENCHMARKS.md for what each row means.

This file is the driver only: each section is measured and rendered by its own module (flow_bench, tvl1_bench,
loader_bench, train_bench, lrn_bench, memfmt_bench, e2e_bench, gpu_bench; bottleneck for section 6), all of them on
common.py (paths, machine, timing, tables, lab clips, caches, the report's head and merging); no module imports
this one.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import torch

if str(Path(__file__).resolve().parent) not in sys.path:  # benchmarks/ is not a package: its modules are siblings
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import bottleneck  # noqa: E402
import common  # noqa: E402
import e2e_bench  # noqa: E402
import flow_bench  # noqa: E402
import gpu_bench  # noqa: E402
import loader_bench  # noqa: E402
import lrn_bench  # noqa: E402
import memfmt_bench  # noqa: E402
import train_bench  # noqa: E402
import tvl1_bench  # noqa: E402
# the names other files use from run.py (tests/test_project.py): kept here
from common import REPO, make_mini_ucf, merge_markdown  # noqa: E402,F401

SECTIONS = ("flow", "tvl1", "loader", "train", "lrn", "memfmt", "e2e", "gpu")
#: every section's last results, merged run after run (a run of some sections replaces only those sections' entries);
#: BENCHMARKS.md itself is merged the same way by :func:`common.merge_markdown`
RESULTS = REPO / "benchmarks" / "results.json"


def render(results: dict, info: dict, quick: bool, elapsed: float, merged: dict | None = None) -> str:
    """The whole report: head and machine, then each section that ran (section 5 always: it says why it is
    empty), then the bottleneck of a full UCF-101 run, from this run's sections or else from ``merged`` (the
    last results of every section, :func:`merge_results`)."""
    parts = [common.render_head(info, quick, elapsed)]
    if "flow" in results:
        parts.append(flow_bench.render(results["flow"]))
    if "tvl1" in results:
        parts.append(tvl1_bench.render(results["tvl1"]))
    if "loader" in results:
        parts.append(loader_bench.render(results["loader"]))
    if "train" in results:
        parts.append(train_bench.render(results["train"], results.get("profile")))
    if "lrn" in results:
        parts.append(lrn_bench.render(results["lrn"]))
    if "memfmt" in results:
        parts.append(memfmt_bench.render(results["memfmt"]))
    if "e2e" in results:
        parts.append(e2e_bench.render(results["e2e"]))
    parts.append(gpu_bench.render(results.get("gpu")))
    parts.append(bottleneck.render({**(merged or {}), **results}))
    return "\n".join(p.rstrip() + "\n" for p in parts).rstrip() + "\n"


def merge_results(path: Path, results: dict, info: dict) -> dict:
    """``path`` (JSON) updated with this run's sections (``{section: result}``; ``machines``: ``{section: the
    machine and date it ran on}``); the sections that did not run keep their last results. Returns the merged
    dict."""
    merged = {}
    if path.is_file():
        try:
            merged = json.loads(path.read_text())
        except ValueError:
            common.log(f"{path} is not valid JSON: rewritten")
    for key, value in results.items():
        merged[key] = value
        merged.setdefault("machines", {})[key] = info
    path.write_text(json.dumps(merged, indent=1, default=str) + "\n")
    return merged


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
    info = common.machine_info()
    common.log(f"{info['cpu']}, {common.CORES} cores, load {info['load']}; sections {', '.join(sections)}"
        f"{' (quick)' if a.quick else ''}")
    t_start = time.perf_counter()
    results: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="twostream-bench-"))
    try:
        caches = None
        if {"loader", "train", "gpu"} & set(sections):
            common.log("rendering and preparing the loader caches")
            caches = common.make_caches(tmp, a.quick)
        if "flow" in sections:
            results["flow"] = flow_bench.bench_flow(tmp, a.quick, a.repeats)
        if "tvl1" in sections:
            results["tvl1"] = tvl1_bench.bench_section(a.quick, a.repeats)
        if "loader" in sections:
            results["loader"] = loader_bench.bench_section(tmp, a.quick, a.repeats, caches)
        if "train" in sections:
            results["train"] = train_bench.bench_train(tmp, a.quick, a.repeats, caches)
            if a.profile:
                results["profile"] = train_bench.profile_trainer(tmp, caches)
        if "lrn" in sections:
            results["lrn"] = lrn_bench.bench_lrn(a.quick, a.repeats)
        if "memfmt" in sections:
            results["memfmt"] = memfmt_bench.bench_memory_format(a.quick, a.repeats)
        if "e2e" in sections:
            scale, why = a.e2e_scale, ""
            if scale is None:
                left = a.budget_min * 60 - (time.perf_counter() - t_start)
                scale = "small" if (not a.quick and left >= e2e_bench.E2E_SMALL_MIN * 60) else "tiny"
                if scale == "tiny" and not a.quick:
                    why = (f"lab `small` takes ~{e2e_bench.E2E_SMALL_MIN} min here and only {left / 60:.1f} of the "
                           f"{a.budget_min:g} min budget were left, so this ran at `tiny` (48x64 frames)")
            iters = a.e2e_iters or ((10 if a.quick else 20) if scale == "tiny" else 60)
            frames, crops = (5, 1) if a.quick else (25, 10)
            results["e2e"] = e2e_bench.bench_e2e(tmp, scale, iters, frames, crops)
            results["e2e"]["why"] = why
        if "gpu" in sections:
            if a.gpu_device == "cuda" and not torch.cuda.is_available():
                msg = "CUDA is not available (torch.cuda.is_available() is False)"
                common.log(f"GPU section skipped: {msg}")
                results["gpu"] = {"skipped": msg}
            else:
                small = a.gpu_device != "cuda"  # dry run on CPU: tiny sizes
                results["gpu"] = gpu_bench.bench_gpu(tmp, a.quick or small, a.repeats, caches, a.gpu_device,
                                           batch=4 if small else 256, crop=224)
    finally:
        if a.keep:
            common.log(f"data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    out = Path(a.out) if a.out else (None if (a.quick or a.no_write) else REPO / "BENCHMARKS.md")
    write = out is not None and not a.no_write
    merged = results
    if write:  # every section's last results: the bottleneck (section 6) reads sections 1, 2 and 5 from them
        merged = merge_results(RESULTS if out == REPO / "BENCHMARKS.md" else out.with_suffix(".json"), results, info)
    md = render(results, info, a.quick, time.perf_counter() - t_start, merged)
    print(md)
    if write:
        if out.is_file():  # keep the sections that did not run this time
            md = merge_markdown(out.read_text(), md, cpu_ran=bool(set(sections) - {"gpu"}))
        out.write_text(md)
        common.log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

