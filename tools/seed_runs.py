"""The chapters that test the paper's claims, executed again with other seeds: which scorecard marks hold beyond
one training run?

    .venv/bin/python tools/seed_runs.py --seeds 1 2          # make seeds (about 13 min per seed on 2 CPU cores)

Every lab number of the book comes from one training run per setting, and its standard error covers the choice of
test videos only: another seed (or the same seed on another CPU, whose float rounding differs) trains other nets,
and a claim near its threshold can change its mark. This script executes chapters 3-6 once per seed, exactly as the
book runs them, with ``SEED = k`` in the parameters cell, their runs under ``runs/seed<k>/`` and their scorecard
entries under ``book/scorecard/seeds/<k>/``. The executed copies (in a temporary folder) are discarded; the scorecard
files are kept and committed, and the "What reproduced" page shows each claim for every seed beside the book's own
run (:func:`twostream_lib.scorecard.seed_table`). A seed whose runs are finished is scored again in seconds.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from nbclient.exceptions import CellExecutionError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from execute_notebook import execute  # noqa: E402
from nbexec import CellStall  # noqa: E402
from param_notebook import with_parameters  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = ("03_spatial", "04_temporal", "05_multitask", "06_fusion")


def run_seed(seed: int, chapters=CHAPTERS, timeout: int | None = None) -> Path:
    """Execute ``chapters`` with ``SEED = seed``; returns the folder of their scorecard entries."""
    scorecard = REPO / "book" / "scorecard" / "seeds" / str(seed)
    params = {"SEED": str(seed), "DATA_DIR": repr(str(REPO / "data")),
              "RUNS_DIR": repr(str(REPO / "runs" / f"seed{seed}")), "SCORECARD_DIR": repr(str(scorecard))}
    with tempfile.TemporaryDirectory(prefix=f"seed{seed}-") as tmp:
        for name in chapters:
            t0 = time.time()
            copy = with_parameters(REPO / "book" / f"{name}.ipynb", Path(tmp) / f"{name}.ipynb", params)
            execute(copy, timeout)  # a failing or stalled cell raises: the seed's other chapters need this one
            print(f"seed {seed}: {name} executed in {time.time() - t0:.0f} s", flush=True)
    (scorecard / "timings.json").unlink(missing_ok=True)  # the book's chapter times are the seed-0 execution's
    return scorecard


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="seeds other than the book's own (0)")
    ap.add_argument("--chapters", nargs="+", default=list(CHAPTERS))
    ap.add_argument("--timeout", type=int, default=None,
                    help="per-cell timeout in seconds (default: the chapter's longest recorded cell x 3, >= 300)")
    a = ap.parse_args(argv)
    if 0 in a.seeds:
        ap.error("seed 0 is the book's own execution (book/scorecard/*.json); give other seeds")
    for seed in a.seeds:
        try:
            print(f"seed {seed}: scorecard in {run_seed(seed, a.chapters, a.timeout)}")
        except (CellExecutionError, CellStall) as e:
            print(f"seed {seed}: a cell failed:\n{e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
