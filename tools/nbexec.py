"""Executing a notebook without ever hanging: one per-cell timeout rule and one executor for every tool.

Every path that executes the chapters (``tools/execute_notebook.py``, ``tools/real_branch.py``,
``tools/seed_runs.py``, ``tools/stall_harness.py``, nbval in ``make test`` through ``tools/nbval_timeouts.py``,
``tools/gpu_check.py`` and the book build) takes its per-cell timeout from :func:`cell_timeout`: the chapter's
longest cell as recorded in the committed notebook (nbclient's ``metadata.execution`` timestamps), times
``FACTOR``, and never less than ``FLOOR`` seconds. A cell that runs past it -- a stalled kernel, or code that waits
forever -- fails within minutes with the notebook, the cell index and the cell's first line named, and the kernel is
shut down whatever happens (nbclient's kernel context).

    from nbexec import execute, cell_timeout
    nb = execute(nb, path=Path("book/02_flow.ipynb"), cwd=Path("book"))
"""
from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

#: a cell may take this many times the longest cell of its chapter's recorded execution ...
FACTOR = 3
#: ... and never less than this (seconds): kernel start-up, a slower machine, a first import of torch
FLOOR = 300


class CellStall(RuntimeError):
    """A cell ran past its timeout (or its kernel died): the message names the notebook, the cell and its first
    line."""


def _seconds(execution: dict) -> float | None:
    """A cell's recorded execution time from nbclient's ``metadata.execution`` timestamps (None: not recorded)."""
    try:
        start = datetime.fromisoformat(execution["iopub.execute_input"].replace("Z", "+00:00"))
        end = datetime.fromisoformat(execution["shell.execute_reply"].replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds()


def recorded_seconds(nb) -> dict[int, float]:
    """``{cell index: seconds}`` of a notebook's recorded execution (code cells with both timestamps)."""
    out = {}
    for i, cell in enumerate(nb.cells):
        s = _seconds(cell.get("metadata", {}).get("execution", {})) if cell.cell_type == "code" else None
        if s is not None:
            out[i] = s
    return out


def cell_timeout(nb_or_path) -> int:
    """The per-cell timeout (seconds) of a notebook: ``max(FLOOR, FACTOR x its longest recorded cell)``."""
    nb = nbformat.read(str(nb_or_path), as_version=4) if isinstance(nb_or_path, (str, Path)) else nb_or_path
    longest = max(recorded_seconds(nb).values(), default=0.0)
    return int(max(FLOOR, math.ceil(FACTOR * longest)))


def first_line(source: str) -> str:
    """The first non-blank, non-marker line of a cell (``# NBVAL_...`` and magics skipped), for messages."""
    lines = [ln.strip() for ln in source.splitlines() if ln.strip()]
    body = [ln for ln in lines if not ln.startswith(("# NBVAL", "%"))]
    line = (body or lines or [""])[0]
    return line if len(line) <= 100 else line[:97] + "..."


def describe(path, index: int, source: str) -> str:
    """``'<path>, cell <index> (<first line>)'``: how every execution path names a cell."""
    return f"{path}, cell {index} ({first_line(source)!r})"


def execute(nb, *, path, cwd, timeout: int | None = None, kernel: str | None = None):
    """Execute notebook ``nb`` (read from ``path``) in folder ``cwd``; returns it with its outputs.

    ``timeout`` (seconds per cell) defaults to :func:`cell_timeout` of the notebook as read, before execution;
    ``kernel`` to the notebook's own kernelspec (the chapters ask for the project's kernel, ``make setup``).
    Raises :class:`CellStall` when a cell runs past it or the kernel dies, naming the cell; a cell that raises
    gives nbclient's ``CellExecutionError`` (its message holds the traceback). The kernel is shut down in every
    case. Widget state is stored in the notebook's metadata, as the rendered book needs (nbclient's output-widget
    hook also fails without it)."""
    timeout = cell_timeout(nb) if timeout is None else int(timeout)
    kernel = kernel or nb.metadata.get("kernelspec", {}).get("name") or "python3"  # the chapters: the project's
    current = {"index": -1}
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, store_widget_state=True,
                            record_timing=True, resources={"metadata": {"path": str(Path(cwd).resolve())}},
                            on_cell_start=lambda cell, cell_index: current.update(index=cell_index))
    try:
        client.execute()
    except CellTimeoutError as e:
        i = current["index"]
        raise CellStall(f"{describe(path, i, nb.cells[i].source)}: no reply after {timeout} s, the per-cell "
                        f"timeout (a stalled kernel or a cell that never ends); the kernel was shut down") from e
    except CellExecutionError:
        raise
    except (DeadKernelError, Exception) as e:  # noqa: BLE001 - the kernel or its channels broke: name the cell
        i = current["index"]
        raise CellStall(f"{describe(path, i, nb.cells[i].source)}: the kernel failed "
                        f"({type(e).__name__}: {e})") from e
    return nb
