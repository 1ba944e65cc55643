"""Execute chapter notebooks in place, the way they must be committed (outputs AND ipywidgets state).

    .venv/bin/python tools/execute_notebook.py book/02_flow.ipynb [more.ipynb ...] [--timeout SECONDS]

* Runs with nbclient in the notebook's own folder (book/), as nbval and Jupyter Book do, with the notebook's
  kernel (the chapters: ``twostream``, the project's venv, registered by ``make setup``).
* ``store_widget_state=True``: the widget models are saved in the notebook metadata
  (``metadata.widgets["application/vnd.jupyter.widget-state+json"]``); without them the static HTML has nothing
  to render and the browser check fails. (JupyterLab's "Save widget state automatically" does the same; a plain
  `nbclient`/`jupyter execute` without this flag does not.)
* Per-cell timeout: tools/nbexec.py's rule (the chapter's longest recorded cell x 3, at least 5 minutes), or
  ``--timeout``. A cell past it fails at once, naming the notebook, the cell and its first line; the kernel is shut
  down whatever happens.
* Fails (exit 1, notebook not written) if a cell raises or stalls. Then checks (exit 1, notebook written) what the rendered
  book needs:
  every widget view in an output has its model in the saved state, and no output loads anything from the network
  (matplotlib's ``to_jshtml`` Font Awesome <link> to a CDN is allowed: tools/book_offline.py removes it at build).
* Writes atomically (temp file + rename).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient.exceptions import CellExecutionError

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from book_offline import JSHTML_CDN_LINK  # noqa: E402  (removed at build time, so allowed here)
import nbexec  # noqa: E402

REMOTE = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)


def problems(nb) -> list[str]:
    """What in an executed notebook would break the offline rendered page (empty list: nothing)."""
    out = []
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                out.append(f"cell {i}: error output {o.get('ename')}: {o.get('evalue')}")
            data = o.get("data", {})
            view = data.get(WIDGET_VIEW)
            if view and view.get("model_id") not in state:
                out.append(f"cell {i}: widget view {view.get('model_id')} has no saved state "
                           "(execute with store_widget_state=True: tools/execute_notebook.py)")
            html = data.get("text/html", "")
            html = "".join(html) if isinstance(html, list) else html
            html = JSHTML_CDN_LINK.sub("", html)
            if REMOTE.search(html):
                out.append(f"cell {i}: text/html output loads a remote URL: {REMOTE.search(html).group(0)}...")
    return out


def execute(path: Path, timeout: int | None = None, kernel: str | None = None) -> list[str]:
    """Execute ``path`` in place (``timeout``: seconds per cell, None: nbexec's rule); returns :func:`problems`.
    Raises ``CellExecutionError`` or ``CellStall`` (the notebook is then not written)."""
    nb = nbexec.execute(nbformat.read(path, as_version=4), path=path, cwd=path.parent, timeout=timeout,
                        kernel=kernel)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".ipynb")
    os.close(fd)
    nbformat.write(nb, tmp)
    os.replace(tmp, path)
    return problems(nb)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--timeout", type=int, default=None,
                    help="per-cell timeout in seconds (default: the chapter's longest recorded cell x 3, >= 300)")
    ap.add_argument("--kernel", default=None, help="kernel name (default: the notebook's kernelspec)")
    args = ap.parse_args(argv)
    rc = 0
    for path in args.notebooks:
        t0 = time.time()
        try:
            found = execute(path, args.timeout, args.kernel)
        except CellExecutionError as e:
            print(f"{path}: a cell failed, notebook not written:\n{e}", file=sys.stderr)
            rc = 1
            continue
        except nbexec.CellStall as e:
            print(f"{e}\n{path}: notebook not written", file=sys.stderr)
            rc = 1
            continue
        if found:
            print(f"{path}: written, but the rendered page will fail its checks:\n  " + "\n  ".join(found),
                  file=sys.stderr)
            rc = 1
        else:
            print(f"{path}: executed in {time.time() - t0:.0f} s (widget state saved)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
