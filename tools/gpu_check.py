"""``make gpu-check``: the whole GPU path in one command, on a machine with one CUDA GPU (about 8 minutes).

    python tools/gpu_check.py [--skip tests,bench,chapters] [--data data] [--python PY]

1. **tests** — the unit tests with CUDA variants (``pytest -m cuda``): bf16 autocast, channels_last and
   ``torch.compile`` training steps, DDP with NCCL on one GPU (torchrun), the device-side loader against the CPU
   loader, TV-L1 on CUDA against the CPU.
2. **bench** — the GPU section of the benchmarks (``benchmarks/run.py --sections gpu``): CNN-M-2048 training
   samples/s at 224, batch 256 (fp32, bf16, channels_last, compile), loader samples/s (CPU workers vs the device
   path), TV-L1 pairs/s; written into BENCHMARKS.md.
3. **chapters** — chapters 3 and 4 executed through nbval with ``DEVICE="cuda"`` on the lab ``small`` data
   (copies of the notebooks with that parameter changed; the committed notebooks are not touched).

Without CUDA it stops at once with exit status 1 and says so, before it builds anything; with CUDA it makes the lab
``small`` data first if the chapters step runs (``make lab``, quick when present). Every step is timed; a summary
table ends the run; the exit status is non-zero if any step failed. Notebook cells get the chapters' per-cell
timeouts (book/conftest.py), so a stalled cell fails the step within minutes, named.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from param_notebook import with_parameters  # noqa: E402

STEPS = {  # name: (what, expected minutes on one H100/H200-class GPU)
    "tests": ("unit tests with CUDA variants (pytest -m cuda)", 2.0),
    "bench": ("GPU benchmark section -> BENCHMARKS.md", 3.0),
    "chapters": ("chapters 3 and 4 through nbval with DEVICE='cuda' (lab small)", 3.0),
}
CHAPTERS = ("03_spatial.ipynb", "04_temporal.ipynb")


def cuda_device(python: str) -> str | None:
    """The name of the first CUDA GPU ``python``'s torch sees, or None."""
    code = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip() or None


def run(cmd: list[str], env: dict | None = None) -> int:
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def step_tests(python: str, data: Path) -> int:
    return run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", "tests/"])


def step_bench(python: str, data: Path) -> int:
    return run([python, "benchmarks/run.py", "--sections", "gpu"])


def step_chapters(python: str, data: Path) -> int:
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        copies = [str(with_parameters(ROOT / "book" / name, ROOT / "book" / f"_gpu_check_{name}",
                                      {"DEVICE": '"cuda"', "DATA_DIR": repr(str(data.resolve())),
                                       "RUNS_DIR": repr(str(Path(tmp) / "runs")),
                                       "SCORECARD_DIR": repr(str(Path(tmp) / "scorecard"))}))
                  for name in CHAPTERS]  # in book/, where the notebooks run (relative paths, the kernel's cwd)
        try:
            return run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", *copies])
        finally:
            for c in copies:
                Path(c).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip", default="", help="comma-separated steps to skip: " + ", ".join(STEPS))
    ap.add_argument("--data", type=Path, default=ROOT / "data", help="lab data folder (make lab)")
    ap.add_argument("--python", default=sys.executable, help="the Python with torch (CUDA) and the test tools")
    a = ap.parse_args(argv)
    skip = {s for s in a.skip.split(",") if s}
    todo = [s for s in STEPS if s not in skip]
    print("gpu-check will run, in order:")
    for s in todo:
        print(f"  {s:9s} {STEPS[s][0]} (~{STEPS[s][1]:.0f} min)")
    print(f"expected: ~{sum(STEPS[s][1] for s in todo):.0f} minutes on one H100/H200-class GPU", flush=True)
    gpu = cuda_device(a.python)
    if gpu is None:
        print(f"gpu-check: FAILED: no CUDA GPU is visible to {a.python} (torch.cuda.is_available() is False); "
              "this check needs one GPU", file=sys.stderr)
        return 1
    print(f"GPU: {gpu}", flush=True)
    if "chapters" in todo and run(["make", "--no-print-directory", "lab", "SCALE=small", f"DATA={a.data}"]) != 0:
        print("gpu-check: FAILED: making the lab data (make lab) failed", file=sys.stderr)
        return 1
    results = []
    for s in todo:
        t0 = time.perf_counter()
        rc = globals()[f"step_{s}"](a.python, a.data)
        results.append((s, rc, time.perf_counter() - t0))
    print("\n| step | result | minutes |\n|---|---|---|")
    for s, rc, dt in results:
        print(f"| {s} | {'ok' if rc == 0 else f'FAILED (exit {rc})'} | {dt / 60:.1f} |")
    return 0 if all(rc == 0 for _, rc, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
