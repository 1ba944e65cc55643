"""Section 3b of BENCHMARKS.md: torch's ``nn.LocalResponseNorm`` vs the nets' ``CrossChannelLRN`` on CPU.
"""
from __future__ import annotations

from pathlib import Path
import sys

import torch
import torch.nn.functional as F

if str(Path(__file__).resolve().parent) not in sys.path:  # benchmarks/ is not a package: its modules are siblings
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, log, med, table, timed  # noqa: E402


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


def render(ln: dict) -> str:
    """Section 3b as markdown, from :func:`bench_lrn`'s result."""
    L: list[str] = []
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
    return "\n".join(L).rstrip() + "\n"
