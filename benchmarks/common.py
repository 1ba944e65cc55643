"""What every benchmark section shares: paths, machine information, timing helpers, table formatting, the lab
clips and miniature UCF-101 roots the sections measure on, the loader caches, and the report's head and merging.

No section module is imported here: every ``*_bench.py`` imports this module, never the other way round.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import io
import math
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without the package installed
    sys.path.insert(0, str(REPO))

from twostream_lib import lab as _lab  # noqa: E402
from twostream_lib.data import SpatialDataset, TemporalDataset, VideoCache  # noqa: E402
from twostream_lib.prepare import prepare  # noqa: E402
from twostream_lib.splits import UCF101_MEAN_FRAMES, UCF101_VIDEOS  # noqa: E402
from twostream_lib.video import write_video  # noqa: E402

CORES = os.cpu_count() or 1
# UCF-101 arithmetic: its size, as the library records it (twostream_lib.splits)
UCF_VIDEOS, UCF_FRAMES = UCF101_VIDEOS, UCF101_MEAN_FRAMES
# The paper's temporal net: 80K iterations x 256 in ~1 day on 4 Titans (3.2x one GPU), §5 "Multi-GPU training".
PAPER_ITERS, PAPER_BATCH, PAPER_SECONDS, PAPER_GPUS, PAPER_SPEEDUP = 80_000, 256, 86_400, 4, 3.2


# ============================================================================================ utilities
def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def med(xs) -> float:
    return float(statistics.median(xs))


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (no scientific notation for the usual ranges)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if x == 0:
        return "0"
    mag = int(math.floor(math.log10(abs(x))))
    dec = max(0, digits - 1 - mag)
    return f"{x:,.{dec}f}"


def table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        pass
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu or "unknown", "cores": CORES, "ram_gib": ram, "load": load, "gpu": gpu,
            "python": platform.python_version(), "torch": torch.__version__, "cv2": cv2.__version__,
            "numpy": np.__version__, "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}


@contextlib.contextmanager
def quiet():
    """Silence stdout/stderr of library calls (progress bars, prints)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# ============================================================================================ lab data
def render_frames(dataset: str, scale: str, index: int, n_frames: int) -> np.ndarray:
    """``n_frames`` of the ``index``-th clip of a lab dataset at ``scale``: (T, H, W, 3) uint8 RGB."""
    specs = _lab.lab_clip_specs(dataset, scale)
    spec = specs[(index * 7) % len(specs)]  # spread over classes
    spec = dataclasses.replace(spec, n_frames=max(n_frames, 2))
    frames, _ = _lab.render_clip(spec)
    return frames


def make_mini_ucf(root: Path, scale: str, n_videos: int, n_frames: int) -> tuple[Path, list[str]]:
    """A UCF-101-layout dataset root of ``n_videos`` lab clips of ``n_frames`` frames (rendered at ``scale``),
    with split files listing them (the last one as the test set; with ``n_videos=1`` a second clip is rendered for
    it), so :func:`prepare` runs its real code path. Returns (root, the ``n_videos`` video ids)."""
    classes, vids, lines = set(), [], []
    specs = _lab.lab_clip_specs("lab-ucf", scale)
    for k in range(max(n_videos, 2)):  # a split needs a test video that its train list doesn't hold
        spec = specs[(k * 37) % len(specs)]
        spec = dataclasses.replace(spec, n_frames=n_frames)
        frames, _ = _lab.render_clip(spec)
        path = root / "UCF-101" / spec.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, frames)
        classes.add(spec.cls)
        vids.append(f"UCF-101/{spec.rel}")
        lines.append(spec.rel)
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    cls = sorted(classes)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(cls)))
    train, test = lines[:-1], lines[-1:]  # a split never lists a video on both sides (splits refuses it)
    for s in (1, 2, 3):
        (lists / f"trainlist0{s}.txt").write_text("".join(f"{r} {cls.index(r.split('/')[0]) + 1}\n" for r in train))
        (lists / f"testlist0{s}.txt").write_text("".join(f"{r}\n" for r in test))
    return root, vids[:n_videos]


# ============================================================================================ loader caches
def make_caches(tmp: Path, quick: bool) -> dict:
    """Two caches from lab clips, prepared with DIS (flow content hardly matters to the loader): lab ``full``
    (240x320) at short side 256 (-> 256x341, the real pipeline's size) and lab ``small`` at its own 96x128."""
    out = {}
    for key, scale, nv, nf, short in (("224", "full", 3 if quick else 4, 24 if quick else 40, 256),
                                      ("lab", "small", 4 if quick else 6, 30 if quick else 50, None)):
        root, _ = make_mini_ucf(tmp / f"loader-{key}", scale, nv, nf)
        cache = tmp / f"loadercache-{key}"
        with quiet():
            prepare("lab-ucf", root, cache, flow="dis", workers=CORES, short_side=short, progress=False)
        out[key] = cache
    return out


def dataset(stream: str, cache, crop: int):
    vc = cache if isinstance(cache, VideoCache) else VideoCache(cache)
    items = [(v, i % 2) for i, v in enumerate(vc.video_ids)]
    if stream == "spatial":
        return SpatialDataset(vc, items, mode="train", crop_size=crop)
    return TemporalDataset(vc, items, mode="train", crop_size=crop, L=10)


