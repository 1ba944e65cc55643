"""Does a ``tvl1-torch`` cache train as well as OpenCV TV-L1's? (issue: TV-L1 on the GPU, "done when").

Lab ``tiny`` lab-ucf prepared twice, with ``--flow tvl1`` (OpenCV) and ``--flow tvl1-torch``; the lab temporal config
(shrunk to tiny frames: 44 crops, 600 iterations) trained on each cache; each net then scored (10 stacks x centre
crop) on *both* caches, so the same test videos give a paired comparison. A few CPU minutes::

    .venv/bin/python benchmarks/tvl1_train_compare.py [--work /tmp/tvl1cmp]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without the package installed
    sys.path.insert(0, str(REPO))

from twostream_lib import metrics  # noqa: E402
from twostream_lib.config import apply_overrides, run_config  # noqa: E402
from twostream_lib.evaluate import evaluate_checkpoint  # noqa: E402
from twostream_lib.lab import prepare_lab  # noqa: E402
from twostream_lib.prepare import prepare  # noqa: E402
from twostream_lib.train import train  # noqa: E402

FLOWS = ("tvl1", "tvl1-torch")
TINY_TEMPORAL = ["crop_size=44", "max_iters=600", "lr_steps=[420,540]", "val_fraction=0", "tensorboard=false",
                 "ckpt_every=600", "log_every=100", "workers=0"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default="/tmp/tvl1cmp", help="folder for the data, caches and runs")
    work = Path(p.parse_args(argv).work)
    prepare_lab(work / "data", "tiny", workers=2)
    root = work / "data/lab/tiny/lab-ucf"
    caches = {f: work / f"cache-{f}" for f in FLOWS}
    for flow, cache in caches.items():
        t = time.time()
        prepare("lab-ucf", root, cache, flow=flow, workers=1, short_side=None, progress=False)
        print(f"prepare --flow {flow}: {time.time() - t:.0f} s", flush=True)
    correct = {}
    for flow, cache in caches.items():
        cfg = run_config("lab_temporal", TINY_TEMPORAL, variant=flow, data_dir=work / "data",
                         scale="tiny", runs_dir=work / "runs")
        ckpt = train(apply_overrides(cfg, [f"caches=[{cache}]"]), progress=False)["best_checkpoint"]
        for test_flow, test_cache in caches.items():
            e = evaluate_checkpoint(ckpt, frames=10, crops=1, cache=str(test_cache), progress=False)
            correct[flow, test_flow] = metrics.predictions(e["scores"]) == e["labels"]
            print(f"trained on {flow:10s} tested on {test_flow:10s}: accuracy {e['accuracy']:.3f} "
                  f"({len(e['labels'])} videos)", flush=True)
    a, b = correct["tvl1", "tvl1"], correct["tvl1-torch", "tvl1-torch"]
    print(f"tvl1-torch minus OpenCV, each on its own cache: {b.mean() - a.mean():+.3f} ± {metrics.paired_se(b, a):.3f} "
          f"(paired s.e.)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
