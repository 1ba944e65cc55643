"""Section 4 of BENCHMARKS.md: lab data from nothing to fused accuracy through the command line, one run.
"""
from __future__ import annotations

import os
from pathlib import Path
import subprocess
import sys
import time

if str(Path(__file__).resolve().parent) not in sys.path:  # benchmarks/ is not a package: its modules are siblings
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CORES, REPO, log, table  # noqa: E402


E2E_SMALL_MIN = 6  # minutes the lab `small` end-to-end run takes on 2 cores (measured)

def bench_e2e(tmp: Path, scale: str, iters: int, eval_frames: int, eval_crops: int) -> dict:
    """Lab ``scale`` from nothing to fused accuracy through the command line, one run, wall time per stage."""
    py = sys.executable
    root, cache, runs = tmp / "e2e-lab", tmp / "e2e-cache", tmp / "e2e-runs"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    w = str(CORES)
    steps = [max(1, int(iters * 0.7)), max(1, int(iters * 0.9))]
    common = [f"roots=[{root / 'lab-ucf'}]", f"caches=[{cache}]", f"max_iters={iters}",
              f"lr_steps=[{steps[0]},{steps[1]}]", f"val_every={max(1, iters // 2)}",
              f"ckpt_every={max(1, iters // 2)}", "device=cpu", "tensorboard=false"]
    if scale == "tiny":  # 48x64 frames: too small for CNN-M-2048 (the config needs crops >= 59)
        common += ["arch=resnet18", "width=1", "crop_size=40"]
    stages: list[tuple[str, list[str]]] = [
        ("generate lab-ucf", [py, str(REPO / "data_scripts" / "make_lab_dataset.py"), "--root", str(root),
                              "--scale", scale, "--workers", w, "--datasets", "lab-ucf", "--quiet"]),
        ("prepare (DIS)", [py, "-m", "twostream_lib", "prepare", "--dataset", "lab-ucf", "--root",
                           str(root / "lab-ucf"), "--cache", str(cache), "--flow", "dis", "--workers", w,
                           "--no-progress"]),
        ("train spatial", [py, "-m", "twostream_lib", "train", str(REPO / "configs" / "lab_spatial.yaml"),
                           *common, f"out_dir={runs / 'spatial'}", "--no-progress"]),
        ("train temporal", [py, "-m", "twostream_lib", "train", str(REPO / "configs" / "lab_temporal.yaml"),
                            *common, f"out_dir={runs / 'temporal'}", "--no-progress"]),
    ]
    for s in ("spatial", "temporal"):
        stages.append((f"evaluate {s}", [py, "-m", "twostream_lib", "evaluate", str(runs / s / "best.pt"),
                                         "--subset", "test", "--out", str(runs / f"{s}.npz"), "--frames",
                                         str(eval_frames), "--crops", str(eval_crops), "--no-progress"]))
    res = {"scale": scale, "iters": iters, "frames": eval_frames, "crops": eval_crops, "stages": [],
           "commands": []}
    for name, cmd in stages:
        t = time.perf_counter()
        p = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        dt = time.perf_counter() - t
        res["commands"].append(" ".join(Path(c).name if c == py else c for c in cmd))
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
            res["stages"].append({"stage": name, "s": dt, "note": "FAILED: " + " / ".join(tail)})
            log(f"e2e {name} FAILED ({dt:.1f} s): {tail}")
            res["error"] = name
            return res
        note = (p.stdout.strip().splitlines() or [""])[-1]
        res["stages"].append({"stage": name, "s": dt, "note": note})
        log(f"e2e {name}: {dt:.1f} s — {note}")
    # fuse: the CLI when fusion.py has main(), else the library call
    from twostream_lib import fusion
    scores = [str(runs / "spatial.npz"), str(runs / "temporal.npz")]
    t = time.perf_counter()
    if hasattr(fusion, "main"):
        p = subprocess.run([py, "-m", "twostream_lib", "fuse", *scores], cwd=tmp, env=env, capture_output=True,
                           text=True)
        note = (p.stdout.strip().splitlines() or [""])[-1] if p.returncode == 0 else "FAILED: " + p.stderr[-300:]
        res["commands"].append("python -m twostream_lib fuse spatial.npz temporal.npz")
    else:
        note = "(no `fuse` CLI yet: twostream_lib.fusion.fuse_files)"
    r = fusion.fuse_files(scores, method="average")
    dt = time.perf_counter() - t
    res["stages"].append({"stage": "fuse (average)", "s": dt, "note": note})
    res["accuracy"] = {"spatial": r["stream_accuracy"][0], "temporal": r["stream_accuracy"][1],
                       "fused": r["accuracy"], "videos": len(r["labels"]), "classes": len(r["classes"])}
    log(f"e2e fused accuracy {100 * r['accuracy']:.1f}% (spatial {100 * r['stream_accuracy'][0]:.1f}%, "
        f"temporal {100 * r['stream_accuracy'][1]:.1f}%)")
    return res


def render(e: dict) -> str:
    """Section 4 as markdown, from :func:`bench_e2e`'s result."""
    L: list[str] = []
    total = sum(s["s"] for s in e["stages"])
    L += [f"## 4. End to end: lab `{e['scale']}` from nothing to fused accuracy (one run, command line)", "",
          f"**Reduced schedule to fit the time budget:** each stream trains {e['iters']} iterations "
          f"(the lab configs: 1000), lr steps at 70% / 90%; test protocol {e['frames']} frames x "
          f"{e['crops']} crops per video (paper: 25 x 10). Only `lab-ucf` is generated. Accuracies are "
          "therefore far below the chapters'; this row times the pipeline, it doesn't score it."
          + (" Tiny frames are 48x64, too small for CNN-M-2048: ResNet-18 on 40 px crops (as the unit tests)." if e["scale"] == "tiny" else "")
          + (f" **Why tiny:** {e['why']}." if e.get("why") else ""), "",
          table(["stage", "wall s", "output"],
                [[s["stage"], f"{s['s']:.1f}", s["note"].replace("|", "/")[:140]] for s in e["stages"]]
                + [["**total**", f"**{total:.1f}**", ""]]), ""]
    if "accuracy" in e:
        a = e["accuracy"]
        L += [f"Test accuracy ({a['videos']} videos, {a['classes']} classes, split 1): spatial "
              f"{100 * a['spatial']:.1f}%, temporal {100 * a['temporal']:.1f}%, fused (average) "
              f"{100 * a['fused']:.1f}%.", ""]
    L += ["<details><summary>commands</summary>", "", "```"] + e["commands"] + ["```", "", "</details>", ""]
    return "\n".join(L).rstrip() + "\n"
