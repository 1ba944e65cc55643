"""Section 6 of BENCHMARKS.md: the bottleneck of a full UCF-101 run, from sections 1, 2 (and 5).
"""
from __future__ import annotations

from pathlib import Path
import sys

if str(Path(__file__).resolve().parent) not in sys.path:  # benchmarks/ is not a package: its modules are siblings
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (PAPER_BATCH, PAPER_ITERS, PAPER_SECONDS, PAPER_SPEEDUP, UCF_FRAMES, UCF_VIDEOS,  # noqa: E402
                    fmt)


def render(results: dict) -> str:
    """Section 6 as markdown, from the ``flow``, ``loader`` (and ``gpu``) results."""
    L = ["## 6. Bottleneck of a full UCF-101 run", ""]
    fl, lo = results.get("flow"), results.get("loader")
    if not fl or not lo:
        return "\n".join(L + ["(needs the `flow` and `loader` sections.)", ""])
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
    # one process does all the work with 0 workers: one core (keys are strings in results.json)
    per_core_t = tl["rates"].get(0, tl["rates"].get("0"))
    per_core_s = sp["rates"].get(0, sp["rates"].get("0"))
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
        f"**Flow extraction.** UCF-101 has {UCF_VIDEOS:,} videos x ~{UCF_FRAMES} frames ≈ "
        f"{pairs / 1e6:.2f}M frame pairs. Our TV-L1 pipeline (`prepare`, 320x240, section 1) runs at "
        f"{fmt(rate)} pairs/s per core on {row.get('clip', 'one lab clip')} (TV-L1's rate depends on the content: "
        f"see section 1), so one core needs {pairs:,} / {fmt(rate)} = **{fmt(hours1)} h** "
        f"(≈ {fmt(hours1 / 24)} days). `prepare`'s worker processes share nothing but the disk, so N free cores "
        f"should take ≈ {fmt(hours1)} / N h (measured here with {max(sc)} workers: "
        f"{sc[max(sc)]['speedup']:.2f}x, {100 * eff:.0f}% efficiency — low when other jobs hold the cores): "
        f"{fmt(hours1 / 16)} h on 16 cores, {fmt(hours1 / 64)} h on 64. At 256 short side (the cache's real "
        f"size, 341x256 = 1.14x the pixels) add ~14%. DIS would take {fmt(pairs / dis['ours_pairs_s'] / 3600)} "
        f"core-hours instead; the paper's GPU Brox flow took 0.06 s a pair = {fmt(pairs * 0.06 / 3600)} GPU-hours.",
        "",
        "**Loader vs GPU.** The paper's temporal net: 80,000 iterations x 256 samples in ~1 day on 4 Titans "
        f"= 80,000 x 256 / 86,400 s = **{fmt(paper_rate)} samples/s** (4 GPUs; ≈ {fmt(paper_rate / PAPER_SPEEDUP)} "
        f"samples/s for one Titan, as 4 GPUs gave a 3.2x speed-up). How much faster a current GPU trains is not "
        f"measured here (run the GPU section). Our loader makes "
        f"{fmt(per_core_t)} temporal samples/s (L=10, 224 crops of 256x341 flow) and {fmt(per_core_s)} spatial "
        f"samples/s per core (0 workers = one core, section 2). So even the paper's 2014 rate needs "
        f"{fmt(paper_rate)} / {fmt(per_core_t)} ≈ **{need_t:.0f} cores** of temporal loading, and a GPU that "
        f"trained 10x faster (a round example, not a measurement) ≈ {10 * need_t:.0f} cores.",
        "",
    ] + gpu_line + [
        "**Verdict.** Flow extraction is the one-off bottleneck (days of CPU on a workstation, hours on a "
        "large node); after it, the temporal loader (20 JPEG decodes per sample) is the steady-state "
        "bottleneck of training on a GPU: budget CPU cores for the DataLoader (`workers=`) in proportion to "
        "the GPU's samples/s, or decode on the GPU (e.g. nvJPEG / DALI) if the cores aren't there.", ""]
    return "\n".join(L).rstrip() + "\n"
