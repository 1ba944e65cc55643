"""Section 3c of BENCHMARKS.md: the lab and paper nets in NCHW vs ``channels_last`` on CPU.
"""
from __future__ import annotations

from pathlib import Path
import sys

import torch
import torch.nn.functional as F

if str(Path(__file__).resolve().parent) not in sys.path:  # benchmarks/ is not a package: its modules are siblings
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, log, med, table, timed  # noqa: E402


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


def render(mf: dict) -> str:
    """Section 3c as markdown, from :func:`bench_memory_format`'s result."""
    L: list[str] = []
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
    return "\n".join(L).rstrip() + "\n"
