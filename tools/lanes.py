"""Run the chapters two at a time, one core each, in the order their runs need: ``make test``, ``make
notebook-test``, ``make execute`` and ``make seeds`` go through here.

On 2 cores one chapter leaves a core idle part of the time: a training step builds its samples in Python (one
core) before the net runs on two, and a notebook's start, plots and tables are one core too. Two chapters side by
side, each with one torch thread (``OMP_NUM_THREADS=1``, which :func:`twostream_lib.runtime.set_cpu_threads`
honours), use it. Measured on this project's 2-core machine: every chapter and both rehearsals in 1200 s, against
1469 s one after the other; the gain is smaller than the idle core suggests because the two cores contend (each
one-thread chapter ran 1.6-1.8x slower than the same chapter alone on two threads). Every chapter still runs exactly
as typed; only the thread count differs from a
lone execution, and with it the float rounding -- so the committed outputs are executed the same way
(``make execute``), and a fresh clone's ``make test`` on this kind of machine recomputes the same numbers.

A chapter starts once the chapters whose runs it reuses are done (:data:`NEEDS`: chapter 6 fuses the runs of
chapters 3-5; chapter 8 and the intro read the scorecard they write). Chapter 5 fine-tunes chapter 4's temporal net
and may run beside chapter 4: both call ``train(..., wait=...)`` for that run, so whichever gets there first trains
it and the other waits for it, then reuses it (a run folder is never trained by two processes,
:class:`twostream_lib.files.FolderLock`). Jobs start in :data:`ORDER` (the longest chain first).

    python tools/lanes.py test [--rehearsals]   nbval on each chapter (+ make test-real-branch / test-gpu-profile)
    python tools/lanes.py execute [CHAPTER ...] execute and write back in place (tools/execute_notebook.py)
    python tools/lanes.py seeds --seeds 1 2     chapters 3-6 with other seeds, one seed per lane (tools/seed_runs.py)

Output lines carry their job's name; the first failure stops the other jobs; a table of the jobs' times ends it.
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"

#: chapter -> the chapters whose runs (or scorecard files) it reads, which must finish first
NEEDS: dict[str, list[str]] = {
    "01_videos": [], "02_flow": [], "03_spatial": [], "04_temporal": [],
    "05_multitask": [],  # fine-tunes chapter 4's temporal run: whichever trains it first, the other waits for it
    "06_fusion": ["03_spatial", "04_temporal", "05_multitask"],
    "07_scaling": [],
    "08_reproduced": ["03_spatial", "04_temporal", "05_multitask", "06_fusion"],
    "intro": ["01_videos", "02_flow", "03_spatial", "04_temporal", "05_multitask", "06_fusion", "07_scaling",
              "08_reproduced"],
}
#: start order among the jobs that may start: the longest chain (4 -> 5 -> 6) first, short chapters as fillers
ORDER = ["04_temporal", "03_spatial", "05_multitask", "rehearsal-real", "rehearsal-gpu-profile", "02_flow",
         "07_scaling", "01_videos", "06_fusion", "08_reproduced", "intro"]


@dataclass
class Job:
    name: str
    argv: list[str]
    needs: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    pump: threading.Thread | None = None
    started: float = 0.0
    seconds: float | None = None
    rc: int | None = None


def _pump(job: Job) -> None:
    for line in job.proc.stdout:
        sys.stdout.write(f"[{job.name}] {line}")
        sys.stdout.flush()


def _start(job: Job, threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    print(f"[lanes] start {job.name}: {shlex.join(job.argv)}", flush=True)
    job.started = time.perf_counter()
    job.proc = subprocess.Popen(job.argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, start_new_session=True)
    job.pump = threading.Thread(target=_pump, args=(job,), daemon=True)
    job.pump.start()


def _stop(job: Job) -> None:
    if job.proc is not None and job.proc.poll() is None:
        try:
            os.killpg(job.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def run_jobs(jobs: list[Job], slots: int = 2, threads: int = 1, poll: float = 0.5) -> int:
    """Run ``jobs`` at most ``slots`` at a time, each after the jobs it ``needs`` (names of other jobs in ``jobs``;
    needs outside them are taken as done), in list order among those ready. Returns 0, or 1 at the first failure
    (the running jobs are stopped, the waiting ones never start)."""
    names = {j.name for j in jobs}
    waiting, running, done = list(jobs), [], set()
    failed = None
    try:
        while (waiting or running) and failed is None:
            for j in list(running):
                if j.proc.poll() is not None:
                    j.rc, j.seconds = j.proc.returncode, time.perf_counter() - j.started
                    j.pump.join(timeout=10)  # its last lines before its verdict
                    running.remove(j)
                    print(f"[lanes] {j.name}: {'passed' if j.rc == 0 else f'FAILED (exit {j.rc})'} in "
                          f"{j.seconds:.0f} s", flush=True)
                    if j.rc != 0:
                        failed = j
                    done.add(j.name)
            ready = [j for j in waiting if all(n in done or n not in names for n in j.needs)]
            while failed is None and ready and len(running) < slots:
                j = ready.pop(0)
                waiting.remove(j)
                _start(j, threads)
                running.append(j)
            if not ready and not running and waiting and failed is None:
                raise RuntimeError(f"jobs that can never start: {[j.name for j in waiting]}")
            time.sleep(poll)
    finally:
        for j in running:
            _stop(j)
    print("\n[lanes] job                     seconds  result")
    for j in jobs:
        res = "not started" if j.proc is None else ("stopped" if j.rc is None else ("passed" if j.rc == 0 else
                                                                                     f"exit {j.rc}"))
        print(f"[lanes] {j.name:22s} {'' if j.seconds is None else f'{j.seconds:7.0f}':>8s}  {res}")
    return 1 if failed is not None else 0


def _rank(name: str) -> int:
    return ORDER.index(name) if name in ORDER else len(ORDER)


def chapter_jobs(mode: str, chapters: list[str], pytest_args: list[str] = ()) -> list[Job]:
    """One job per chapter: nbval (``mode="test"``) or an in-place execution (``mode="execute"``)."""
    py = sys.executable
    jobs = []
    for name in sorted(chapters, key=_rank):
        nb = f"book/{name}.ipynb"
        argv = ([py, "-m", "pytest", "--nbval-lax", nb, "-q", "-p", "no:cacheprovider", *pytest_args]
                if mode == "test" else [py, "tools/execute_notebook.py", nb])
        jobs.append(Job(name, argv, NEEDS.get(name, [])))
    return jobs


def rehearsal_jobs() -> list[Job]:
    """``make test-real-branch`` and ``make test-gpu-profile`` (one after the other: they share their tiny data)."""
    py = sys.executable
    return [Job("rehearsal-real", [py, "tools/real_branch.py", "--mode", "real"]),
            Job("rehearsal-gpu-profile", [py, "tools/real_branch.py", "--mode", "gpu-profile"], ["rehearsal-real"])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["test", "execute", "seeds"])
    ap.add_argument("chapters", nargs="*", help="chapter names (default: every book/*.ipynb)")
    ap.add_argument("--rehearsals", action="store_true", help="test: the real-data and gpu-profile rehearsals too")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="seeds: the seeds, one lane each")
    ap.add_argument("--slots", type=int, default=2, help="jobs at a time (default 2)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per job (default: cores // slots)")
    ap.add_argument("--pytest-args", default="", help="test: extra pytest arguments, one string")
    a = ap.parse_args(argv)
    threads = a.threads or max(1, (os.cpu_count() or 1) // a.slots)
    chapters = a.chapters or sorted(p.stem for p in BOOK.glob("*.ipynb"))
    unknown = [c for c in chapters if not (BOOK / f"{c}.ipynb").is_file()]
    if unknown:
        ap.error(f"no such chapter in {BOOK}: {', '.join(unknown)}")
    if a.mode == "seeds":
        jobs = [Job(f"seed{s}", [sys.executable, "tools/seed_runs.py", "--seeds", str(s)]) for s in a.seeds]
    else:
        jobs = chapter_jobs(a.mode, chapters, shlex.split(a.pytest_args))
        if a.mode == "test" and a.rehearsals:
            jobs = sorted(jobs + rehearsal_jobs(), key=lambda j: _rank(j.name))
    return run_jobs(jobs, slots=a.slots, threads=threads)


if __name__ == "__main__":
    sys.exit(main())
