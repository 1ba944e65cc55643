"""Project hygiene: the conda shell and pyproject agree; cv2 is the contrib build."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_pins():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = data["project"]
    reqs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs += extra
    return {re.split(r"[=<>!~]", r)[0].strip().lower(): r.replace(" ", "") for r in reqs}


def _env_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    pins = [p for p in pip if not p.startswith("-e")]
    return {re.split(r"[=<>!~]", p)[0].strip().lower(): p.replace(" ", "") for p in pins}


def test_environment_yml_agrees_with_pyproject():
    assert _pyproject_pins() == _env_pins()


def test_every_pin_is_exact():
    for name, req in _pyproject_pins().items():
        assert "==" in req, f"{name} is not pinned exactly: {req}"


def test_no_plain_opencv():
    names = set(_pyproject_pins())
    assert "opencv-python" not in names and "opencv-python-headless" not in names
    assert "opencv-contrib-python-headless" in names


def test_cv2_has_tvl1():
    import cv2

    assert hasattr(cv2, "optflow") and hasattr(cv2.optflow, "DualTVL1OpticalFlow_create")


#: names of notes outside the repository (spelt in pieces, so that this file does not name them itself)
OUTSIDE_NOTES = ("DESIGN" + ".md", "PAPER_FACTS" + ".md", "../" + "shared")


def test_no_reference_to_files_outside_the_repository():
    """A reader can follow every reference: cite the paper or a chapter, not notes that aren't in the repository."""
    bad = []
    for folder in ("twostream_lib", "book", "book_tests", "benchmarks", "tools", "tests", "data_scripts", "configs"):
        for p in (ROOT / folder).rglob("*"):
            if p.suffix in (".py", ".md", ".ipynb", ".yaml", ".sh"):
                text = p.read_text(errors="ignore")
                bad += [f"{p.relative_to(ROOT)}: {w}" for w in OUTSIDE_NOTES if w in text]
    assert not bad, bad


def test_benchmark_datasets_are_valid_splits(tmp_path):
    """benchmarks/run.py's miniature UCF-101 roots parse as real splits (no video on both sides), also with one
    video, so `make bench` runs against the same split checks as the library."""
    import importlib.util
    import sys

    from twostream_lib.splits import load_split

    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    for n in (1, 3):
        root, vids = bench.make_mini_ucf(tmp_path / f"ucf{n}", "tiny", n, 4)
        assert len(vids) == n and all((root / v).is_file() for v in vids)
        for k in (1, 2, 3):
            s = load_split("ucf101", root, k)
            assert s.train and s.test and not {v for v, _ in s.train} & {v for v, _ in s.test}
