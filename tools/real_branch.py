"""``make test-real-branch``: every chapter executed with ``DATA="ucf101"`` (and ``"hmdb51"`` where it reads it).

The branch a reader with the real datasets runs first has to run. UCF-101 and HMDB-51 can't be downloaded here,
so this builds miniatures **in their real layouts and under their real names**: the lab's ``tiny`` clips, laid
out as ``<data>/ucf101`` (``UCF-101/`` + ``ucfTrainTestlist/``) and ``<data>/hmdb51`` (class folders +
``testTrainMulti_7030_splits/``), prepared as ``ucf101`` / ``hmdb51`` caches with TV-L1 flow at
``<data>/cache/<dataset>-tvl1`` — exactly what ``data_scripts/get_dataset.py --prepare`` writes. Then each chapter
runs on a copy of itself (tools/param_notebook.py) with the real-data parameters and a tiny schedule
(``OVERRIDES``), and must run through without an error and produce its figures. Nothing is compared with the lab
outputs: the numbers of a 4-iteration run on 48x64 clips mean nothing.

    python tools/real_branch.py [--work DIR] [--chapters 03_spatial,04_temporal]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
import nbexec  # noqa: E402
from param_notebook import with_parameters  # noqa: E402

from twostream_lib.lab import make_lab_datasets  # noqa: E402
from twostream_lib.prepare import prepare  # noqa: E402

#: chapter -> the real dataset its DATA parameter names
CHAPTERS = {"01_videos": "ucf101", "02_flow": "ucf101", "03_spatial": "ucf101", "04_temporal": "ucf101",
            "05_multitask": "hmdb51", "06_fusion": "ucf101", "07_scaling": "ucf101"}
#: every run of a chapter, shrunk to seconds (the paper-scale configs train 80K iterations on 224 crops)
TINY = ["crop_size=48", "width=0.125", "arch=cnn_m_2048", "pretrained=false", "batch_size=4", "max_iters=4",
        "lr_steps=[3]", "ckpt_every=2", "val_every=2", "val_frames=2", "log_every=1", "workers=0",
        "tensorboard=false", "amp=false"]


def miniature(work: Path) -> Path:
    """``work/data`` holding ``ucf101``, ``hmdb51`` and their TV-L1 caches, made from the lab's tiny clips."""
    data = work / "data"
    lab = work / "lab-tiny"
    make_lab_datasets(lab, scale="tiny", seed=0, workers=2, gt_flow=False, progress=False)
    for real, src in (("ucf101", "lab-ucf"), ("hmdb51", "lab-hmdb")):
        if not (data / real).exists():
            shutil.copytree(lab / src, data / real, symlinks=True)
        m = prepare(real, data / real, data / "cache" / f"{real}-tvl1", flow="tvl1", workers=2, short_side=None,
                    backward=True, progress=False)
        if m["failed"]:
            raise SystemExit(f"preparing the miniature {real} failed: {m['failed']}")
    return data


def chapter_copy(name: str, data: Path, work: Path, dataset: str | None = None) -> Path:
    """``work/book/<name>.ipynb``: the chapter with its data under ``data``, its runs and scorecard under ``work``,
    on the CPU; with ``dataset`` (a real one) on that data and the tiny schedule, else on the lab data."""
    params = {"DATA_DIR": repr(str(data)), "RUNS_DIR": repr(str(work / "runs")),
              "SCORECARD_DIR": repr(str(work / "scorecard")), "DEVICE": '"cpu"'}
    if dataset is not None:
        params.update(DATA=repr(dataset), OVERRIDES=repr(TINY))
    return with_parameters(ROOT / "book" / f"{name}.ipynb", work / "book" / f"{name}.ipynb", params,
                           optional=("RUNS_DIR", "SCORECARD_DIR", "OVERRIDES"))  # chapters that train need them


def run_chapter(name: str, dataset: str, data: Path, work: Path) -> tuple[int, float]:
    """Execute a parametrised copy of ``book/<name>.ipynb``; returns (figures, seconds). Raises on a failing or
    stalled cell (per-cell timeout: :func:`nbexec.cell_timeout` of the chapter)."""
    copy = chapter_copy(name, data, work, dataset)
    nb = nbformat.read(str(copy), as_version=4)
    t0 = time.perf_counter()
    nbexec.execute(nb, path=ROOT / "book" / f"{name}.ipynb", cwd=ROOT / "book")
    figures = sum("image/png" in o.get("data", {}) or "image/jpeg" in o.get("data", {})
                  for c in nb.cells for o in c.get("outputs", []))
    nbformat.write(nb, str(copy))
    return figures, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--chapters", default=",".join(CHAPTERS), help="comma-separated chapter names")
    a = ap.parse_args(argv)
    work = a.work or Path(tempfile.mkdtemp(prefix="real-branch-"))
    t0 = time.perf_counter()
    data = miniature(work.resolve())
    print(f"miniature UCF-101 / HMDB-51 in {data} ({time.perf_counter() - t0:.0f} s)", flush=True)
    failed, names = [], a.chapters.split(",")
    for name in names:
        try:
            figures, dt = run_chapter(name, CHAPTERS[name], data, work.resolve())
            ok = figures > 0
            print(f"{name}: DATA={CHAPTERS[name]!r} ran through in {dt:.0f} s, {figures} figure(s)"
                  + ("" if ok else " -- NO FIGURE"), flush=True)
        except Exception as e:  # noqa: BLE001 - report every chapter, then fail
            ok = False
            print(f"{name}: DATA={CHAPTERS[name]!r} FAILED: {type(e).__name__}: {str(e)[-1500:]}", flush=True)
        if not ok:
            failed.append(name)
    print(f"real-data branch: {len(names) - len(failed)} of {len(names)} chapters ran "
          f"({time.perf_counter() - t0:.0f} s){'; failed: ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
