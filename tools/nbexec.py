"""Executing a notebook without ever hanging: the fix for the stall, one per-cell timeout rule, one executor.

**The stall** (measured by ``tools/stall_harness.py``): a reply or an output reaches the client's shell or IOPub
socket, and pyzmq's asyncio poll misses the socket's wake-up (a zmq socket signals readiness by an edge, not a
level). The message sits there, the kernel idle, until the poll's own timeout fires and its last check finds it: the
cell "hangs" for exactly its timeout (the IOPub reader has none: for ever). :func:`install_wakeup_fix` makes every
nbclient client read its channels in slices of :data:`POLL_SLICE`, so a missed wake-up costs one slice.

**Timeouts.** Every path that executes the chapters (``tools/execute_notebook.py``, ``tools/real_branch.py``,
``tools/seed_runs.py``, ``tools/stall_harness.py``, nbval in ``make test`` through ``book/conftest.py``,
``tools/gpu_check.py`` and the executing book build) takes its per-cell timeout from :func:`cell_timeout`: the
chapter's longest cell as recorded in the committed notebook (nbclient's ``metadata.execution`` timestamps), times
``FACTOR``, and never less than ``FLOOR`` seconds. A cell that runs past it (code that waits for ever, say) fails
within minutes with the notebook, the cell index and the cell's first line named, and the kernel is shut down
whatever happens (nbclient's kernel context).

    from nbexec import execute, cell_timeout
    nb = execute(nb, path=Path("book/02_flow.ipynb"), cwd=Path("book"))
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from queue import Empty
from time import monotonic

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

#: a cell may take this many times the longest cell of its chapter's recorded execution ...
FACTOR = 3
#: ... and never less than this (seconds): kernel start-up, a slower machine, a first import of torch
FLOOR = 300
#: a channel read waits at most this long (seconds) before it looks again (see :func:`install_wakeup_fix`)
POLL_SLICE = 1.0


def _sliced(get_msg_unsliced):
    """``get_msg(timeout)`` of a jupyter_client asyncio channel, waiting in slices of :data:`POLL_SLICE`."""
    async def get_msg(timeout=None):
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            left = POLL_SLICE if deadline is None else max(0.0, min(POLL_SLICE, deadline - monotonic()))
            try:
                return await get_msg_unsliced(timeout=left)
            except Empty:
                if deadline is not None and monotonic() >= deadline:
                    raise
    return get_msg


def install_wakeup_fix() -> None:
    """Make every nbclient ``NotebookClient`` read its shell and IOPub channels in slices of :data:`POLL_SLICE`
    (the stall: see this module's docstring). Idempotent; the book build calls it too (``tools/book_offline.py``)."""
    if getattr(NotebookClient, "_wakeup_fix", False):
        return
    start = NotebookClient.async_start_new_kernel_client

    async def async_start_new_kernel_client(self):
        kc = await start(self)
        for channel in (kc.shell_channel, kc.iopub_channel):
            channel.get_msg = _sliced(channel.get_msg)
        return kc

    NotebookClient.async_start_new_kernel_client = async_start_new_kernel_client
    NotebookClient._wakeup_fix = True


class CellStall(RuntimeError):
    """A cell ran past its timeout (or its kernel died): the message names the notebook, the cell and its first
    line."""


def _stamp(execution: dict, key: str) -> datetime | None:
    """A timestamp of nbclient's ``metadata.execution`` (None: not recorded)."""
    try:
        return datetime.fromisoformat(execution[key].replace("Z", "+00:00"))
    except (KeyError, TypeError, ValueError):
        return None


SENT = "client.execute_request"  # when the client sent a cell's request (metadata.execution; nbexec adds it)


def waits(nb) -> dict[int, tuple[float, float]]:
    """``{cell index: (client, kernel)}`` seconds each code cell of an execution waited before it started: the
    client's, from the previous cell's reply to sending the request, and the kernel's, from the request to its
    ``busy`` (nbclient's timing metadata and :data:`SENT`). A request the kernel sits on shows in the second."""
    out, last = {}, None
    for i, cell in enumerate(nb.cells):
        ex = cell.get("metadata", {}).get("execution", {}) if cell.cell_type == "code" else {}
        sent, start, end = _stamp(ex, SENT), _stamp(ex, "iopub.status.busy"), _stamp(ex, "shell.execute_reply")
        if sent and start and last:
            out[i] = ((sent - last).total_seconds(), (start - sent).total_seconds())
        last = end or last
    return out


def _record_sent(cell, cell_index) -> None:
    cell.metadata.setdefault("execution", {})[SENT] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def recorded_seconds(nb) -> dict[int, float]:
    """``{cell index: seconds}`` of a notebook's recorded execution (code cells with both timestamps)."""
    out = {}
    for i, cell in enumerate(nb.cells):
        ex = cell.get("metadata", {}).get("execution", {}) if cell.cell_type == "code" else {}
        start, end = _stamp(ex, "iopub.execute_input"), _stamp(ex, "shell.execute_reply")
        if start and end:
            out[i] = (end - start).total_seconds()
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
    """``'<path>, cell <index> (<first line>)'``: how every execution path names a cell (index -1: before the first
    cell, while the kernel started)."""
    if index < 0:
        return f"{path}, before its first cell (the kernel starting)"
    return f"{path}, cell {index} ({first_line(source)!r})"


def execute(nb, *, path, cwd, timeout: int | None = None, kernel: str | None = None, wakeup_fix: bool = True):
    """Execute notebook ``nb`` (read from ``path``) in folder ``cwd``; returns it with its outputs.

    ``timeout`` (seconds per cell) defaults to :func:`cell_timeout` of the notebook as read, before execution;
    ``kernel`` to the notebook's own kernelspec (the chapters ask for the project's kernel, ``make setup``).
    Raises :class:`CellStall` when a cell runs past it or the kernel dies, naming the cell; a cell that raises
    gives nbclient's ``CellExecutionError`` (its message holds the traceback). The kernel is shut down in every
    case. Widget state is stored in the notebook's metadata, as the rendered book needs (nbclient's output-widget
    hook also fails without it)."""
    if wakeup_fix:  # False only for tools/stall_harness.py's control runs (a process that never installed it)
        install_wakeup_fix()
    timeout = cell_timeout(nb) if timeout is None else int(timeout)
    kernel = kernel or nb.metadata.get("kernelspec", {}).get("name") or "python3"  # the chapters: the project's
    current = {"index": -1}
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, store_widget_state=True,
                            record_timing=True, resources={"metadata": {"path": str(Path(cwd).resolve())}},
                            on_cell_start=lambda cell, cell_index: current.update(index=cell_index),
                            on_cell_complete=_record_sent)
    try:
        client.execute()
    except CellTimeoutError as e:
        i = current["index"]
        raise CellStall(f"{describe(path, i, nb.cells[i].source)}: no reply after {timeout} s, the per-cell "
                        f"timeout (a stalled kernel or a cell that never ends); the kernel was shut down") from e
    except CellExecutionError:
        raise
    except Exception as e:  # noqa: BLE001 - the kernel died or its channels broke (DeadKernelError, ...): name the cell
        i = current["index"]
        raise CellStall(f"{describe(path, i, nb.cells[i].source)}: the kernel failed "
                        f"({type(e).__name__}: {e})") from e
    return nb
