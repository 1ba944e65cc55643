#!/usr/bin/env python
"""Generate the procedural lab datasets (lab-ucf, lab-hmdb) in the official UCF-101/HMDB-51 layouts.

    python data_scripts/make_lab_dataset.py --root data/lab --scale small --workers 2

Resumable: re-running skips finished videos and redoes half-written ones. See twostream_lib/lab.py.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    from twostream_lib import lab
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from twostream_lib import lab


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, type=Path, help="lab root (gets lab-ucf/ and lab-hmdb/)")
    p.add_argument("--scale", default="small", choices=sorted(lab.SCALES), help="tiny | small | full")
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--workers", default=1, type=int, help="parallel processes (multiprocessing Pool)")
    p.add_argument("--no-gt-flow", action="store_true", help="skip the ground-truth .flow.npz files")
    p.add_argument("--datasets", nargs="+", default=list(lab.DATASETS), choices=list(lab.DATASETS))
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    t0 = time.time()
    counts = lab.make_lab_datasets(a.root, scale=a.scale, seed=a.seed, workers=a.workers,
                                   gt_flow=not a.no_gt_flow, progress=not a.quiet, datasets=tuple(a.datasets))
    size = sum(f.stat().st_size for f in a.root.rglob("*") if f.is_file())
    print(f"{a.root}: " + ", ".join(f"{k}: {v} videos" for k, v in counts.items())
          + f"; {size / 2**20:.1f} MiB; {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
