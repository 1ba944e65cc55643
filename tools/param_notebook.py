"""Copy a chapter notebook with other values in its parameters cell (the cell tagged ``parameters``).

    python tools/param_notebook.py book/03_spatial.ipynb /tmp/gpu/03_spatial.ipynb DEVICE='"cuda"' PROFILE='"gpu"'

Each ``NAME=VALUE`` replaces the line ``NAME = ...`` of the parameters cell (VALUE is a Python expression, kept
as written); a name the cell doesn't define is an error, so a renamed parameter can't be set silently to nothing.
The copy keeps every other cell (outputs included: nbval compares the ``# NBVAL_CHECK_OUTPUT`` cells against
them). ``make gpu-check`` and ``make test-real-branch`` run chapters this way.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat


def with_parameters(src: str | Path, dst: str | Path, params: dict[str, str], optional: tuple[str, ...] = ()) -> Path:
    """Write ``dst``: notebook ``src`` whose parameters cell assigns ``params`` (name -> Python source). A name the
    cell doesn't define is an error, unless it is in ``optional``."""
    nb = nbformat.read(str(src), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SystemExit(f"{src}: expected one cell tagged 'parameters', found {len(cells)}")
    lines = cells[0].source.split("\n")
    for name, value in params.items():
        pat = re.compile(rf"^{re.escape(name)}\s*=\s*(.*?)(\s*#.*)?$")
        hits = [i for i, line in enumerate(lines) if pat.match(line)]
        if not hits:
            if name in optional:
                continue
            raise SystemExit(f"{src}: the parameters cell has no parameter {name!r}")
        for i in hits:
            comment = pat.match(lines[i]).group(2) or ""
            lines[i] = f"{name} = {value}{comment}"
    cells[0].source = "\n".join(lines)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(dst))
    return dst


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__)
        return 2
    params = dict(a.split("=", 1) for a in argv[2:])
    print(with_parameters(argv[0], argv[1], params))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
