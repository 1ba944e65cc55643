"""Execute chapters again and again, with or without CPU load, and record which cell stalls (if any).

    .venv/bin/python tools/stall_harness.py --chapters 02_flow --data real --runs 40 --hogs 2 [--timeout 120]

Each run executes a parametrised copy of a chapter (``--data lab``: the lab ``small`` data in ``data/``;
``--data real``: the miniature UCF-101/HMDB-51 of ``tools/real_branch.py``) through :func:`nbexec.execute`, in a
working folder of its own (the book's scorecard files are not touched). ``--hogs K`` keeps K busy-looping processes
running meanwhile. A run whose cell passes the per-cell timeout is a *stall*, and one whose cell started more than
10 s after the previous cell's reply is *delayed* (the client's and the kernel's share of that wait are recorded
apart); the harness records the cell index, its first line and the versions of the kernel stack, and goes on with
the next run. ``--without-wakeup-fix`` runs nbclient as shipped: the control for ``nbexec.install_wakeup_fix``.
It ends with one table row per run (``--out FILE`` writes it as markdown) and exits 1 if any run was not ok.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import nbformat
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbexec import CellStall, cell_timeout, execute, first_line, recorded_seconds, waits  # noqa: E402
from real_branch import CHAPTERS, chapter_copy, miniature  # noqa: E402

STACK = ("ipykernel", "jupyter_client", "nbclient", "pyzmq", "tornado")


def _hog() -> None:  # pragma: no cover - killed by the harness
    while True:
        pass


def one_run(name: str, data: str, work: Path, data_dir: Path, timeout: int | None, fix: bool = True) -> dict:
    """Execute chapter ``name`` once; returns a row: status (ok | STALL | FAILED), seconds, slowest cell, detail."""
    src = ROOT / "book" / f"{name}.ipynb"
    copy = chapter_copy(name, data_dir, work, CHAPTERS[name] if data == "real" else None)
    nb = nbformat.read(str(copy), as_version=4)
    t0 = time.perf_counter()
    row = {"chapter": name, "status": "ok", "detail": ""}
    try:
        execute(nb, path=src, cwd=copy.parent, timeout=timeout, wakeup_fix=fix)
    except CellStall as e:
        row.update(status="STALL", detail=str(e))
    except CellExecutionError as e:
        row.update(status="FAILED", detail=str(e).strip().splitlines()[-1][:200])
    row["seconds"] = time.perf_counter() - t0
    secs = recorded_seconds(nb)
    slow = max(secs, key=secs.get, default=None)
    row["slowest"] = f"cell {slow}: {secs[slow]:.1f} s" if slow is not None else "-"
    gaps = waits(nb)
    late = max(gaps, key=lambda i: sum(gaps[i]), default=None)
    row["wait"] = f"cell {late}: client {gaps[late][0]:.1f} s, kernel {gaps[late][1]:.1f} s" if late is not None else "-"
    if late is not None and sum(gaps[late]) > 10 and row["status"] == "ok":  # a request that sat somewhere
        row.update(status="DELAYED", detail=f"cell {late} ({first_line(nb.cells[late].source)!r}) started "
                                            f"{sum(gaps[late]):.0f} s after the previous reply")
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chapters", default="02_flow", help="comma-separated chapter names, run in turn")
    ap.add_argument("--data", choices=("lab", "real"), default="lab")
    ap.add_argument("--runs", type=int, default=10, help="executions of each chapter")
    ap.add_argument("--hogs", type=int, default=0, help="busy-looping processes kept running meanwhile")
    ap.add_argument("--timeout", type=int, default=None,
                    help="per-cell timeout in seconds (default: nbexec.cell_timeout of each chapter)")
    ap.add_argument("--without-wakeup-fix", action="store_true",
                    help="control runs: nbclient as shipped (nbexec.install_wakeup_fix not applied)")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    a = ap.parse_args(argv)
    names = a.chapters.split(",")
    unknown = [n for n in names if n not in CHAPTERS]
    if unknown:
        ap.error(f"unknown chapter(s) {unknown}; known: {', '.join(CHAPTERS)}")
    work = (a.work or Path(tempfile.mkdtemp(prefix="stall-harness-"))).resolve()
    data_dir = miniature(work / "data") if a.data == "real" else ROOT / "data"
    stack = ", ".join(f"{p} {version(p)}" for p in STACK) + (
        "; nbclient as shipped (no wake-up fix)" if a.without_wakeup_fix else "; nbexec's wake-up fix")
    print(f"stall harness: {', '.join(names)} x {a.runs} on {a.data} data, {a.hogs} CPU hog(s); {stack}", flush=True)
    hogs = [mp.Process(target=_hog, daemon=True) for _ in range(a.hogs)]
    for h in hogs:
        h.start()
    rows, t0 = [], time.perf_counter()
    try:
        for k in range(a.runs):
            for name in names:
                timeout = a.timeout or cell_timeout(ROOT / "book" / f"{name}.ipynb")
                row = one_run(name, a.data, work, data_dir, timeout, not a.without_wakeup_fix) | {
                    "run": k + 1, "timeout": timeout}
                rows.append(row)
                print(f"run {k + 1:3d} {name}: {row['status']} in {row['seconds']:.0f} s (slowest {row['slowest']}, "
                      f"longest wait before a cell: {row['wait']})"
                      + (f" -- {row['detail']}" if row["detail"] else ""), flush=True)
    finally:
        for h in hogs:
            h.kill()
    bad = [r for r in rows if r["status"] != "ok"]
    table = [f"stall harness: {a.data} data, {a.hogs} CPU hog(s), {stack}", "",
             "| run | chapter | status | seconds | per-cell timeout (s) | slowest cell | longest wait before a cell "
             "| detail |", "|---|---|---|---|---|---|---|---|"]
    table += [f"| {r['run']} | {r['chapter']} | {r['status']} | {r['seconds']:.0f} | {r['timeout']} | {r['slowest']} "
              f"| {r['wait']} | {r['detail']} |" for r in rows]
    table += ["", f"{len(rows)} executions in {time.perf_counter() - t0:.0f} s: {len(rows) - len(bad)} ok, "
              f"{sum(r['status'] == 'STALL' for r in rows)} stalled, {sum(r['status'] == 'DELAYED' for r in rows)} delayed "
              f"(a cell started > 10 s after the previous reply), {sum(r['status'] == 'FAILED' for r in rows)} failed"]
    print("\n".join(table[2:]))
    if a.out:
        a.out.write_text("\n".join(table) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
