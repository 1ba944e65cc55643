"""Executing a notebook never hangs: every path that executes the chapters fails fast on a stalled cell, naming
the notebook, the cell index and its first line, and shuts the kernel down (tools/nbexec.py, book/conftest.py)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import execute_notebook  # noqa: E402
import nbexec  # noqa: E402
import real_branch  # noqa: E402
import seed_runs  # noqa: E402

pytestmark = pytest.mark.slow
PARAMS = ('DATA = "lab"\nDATA_DIR = "../data"\nSCALE = None\nDEVICE = "auto"\nSEED = 0\nRUNS_DIR = "runs"\nSCORECARD_DIR = "scorecard"')
#: waits forever, and swallows the interrupt a timeout sends: nbval alone would let this cell pass
STALL = ("import threading  # waits forever\ntry:\n    threading.Event().wait()\n"
         "except KeyboardInterrupt:\n    pass")


def stall_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(PARAMS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# a stalled cell"), params, nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell(STALL), nbformat.v4.new_code_cell("print('never')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def assert_names_the_cell(text: str, name: str = "stall.ipynb") -> None:
    assert name in text and "cell 3" in text and "import threading" in text, text


@pytest.fixture
def short_timeouts(monkeypatch):
    """nbexec's rule with a 3-second floor (the stall notebook records no timings, so the floor is its timeout)."""
    monkeypatch.setattr(nbexec, "FLOOR", 3)


def test_cell_timeout_follows_the_longest_recorded_cell(tmp_path):
    nb = nbformat.read(str(stall_notebook(tmp_path / "stall.ipynb")), as_version=4)
    assert nbexec.cell_timeout(nb) == nbexec.FLOOR  # nothing recorded
    nb.cells[2].metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00.000Z",
                                         "shell.execute_reply": "2026-01-01T00:10:00.500Z"}
    assert nbexec.recorded_seconds(nb) == {2: 600.5}
    assert nbexec.cell_timeout(nb) == 1802  # 3 x 600.5 s, rounded up
    for chapter in sorted((ROOT / "book").glob("0*.ipynb")):  # the committed chapters carry their timings
        assert nbexec.recorded_seconds(nbformat.read(str(chapter), as_version=4)), chapter.name


@pytest.mark.parametrize("name", ["03_spatial", "04_temporal", "05_multitask"])
def test_committed_chapters_record_the_execution_that_trained_their_runs(name):
    """A chapter's per-cell timeout follows its committed execution: executed with its runs reused, its cells
    record seconds, and a fresh clone, which trains every run, would time out. The committed execution must be the
    one whose time the scorecard keeps (book/scorecard/timings.json: the execution that reused the fewest runs)."""
    import json

    nb = nbformat.read(str(ROOT / "book" / f"{name}.ipynb"), as_version=4)
    cells = sum(nbexec.recorded_seconds(nb).values())
    chapter = json.loads((ROOT / "book" / "scorecard" / "timings.json").read_text())[name]["seconds"]
    assert cells >= 0.8 * chapter, (
        f"book/{name}.ipynb records {cells:.0f} s of cells, its recorded execution took {chapter:.0f} s: it was "
        f"executed with its runs reused, so its per-cell timeout ({nbexec.cell_timeout(nb)} s) is too short for a "
        f"fresh clone; execute it from scratch (move runs/small away, then make execute)")


def test_nbexec_names_the_stalled_cell_and_shuts_the_kernel_down(tmp_path, short_timeouts):
    path = stall_notebook(tmp_path / "stall.ipynb")
    t0 = time.perf_counter()
    with pytest.raises(nbexec.CellStall) as e:
        nbexec.execute(nbformat.read(str(path), as_version=4), path=path, cwd=tmp_path)
    assert time.perf_counter() - t0 < 60
    assert_names_the_cell(str(e.value))
    assert "3 s" in str(e.value)
    time.sleep(1)
    kernels = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f", "ipykernel"], capture_output=True, text=True)
    assert kernels.stdout == "", "the kernel is still running"


def test_execute_notebook_fails_fast_and_leaves_the_notebook(tmp_path, short_timeouts, capsys):
    path = stall_notebook(tmp_path / "stall.ipynb")
    before = path.read_bytes()
    assert execute_notebook.main([str(path)]) == 1
    assert_names_the_cell(capsys.readouterr().err)
    assert path.read_bytes() == before  # not written


def test_seed_runs_and_real_branch_fail_fast(tmp_path, short_timeouts, monkeypatch, capsys):
    stall_notebook(tmp_path / "book" / "stall.ipynb")
    monkeypatch.setattr(seed_runs, "REPO", tmp_path)
    assert seed_runs.main(["--seeds", "1", "--chapters", "stall"]) == 1
    assert_names_the_cell(capsys.readouterr().err)
    monkeypatch.setattr(real_branch, "ROOT", tmp_path)
    with pytest.raises(nbexec.CellStall) as e:
        real_branch.run_chapter("stall", "ucf101", tmp_path / "data", tmp_path / "work")
    assert_names_the_cell(str(e.value))


