"""``make test-real-branch`` and ``make test-gpu-profile``: the two ways to run the chapters that no CPU run of
the book takes, rehearsed on the CPU in miniature so that a GPU user's first run is not their first run.

**The real-data branch** (``--mode real``): every chapter executed with ``DATA="ucf101"`` (and ``"hmdb51"`` where it
reads it), ``DEVICE = "auto"`` as shipped (it must resolve to the CPU here). UCF-101 and HMDB-51 can't be downloaded
here, so this builds miniatures **in their real layouts and under their real names**: the lab's ``tiny`` clips,
laid out as ``<data>/ucf101`` (``UCF-101/`` + ``ucfTrainTestlist/``) and ``<data>/hmdb51`` (class folders +
``testTrainMulti_7030_splits/``), prepared as ``ucf101`` / ``hmdb51`` caches with TV-L1 flow at
``<data>/cache/<dataset>-tvl1`` — exactly what ``data_scripts/get_dataset.py --prepare`` writes. Before the
chapters, chapter 4's default run is trained **from the command line**, with the very command the chapter prints
for it; chapter 4 must then find it finished (its plan says so), as one naming rule promises. Each chapter runs on
a copy of itself (tools/param_notebook.py) with the real-data parameters and a tiny schedule (``OVERRIDES``), must
run through without an error, produce its figures, and (chapters that train) print its plan.

**The gpu profile** (``--mode gpu-profile``): chapters 3-6 with ``PROFILE = "gpu"`` executed on the CPU
(``DEVICE = "cpu"``), on the lab's ``tiny`` scale (``SCALE``) with the same tiny schedule: every row and cell that
only the gpu profile runs (Table 1a's dropout 0.9 rows, Table 1b's L = 5 / no mean subtraction / trajectory /
bi-directional rows, Table 2's row 3, the gpu scorecard files, the plan). It proves that what a GPU user runs first
composes and runs, not what it scores.

Nothing is compared with the lab outputs: the numbers of a 4-iteration run on 48x64 clips mean nothing.

    python tools/real_branch.py [--mode real|gpu-profile] [--work DIR] [--chapters 03_spatial,04_temporal]

Every chapter runs at the lab's tiny scale (``SCALE``; chapter 1 shows the lab beside the real data).
"""
from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
import nbexec  # noqa: E402
from param_notebook import with_parameters  # noqa: E402

from twostream_lib.book import Chapter  # noqa: E402
from twostream_lib.lab import make_lab_datasets  # noqa: E402
from twostream_lib.prepare import prepare  # noqa: E402

#: chapter -> the real dataset its DATA parameter names
CHAPTERS = {"01_videos": "ucf101", "02_flow": "ucf101", "03_spatial": "ucf101", "04_temporal": "ucf101",
            "05_multitask": "hmdb51", "06_fusion": "ucf101", "07_scaling": "ucf101"}
#: every run of a chapter, shrunk to seconds (the paper-scale configs train 80K iterations on 224 crops)
TINY = ["crop_size=48", "width=0.125", "arch=cnn_m_2048", "pretrained=false", "batch_size=4", "max_iters=4",
        "lr_steps=[3]", "ckpt_every=2", "val_every=2", "val_frames=2", "log_every=1", "workers=0",
        "tensorboard=false", "amp=false"]


def miniature(data: Path) -> Path:
    """``data`` holding ``ucf101``, ``hmdb51`` and their TV-L1 caches, made from the lab's tiny clips (generated in
    ``data/lab/tiny``, where the chapters' lab sections and the gpu-profile rehearsal find them)."""
    lab = data / "lab" / "tiny"
    make_lab_datasets(lab, scale="tiny", seed=0, workers=2, progress=False)
    for real, src in (("ucf101", "lab-ucf"), ("hmdb51", "lab-hmdb")):
        if not (data / real).exists():  # the real layouts hold videos only (no ground-truth flow)
            shutil.copytree(lab / src, data / real, symlinks=True, ignore=shutil.ignore_patterns("*.flow.npz"))
        m = prepare(real, data / real, data / "cache" / f"{real}-tvl1", flow="tvl1", workers=2, short_side=None,
                    backward=True, progress=False)
        if m["failed"]:
            raise SystemExit(f"preparing the miniature {real} failed: {m['failed']}")
    return data


#: chapters whose gpu profile runs more than their cpu profile
GPU_CHAPTERS = ("03_spatial", "04_temporal", "05_multitask", "06_fusion")
#: chapters that train, and so print a plan on real data and in the gpu profile
TRAINING = ("03_spatial", "04_temporal", "05_multitask", "06_fusion")


def chapter_copy(name: str, data: Path, work: Path, dataset: str | None = None, gpu_profile: bool = False) -> Path:
    """``work/book/<name>.ipynb``: the chapter with its data under ``data``, its runs and scorecard under ``work``;
    with ``dataset`` (a real one) on that data, DEVICE as shipped ("auto"), the tiny schedule and the lab's tiny
    scale; with ``gpu_profile`` the gpu profile on the CPU, tiny too; else the lab data as shipped, on the CPU."""
    params = {"DATA_DIR": repr(str(data)), "RUNS_DIR": repr(str(work / "runs")),
              "SCORECARD_DIR": repr(str(work / "scorecard"))}
    if dataset is not None:
        params.update(DATA=repr(dataset), OVERRIDES=repr(TINY), SCALE='"tiny"')
    if gpu_profile:
        params.update(PROFILE='"gpu"', DEVICE='"cpu"', OVERRIDES=repr(TINY), SCALE='"tiny"')
    if dataset is None and not gpu_profile:
        params["DEVICE"] = '"cpu"'
    return with_parameters(ROOT / "book" / f"{name}.ipynb", work / "book" / f"{name}.ipynb", params,
                           optional=("RUNS_DIR", "SCORECARD_DIR", "OVERRIDES"))  # chapters that train need them