def loader_rate(ds, workers: int, batch: int, batches: int, repeats: int, seed: int = 0) -> list[float]:
    """samples/s of a DataLoader over ``ds`` (random videos with replacement), one per timed epoch.
    Workers are persistent and the first epoch (process start, imports) is not timed: steady state."""
    sampler = torch.utils.data.RandomSampler(ds, replacement=True, num_samples=batch * batches,
                                             generator=torch.Generator().manual_seed(seed))
    dl = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                                     persistent_workers=workers > 0)
    rates = []
    for r in range(repeats + 1):
        t = time.perf_counter()
        n = sum(len(b[1]) for b in dl)
        if r:
            rates.append(n / (time.perf_counter() - t))
    del dl
    return rates


# ============================================================================================ report
def render_head(info: dict, quick: bool, elapsed: float, argv: list[str] | None = None) -> str:
    """The report's title line and its ``## Machine`` section."""
    L: list[str] = []
    cmd = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    L += ["# Benchmarks", "",
          f"Generated by `{cmd.strip()}` (`make bench`) on {info['date']}, in {elapsed / 60:.1f} min"
          + (" — **quick smoke run: few iterations, numbers are rough**" if quick else "") + ".", "",
          "## Machine", "",
          table(["", ""], [
              ["CPU", info["cpu"]], ["cores (os.cpu_count)", info["cores"]],
              ["RAM", f"{info['ram_gib']:.1f} GiB" if info["ram_gib"] else "?"],
              ["GPU", info["gpu"] or "none"],
              ["load average at start (1/5/15 min)", " / ".join(f"{x:.1f}" for x in info["load"])
               if info["load"] else "?"],
              ["python / torch / cv2 / numpy", f"{info['python']} / {info['torch']} / {info['cv2']} / "
                                                f"{info['numpy']}"],
              ["torch threads (training)", info["torch_threads"]], ["platform", info["platform"]],
          ]), "",
          "Every figure is the median of ≥ 3 runs; figures compared as ratios were measured interleaved in "
          "the same process. A load average above the core count means other jobs shared the machine: "
          "absolute rates are then low, ratios still hold.", ""]
    return "\n".join(L).rstrip() + "\n"


def _blocks(text: str) -> dict[str, str]:
    """``{"head": ..., "## 1.": ..., "## Machine": ...}``: a report cut at its ``## `` headers."""
    out, key, cur = {}, "head", []
    for line in text.splitlines():
        if line.startswith("## "):
            out[key] = "\n".join(cur)
            key, cur = line.split(" ")[0] + " " + line.split(" ")[1], [line]
        else:
            cur.append(line)
    out[key] = "\n".join(cur)
    return out


#: the head's sentence naming the sections kept from an earlier report, and where that report ran
_KEPT = re.compile(r"Sections? (?P<names>[\w, ]+?) (?:is|are) kept from an earlier report \((?P<where>.*?)\)\.(?=\s|$)")


def merge_markdown(old: str, new: str, cpu_ran: bool) -> str:
    """The new report, with each section that was not measured this time ("not run" / "needs" placeholders) taken
    from the old report; the machine block stays the old one when only the GPU section ran."""
    o, n = _blocks(old), _blocks(new)
    keep = lambda k: k in o and (k not in n or "(needs the" in n[k] or (k in ("head", "## Machine") and not cpu_ran)
                                 or (k == "## 5." and "No GPU was available" in n[k] and "No GPU" not in o[k]))
    merged = {k: (o[k] if keep(k) else v) for k, v in n.items()}
    merged.update({k: v for k, v in o.items() if k not in n})
    old_sections = [k for k in merged if k.startswith("## ") and k != "## Machine" and merged[k] is o.get(k)]
    if old_sections and merged["head"] is n.get("head"):  # say which figures come from an earlier run, and where
        when = next((line for line in o.get("head", "").splitlines() if line.startswith("Generated by")), "")
        cpu = next((line for line in o.get("## Machine", "").splitlines() if line.startswith("| CPU |")), "")
        here = (f"{when.rstrip('.').replace('Generated by', 'generated by')}; CPU: "
                f"{cpu.strip('| ').replace('CPU |', '').strip(' |') or 'not recorded'}")
        # a section the old report had itself kept from a yet earlier one keeps that report's provenance
        earlier = {}
        for m in _KEPT.finditer(o.get("head", "")):
            earlier.update({name.strip(): m.group("where") for name in m.group("names").split(",")})
        groups: dict[str, list[str]] = {}
        for k in sorted(old_sections):
            name = k[3:].rstrip(".")
            groups.setdefault(earlier.get(name, here), []).append(name)
        merged["head"] = n["head"].rstrip() + "\n\n" + " ".join(
            f"{'Sections' if len(names) > 1 else 'Section'} {', '.join(names)} "
            f"{'are' if len(names) > 1 else 'is'} kept from an earlier report ({where})."
            for where, names in groups.items()) + "\n"
    order = sorted(merged, key=lambda k: (k != "head", k != "## Machine", k))
    return "\n".join(merged[k].rstrip() + "\n" for k in order).rstrip() + "\n"
