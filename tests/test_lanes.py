"""tools/lanes.py: chapters two at a time, each after the chapters it needs, one torch thread each."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import lanes  # noqa: E402

from twostream_lib.runtime import set_cpu_threads  # noqa: E402

PY = sys.executable


def _job(name, code, needs=()):
    return lanes.Job(name, [PY, "-c", code], list(needs))


def test_a_job_starts_only_after_the_jobs_it_needs(tmp_path):
    log = tmp_path / "log"
    w = lambda s: f"import time; time.sleep({s}); open({str(log)!r}, 'a').write('{{}}\\n'.format(__import__('os').environ['OMP_NUM_THREADS']))"
    jobs = [_job("slow", w(0.6)), _job("fast", w(0.0)), _job("after-slow", w(0.0), ["slow"])]
    assert lanes.run_jobs(jobs, slots=2, threads=1, poll=0.05) == 0
    assert [j.rc for j in jobs] == [0, 0, 0]
    slow, fast, after = jobs
    assert after.started >= slow.started + slow.seconds - 0.05  # never beside the job it needs
    assert log.read_text().split() == ["1", "1", "1"]  # every job got one thread


def test_the_first_failure_stops_the_rest(tmp_path):
    jobs = [_job("long", "import time; time.sleep(30)"), _job("fails", "raise SystemExit(3)"),
            _job("later", "pass", ["fails"])]
    assert lanes.run_jobs(jobs, slots=2, threads=1, poll=0.05) == 1
    assert jobs[1].rc == 3
    assert jobs[0].rc is None and jobs[0].proc.wait(10) != 0  # stopped, not waited for
    assert jobs[2].proc is None  # never started


def test_every_chapter_needs_only_chapters_that_exist_and_runs_in_order():
    book = Path(lanes.BOOK)
    chapters = sorted(p.stem for p in book.glob("*.ipynb"))
    assert sorted(lanes.NEEDS) == chapters, "a new chapter needs an entry in tools/lanes.py NEEDS"
    for name, needs in lanes.NEEDS.items():
        assert set(needs) <= set(chapters) - {name}
    jobs = lanes.chapter_jobs("test", chapters)
    pos = {j.name: i for i, j in enumerate(jobs)}
    assert all(pos[n] < pos[j.name] for j in jobs for n in j.needs)


def test_omp_num_threads_caps_the_cpu_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_cpu_threads(torch.device("cpu"), workers=0) == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        assert set_cpu_threads(torch.device("cpu"), workers=0) == max(1, (os.cpu_count() or 1))
    finally:
        torch.set_num_threads(before)


def test_a_second_holder_waits_for_the_lock_or_fails_naming_the_first(tmp_path):
    from twostream_lib.files import FolderLock, LockError
    holder = subprocess.Popen([PY, "-c", f"import sys, time; sys.path.insert(0, {str(Path(__file__).parents[1])!r});"
                               f"from twostream_lib.files import FolderLock\n"
                               f"with FolderLock({str(tmp_path)!r}, 'cache'):\n    print('held', flush=True); time.sleep(1.0)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LockError, match="in use by process"):
        with FolderLock(tmp_path, "cache"):
            pass
    t0 = time.monotonic()
    with FolderLock(tmp_path, "cache", wait=30):  # the chapters' set-up: wait for the other chapter
        waited = time.monotonic() - t0
    assert 0.2 < waited < 10
    holder.wait(10)
