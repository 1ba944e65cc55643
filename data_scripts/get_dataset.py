#!/usr/bin/env python
r"""Get UCF-101 or HMDB-51 in the official layout, then (optionally) prepare its frame + flow cache.

    python data_scripts/get_dataset.py --dataset ucf101 --root data/ucf101 --dry-run
    python data_scripts/get_dataset.py --dataset ucf101 --root data/ucf101 \
        --prepare --cache data/cache/ucf101-tvl1 --flow tvl1 --workers 16

Downloads resume after an interruption; archives are verified (SHA-256, recorded at the first download) and
extracted safely (no member may land outside --root). RAR needs Debian's `unar` (apt-get install unar).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twostream_lib.download import HMDB51_FILES, UCF101_FILES, get_dataset, parse_sha256  # noqa: E402
from twostream_lib.errors import (MAX_WORKERS, ArgumentParser, IntRange, OptionError,  # noqa: E402
                                  check_device, run_cli)
from twostream_lib.files import writable_folder  # noqa: E402
from twostream_lib.prepare import MAX_BATCH, check_options, prepare  # noqa: E402

FILES = {"ucf101": UCF101_FILES, "hmdb51": HMDB51_FILES}


def build_parser() -> ArgumentParser:
    ap = ArgumentParser(prog="data_scripts/get_dataset.py", description=__doc__)
    ap.add_argument("--dataset", required=True, choices=["ucf101", "hmdb51"])
    ap.add_argument("--root", required=True, help="where the dataset is laid out")
    ap.add_argument("--downloads", help="where archives go (default: ROOT/downloads)")
    ap.add_argument("--dry-run", action="store_true", help="print the steps, do nothing")
    ap.add_argument("--sha256", action="append", default=None, metavar="NAME=HEX",
                    help="expected digest of an archive (repeatable)")
    ap.add_argument("--prepare", action="store_true", help="then prepare the frame + flow cache")
    ap.add_argument("--cache", help="cache folder for --prepare")
    ap.add_argument("--flow", default="tvl1", choices=["tvl1", "tvl1-torch", "farneback", "dis"],
                    help="tvl1-torch: the same TV-L1 in PyTorch, batched (on a GPU with --device cuda)")
    ap.add_argument("--device", default="cpu", help="--flow tvl1-torch: cpu or cuda")
    ap.add_argument("--batch", type=IntRange(1, MAX_BATCH), default=64,
                    help="--flow tvl1-torch: frame pairs per solver call")
    ap.add_argument("--workers", type=IntRange(1, MAX_WORKERS), default=1)
    ap.add_argument("--backward", action="store_true", help="also store backward flow (bi-directional input)")
    return ap


def main(argv=None) -> int:
    """A user error (a bad option, no network, a corrupt archive) is one line on stderr, exit status 2."""
    return run_cli(_run, argv)


def _run(argv=None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    # every option checked before anything is downloaded or written
    if a.prepare and not a.cache:
        ap.error("--prepare needs --cache")
    writable_folder(a.root, "--root", "dataset root")
    if a.downloads:
        writable_folder(a.downloads, "--downloads", "downloads folder")
    digests = parse_sha256(a.sha256 or [])
    names = [r.name for r in FILES[a.dataset]]
    for name in digests:
        if name not in names:
            raise OptionError(f"--sha256 {name}=...: {a.dataset} has no file {name!r}; its files are "
                              f"{', '.join(names)}")
    if a.cache:
        writable_folder(a.cache, "--cache", "cache folder")
    if a.device != "cpu":
        if a.flow != "tvl1-torch":
            raise OptionError(f"--device {a.device}: applies to --flow tvl1-torch only; {a.flow} runs on the CPU")
        check_device("--device", a.device, several=True)
    steps = get_dataset(a.dataset, a.root, a.downloads, dry_run=a.dry_run, sha256=digests)
    for s in steps:
        print(("would " if a.dry_run else "done: ") + s)
    if a.prepare:
        if a.dry_run:
            print(f"would prepare {a.root} -> {a.cache} (flow {a.flow}, {a.workers} workers)")
        else:
            check_options(a.dataset, a.root, a.cache, a.flow, a.device, a.backward)
            m = prepare(a.dataset, a.root, a.cache, flow=a.flow, workers=a.workers, backward=a.backward,
                        device=a.device, batch=a.batch)
            print(f"prepared {m['num_videos']} videos, {len(m['failed'])} failed")
            return 1 if m["failed"] else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