def outputs(nb) -> str:
    """Every text output of an executed notebook, concatenated."""
    return "\n".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                     + "".join(o.get("data", {}).get("text/html", "")) for c in nb.cells for o in c.get("outputs", []))


def run_chapter(name: str, dataset: str | None, data: Path, work: Path, gpu_profile: bool = False
                ) -> tuple[int, float, str]:
    """Execute a parametrised copy of ``book/<name>.ipynb``; returns (figures, seconds, text outputs). Raises on a
    failing or stalled cell (per-cell timeout: :func:`nbexec.cell_timeout` of the chapter)."""
    copy = chapter_copy(name, data, work, dataset, gpu_profile)
    nb = nbformat.read(str(copy), as_version=4)
    t0 = time.perf_counter()
    nbexec.execute(nb, path=ROOT / "book" / f"{name}.ipynb", cwd=ROOT / "book")
    figures = sum("image/png" in o.get("data", {}) or "image/jpeg" in o.get("data", {})
                  for c in nb.cells for o in c.get("outputs", []))
    nbformat.write(nb, str(copy))
    return figures, time.perf_counter() - t0, outputs(nb)


def train_from_command_line(data: Path, work: Path) -> str:
    """Train chapter 4's default real-data run with the command line the chapter gives for it (from the project's
    root); returns its folder, which chapter 4 must then find finished."""
    ch = Chapter("04_temporal", data="ucf101", data_dir=data, runs_dir=work / "runs", overrides=TINY, verbose=False)
    cfg = ch.config("lab_temporal", "ucf101_temporal")
    words = shlex.split(ch.command(cfg))
    assert words[:3] == ["python", "-m", "twostream_lib"], words
    subprocess.run([sys.executable, *words[1:], "--no-progress"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return cfg.out_dir


def problems(name: str, text: str, gpu_profile: bool, cli_run: str | None) -> list[str]:
    """What a chapter's outputs lack: the resolved device, the plan, the gpu-only rows, the reused CLI run."""
    found = []
    if gpu_profile:
        if name in TRAINING and "profile gpu" not in text:
            found.append("the set-up did not print the gpu profile")
        if re.search(r">\s*GPU profile\s*<", text):  # a table cell left for the gpu profile: a row it skipped
            found.append("a row marked 'GPU profile' was not run")
        if "row 3 skipped" in text:
            found.append("Table 2's row 3 was skipped")
    else:
        if "device cpu" not in text:
            found.append("DEVICE = 'auto' did not resolve to (or print) the CPU")
        if name == "03_spatial" and "paper +18.5)" not in text:  # real data's from-scratch config has dropout 0.9
            found.append("Table 1a compares the real runs with the paper's rows of another dropout")
    if name in TRAINING and "Plan of" not in text:
        found.append("no plan printed before training")
    if cli_run and not any(cli_run in line and "reused (finished)" in line for line in text.splitlines()):
        found.append(f"the command line's run {cli_run} was not reused")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("real", "gpu-profile"), default="real",
                    help="the real-data branch, or the gpu profile on the CPU (default: %(default)s)")
    ap.add_argument("--work", type=Path, default=ROOT / "_build" / "rehearsal",
                    help="working folder: data/ (kept between runs: the lab's tiny scale, the miniatures) and one "
                         "folder per mode, emptied first (default: %(default)s)")
    ap.add_argument("--chapters", default=None, help="comma-separated chapter names (default: all the mode runs)")
    a = ap.parse_args(argv)
    gpu = a.mode == "gpu-profile"
    data = (a.work / "data").resolve()
    work = (a.work / a.mode).resolve()  # runs, scorecard, executed copies: never reused from a previous rehearsal
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    if not gpu:  # (the gpu profile's chapters make the lab's tiny scale in data/ themselves, or find it there)
        miniature(data)
        print(f"miniature UCF-101 / HMDB-51 in {data} ({time.perf_counter() - t0:.0f} s)", flush=True)
    names = (a.chapters or ",".join(GPU_CHAPTERS if gpu else CHAPTERS)).split(",")
    cli_run = None
    if not gpu and "04_temporal" in names:
        cli_run = train_from_command_line(data, work)
        print(f"chapter 4's default run trained from the command line: {cli_run}", flush=True)
    failed = []
    label = "PROFILE='gpu' on the CPU" if gpu else None
    for name in names:
        what = label or f"DATA={CHAPTERS[name]!r}"
        try:
            figures, dt, text = run_chapter(name, None if gpu else CHAPTERS[name], data, work, gpu)
            bad = problems(name, text, gpu, cli_run if name == "04_temporal" else None)
            bad += [] if figures else ["no figure"]
            print(f"{name}: {what} ran through in {dt:.0f} s, {figures} figure(s)"
                  + ("" if not bad else " -- " + "; ".join(bad)), flush=True)
        except Exception as e:  # noqa: BLE001 - report every chapter, then fail
            bad = [f"{type(e).__name__}: {str(e)[-1500:]}"]
            print(f"{name}: {what} FAILED: {bad[0]}", flush=True)
        if bad:
            failed.append(name)
    if gpu:
        cards = sorted(p.name for p in (work / "scorecard").glob("*.gpu.json"))
        print(f"gpu scorecard files: {', '.join(cards) or 'none'}")
        if not cards:
            failed.append("scorecard")
    print(f"{a.mode}: {len(names) - len(failed)} of {len(names)} chapters ran "
          f"({time.perf_counter() - t0:.0f} s){'; failed: ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
