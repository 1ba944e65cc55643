"""Section 3 of BENCHMARKS.md: one CNN-M-2048 SGD step on CPU, bare vs the trainer's ``train_step`` vs fed by
its loader vs the whole ``train()``; and a cProfile of the trainer.
"""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path
import shutil
import sys
import time

import torch
import torch.nn.functional as F

if str(Path(__file__).resolve().parent) not in sys.path:  # benchmarks/ is not a package: its modules are siblings
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import dataset as _dataset, fmt, log, med, quiet, table  # noqa: E402


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


def render(tr: dict, profile: str | None = None) -> str:
    """Section 3 as markdown, from :func:`bench_train`'s result (and ``profile``, the
    cProfile text, when present)."""
    L: list[str] = []
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
    if profile:
        L += ["<details><summary>cProfile of a lab-size temporal <code>train()</code> run "
              "(cumulative time)</summary>", "", "```", profile.strip(), "```", "", "</details>",
              ""]
    return "\n".join(L).rstrip() + "\n"
