"""benchmarks/: one module per BENCHMARKS.md section, no import cycle among them, a working driver, and every
section's ``render`` turning a small fake result into its markdown table (no benchmark is run here)."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SECTION_MODULES = ("flow_bench", "tvl1_bench", "loader_bench", "train_bench", "lrn_bench", "memfmt_bench",
                   "e2e_bench", "gpu_bench", "bottleneck")


def local_imports(path: Path) -> set[str]:
    """The benchmarks/ modules that ``path`` imports (benchmarks/ is not a package: its modules are siblings)."""
    own = {p.stem for p in BENCH.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & own - {path.stem}


def test_no_import_cycle_among_benchmark_modules():
    graph = {p.stem: local_imports(p) for p in BENCH.glob("*.py")}
    assert set(SECTION_MODULES) | {"common", "run"} <= set(graph)
    assert not graph["common"], f"common.py imports {graph['common']}: every section imports it, not the reverse"
    assert not any("run" in deps for deps in graph.values()), graph  # the driver is imported by nobody
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(path + [node, dep])
            if dep not in state:
                visit(dep, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_run_py_help_works():
    out = subprocess.run([sys.executable, str(BENCH / "run.py"), "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    for option in ("--quick", "--sections", "--gpu", "--out"):
        assert option in out.stdout


@pytest.fixture(scope="module")
def bench(request):
    sys.path.insert(0, str(BENCH))
    request.addfinalizer(lambda: sys.path.remove(str(BENCH)))
    return {name: importlib.import_module(name) for name in SECTION_MODULES + ("common",)}


LOADER_ROW = {"input": "temporal 224 (L=10)", "frame": "256x341", "key": "224", "stream": "temporal", "files": 9,
              "rates": {0: 110.0, 2: 150.0}, "naive": 100.0, "memory": 140.0}
FAKE = {
    "flow": {"rows": [{"size": "UCF 240x320", "method": m, "pairs": 4, "clip": "v_A_g01_c01.avi",
                       "bare_pairs_s": r, "ours_pairs_s": 0.9 * r, "ratio": 1.1, "h": 240, "w": 320}
                      for m, r in (("tvl1", 2.5), ("dis", 180.0))],
             "scaling": [{"workers": 1, "videos_s": 3.0, "pairs_s": 21.0, "speedup": 1.0},
                         {"workers": 2, "videos_s": 5.5, "pairs_s": 39.0, "speedup": 1.8}],
             "scaling_method": "tvl1", "scaling_videos": 8, "scaling_frames": 8, "repeats": 3},
    "tvl1": {"rows": [{"size": "96x128", "batch": 1, "pairs_per_s": 9.0, "opencv_pairs_per_s": 20.0,
                       "speedup": 0.45, "iters_per_warp": 20.5, "steps_per_warp": 20.5}],
             "accuracy": [{"source": "lab clips 96x128", "pairs": 8, "epe_vs_opencv": 0.004,
                           "epe_vs_opencv_worst_pair": 0.02, "uint8_within_1": 0.9997, "epe_gt_ours": 0.13,
                           "epe_gt_opencv": 0.13}]},
    "loader": {"rows": [LOADER_ROW, {**LOADER_ROW, "input": "spatial 224", "stream": "spatial"}],
               "workers": [0, 2], "batch": 32, "repeats": 3,
               "device_cpu": [{"stream": "temporal", "batch": 64, "samples_s": 160.0,
                               "stage_s_per_batch": {"read": 0.01, "decode": 0.1, "process": 0.2}}]},
    "train": {"rows": [{"case": "temporal lab 80, width 0.25, batch 32", "batch": 32, "bare": 0.06, "step": 0.062,
                        "loader": {0: {"per_it": 0.08, "first": 0.1}, 1: {"per_it": 0.1, "first": 0.3}},
                        "loader_fewer_threads": {"threads": 1, "per_it": 0.107},
                        "train": {"per_it": 0.104, "wall": 3.0, "iters": 24}, "key": "lab",
                        "stream": "temporal", "iters": 8}], "repeats": 3, "threads": 2},
    "lrn": {"rows": [{"case": "lab norm2", "shape": (32, 64, 8, 8), "err": 1e-7, "fwd_torch": 0.0028,
                      "fwd_ours": 0.001, "both_torch": 0.0069, "both_ours": 0.0025}],
            "steps": [{"case": "lab spatial net", "torch": 0.097, "ours": 0.061}], "n": 10, "repeats": 3},
    "memfmt": {"rows": [{"case": "lab spatial", "batch": 32, "views": 250, "err": 1e-6, "step_nchw": 0.039,
                         "step_nhwc": 0.031, "test_nchw": 0.2, "test_nhwc": 0.12}], "repeats": 3},
    "e2e": {"scale": "tiny", "iters": 10, "frames": 5, "crops": 1, "why": "",
            "stages": [{"stage": "prepare (DIS)", "s": 2.0, "note": "ok"}], "commands": ["python -m twostream_lib"],
            "accuracy": {"spatial": 0.1, "temporal": 0.2, "fused": 0.25, "videos": 10, "classes": 4}},
    "gpu": {"rows": [{"stream": "temporal", "variant": "bf16 AMP", "samples_s": 3000.0, "warm_s": 2.0,
                      "mem_gib": 20.0}], "loader": {"spatial": 400.0, "temporal": 150.0}, "batch": 256,
            "iters": 20, "repeats": 3, "tvl1": [], "device_loader": [], "device": "Fake GPU"},
}
# (module, section key, header of its section, a cell its table must show)
CASES = [("flow_bench", "flow", "## 1. Optical flow", "| UCF 240x320 | tvl1 | 4 | 2.50 |"),
         ("tvl1_bench", "tvl1", "## 1b. TV-L1", "| 96x128 | 1 | 9.00 | 20.0 | 0.45x |"),
         ("loader_bench", "loader", "## 2. Data loader", "| temporal 224 (L=10) | 256x341 | 100 |"),
         ("train_bench", "train", "## 3. Training step", "| temporal lab 80, width 0.25, batch 32 | 0.060 (533) |"),
         ("lrn_bench", "lrn", "## 3b. Local response", "| lab norm2 | 32 x 64 x 8 x 8 | 2.80 | 1.00 |"),
         ("memfmt_bench", "memfmt", "## 3c. Memory format", "| lab spatial | 32: 0.039 | 0.031 | 1.26x |"),
         ("e2e_bench", "e2e", "## 4. End to end", "| prepare (DIS) | 2.0 | ok |"),
         ("gpu_bench", "gpu", "## 5. GPU", "| temporal | bf16 AMP | 3,000 | 2.0 | 20.0 |")]


@pytest.mark.parametrize("module,key,header,cell", CASES, ids=[c[0] for c in CASES])
def test_each_section_renders_its_table(bench, module, key, header, cell):
    md = bench[module].render(FAKE[key])
    assert md.startswith(header), md[:200]
    assert cell in md, md


def test_gpu_section_without_a_gpu_says_why(bench):
    assert "No GPU was available in this session (no CUDA)" in bench["gpu_bench"].render({"skipped": "no CUDA"})


def test_bottleneck_from_flow_and_loader(bench):
    results = {"flow": FAKE["flow"], "loader": {**FAKE["loader"], "rows": [
        {**LOADER_ROW, "rates": {0: 143.0}}, {**LOADER_ROW, "stream": "spatial", "rates": {0: 328.0}}]}}
    md = bench["bottleneck"].render(results)
    assert md.startswith("## 6. Bottleneck") and "2.25 pairs/s per core" in md
    assert "(needs the `flow` and `loader` sections.)" in bench["bottleneck"].render({})


def test_merged_report_keeps_the_provenance_of_sections_kept_twice(bench):
    """A section the old report had itself kept from a yet earlier one is said to come from that earlier report,
    not from the old one."""
    old = ("# Benchmarks\n\nGenerated by `x` on 2026-01-01.\n\nSections 1, 4 are kept from an earlier report "
           "(generated by `w` (`make bench`) on 2025-01-01; CPU: Intel(R) Xeon(R)).\n\n## Machine\n\n| CPU | Old |\n\n"
           "## 1. Flow\n\nold flow\n\n## 2. Loader\n\nold loader\n\n## 3. Train\n\nold train\n\n## 4. E2E\n\nold e2e\n")
    new = "# Benchmarks\n\nGenerated by `y` on 2026-02-02.\n\n## Machine\n\n| CPU | New |\n\n## 2. Loader\n\nnew\n"
    out = bench["common"].merge_markdown(old, new, cpu_ran=True)
    assert ("Sections 1, 4 are kept from an earlier report (generated by `w` (`make bench`) on 2025-01-01; CPU: "
            "Intel(R) Xeon(R)).") in out
    assert "Section 3 is kept from an earlier report (generated by `x` on 2026-01-01; CPU: Old)." in out


def test_results_json_keeps_the_sections_that_did_not_run(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        run = importlib.import_module("run")
    finally:
        sys.path.remove(str(BENCH))
    path = tmp_path / "results.json"
    run.merge_results(path, {"flow": {"rows": [1]}, "loader": {"rows": [2]}}, {"cpu": "A"})
    merged = run.merge_results(path, {"loader": {"rows": [3]}}, {"cpu": "B"})
    assert merged["flow"] == {"rows": [1]} and merged["loader"] == {"rows": [3]}
    assert merged["machines"] == {"flow": {"cpu": "A"}, "loader": {"cpu": "B"}}
