"""Command line: ``python -m twostream_lib <command> ...``.

Commands (each is the ``main(argv)`` of its module; ``--help`` on each lists its flags):

    lab       lab datasets of a scale + their caches     (twostream_lib.lab.prepare_lab)
    prepare   dataset root -> frame + flow cache        (twostream_lib.prepare)
    train     YAML config + key=value overrides -> run  (twostream_lib.train)
    pretrain  lab stills -> pre-trained spatial net     (twostream_lib.pretrain)
    evaluate  checkpoint -> video-level score file      (twostream_lib.evaluate)
    fuse      score files -> fused accuracy              (twostream_lib.fusion)
"""
from __future__ import annotations

import importlib
import sys

from .errors import run_cli

COMMANDS = {
    "lab": "twostream_lib.lab.writer:lab_main",
    "prepare": "twostream_lib.prepare",
    "train": "twostream_lib.train",
    "pretrain": "twostream_lib.pretrain",
    "evaluate": "twostream_lib.evaluate",
    "fuse": "twostream_lib.fusion",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}; expected one of: {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        return 0
    module_name, _, func = COMMANDS[argv[0]].partition(":")
    module = importlib.import_module(module_name)
    return run_cli(getattr(module, func or "main"), argv[1:])  # a user error: one line, exit status 2