def test_nbval_fails_the_stalled_cell_instead_of_passing_it(tmp_path):
    """nbval interrupts a timed-out cell; one that swallows the interrupt ends 'idle' and nbval passes it and marks
    the rest xfail (a green run). book/conftest.py fails it, named."""
    book = tmp_path / "book"
    stall_notebook(book / "stall.ipynb")
    shutil.copy(ROOT / "book" / "conftest.py", book / "conftest.py")
    shutil.copytree(ROOT / "tools", tmp_path / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
                          "--nbval-cell-timeout", "3", str(book / "stall.ipynb")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert time.perf_counter() - t0 < 120
    assert out.returncode == 1, out.stdout
    assert_names_the_cell(out.stdout)
    assert "1 failed" in out.stdout, out.stdout


def test_a_missed_socket_wake_up_costs_one_slice_not_the_whole_timeout():
    """The stall: a message already in the socket, a poll that missed its wake-up and only finds it when its
    timeout fires. Read in slices (nbexec.install_wakeup_fix), the message is found after one slice."""
    import asyncio
    from queue import Empty

    arrived = time.monotonic()

    async def missing_get_msg(timeout=None):  # finds the waiting message only when a poll's timeout fires
        if timeout:
            await asyncio.sleep(timeout)
        if time.monotonic() - arrived < 0.05:  # (a poll that starts right away finds nothing yet)
            raise Empty
        return {"msg_type": "execute_reply"}

    t0 = time.monotonic()
    assert asyncio.run(nbexec._sliced(missing_get_msg)(timeout=30)) == {"msg_type": "execute_reply"}
    assert time.monotonic() - t0 < 3 * nbexec.POLL_SLICE

    async def empty_get_msg(timeout=None):
        await asyncio.sleep(timeout or 0)
        raise Empty

    t0 = time.monotonic()
    with pytest.raises(Empty):  # no message: the timeout still ends in Empty, on time
        asyncio.run(nbexec._sliced(empty_get_msg)(timeout=1.5))
    assert 1.4 < time.monotonic() - t0 < 4


def test_the_executing_book_build_fails_fast_naming_the_notebook(tmp_path):
    """make book EXECUTE=force: myst-nb executes with the per-cell timeout build_book.py sets, and fails the build."""
    (tmp_path / "_config.yml").write_text(
        'title: stall\nonly_build_toc_files: true\nexecute:\n  execute_notebooks: "off"\n  timeout: 900\n'
        f"sphinx:\n  local_extensions:\n    book_offline: {ROOT / 'tools'}\n"
        "  config:\n    nb_execution_raise_on_error: true\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/stall\n")
    stall_notebook(tmp_path / "book" / "stall.ipynb")
    vendor = tmp_path / "book" / "_static" / "vendor"  # the offline JavaScript, faked: this build never gets there
    for f in ("require.js", "html-manager/embed-amd.js", "mathjax/tex-chtml.js",
              "mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff"):
        (vendor / f).parent.mkdir(parents=True, exist_ok=True)
        (vendor / f).write_text("x")
    versions = re.search(r'^WANT="(.*)"', (ROOT / "tools" / "vendor_js.sh").read_text(), re.M).group(1)
    want = " ".join(re.search(rf"^{v.lstrip('$')}=(\S+)", (ROOT / "tools" / "vendor_js.sh").read_text(), re.M).group(1)
                    for v in versions.split())
    (vendor / ".versions").write_text(want + "\n")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "build_book.py"), "--source", str(tmp_path),
                          "--execute", "force", "--timeout", "5"], capture_output=True, text=True, timeout=300)
    assert time.perf_counter() - t0 < 180
    log = out.stdout + out.stderr
    assert out.returncode != 0, log[-3000:]
    assert "per-cell timeout 5 s" in log and "stall" in log and "import threading" in log, log[-3000:]


def test_gpu_check_without_cuda_refuses_before_building_anything(monkeypatch, capsys):
    import gpu_check

    calls = []
    monkeypatch.setattr(gpu_check, "cuda_device", lambda python: None)
    monkeypatch.setattr(gpu_check, "run", lambda cmd, env=None: calls.append(cmd) or 0)
    t0 = time.perf_counter()
    assert gpu_check.main([]) == 1
    assert time.perf_counter() - t0 < 5 and calls == []  # no `make lab`, no step
    assert "no CUDA GPU" in capsys.readouterr().err
    recipe = re.search(r"^gpu-check:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert recipe.strip().startswith("$(PY) tools/gpu_check.py"), recipe  # the CUDA check comes first
