"""The book's scorecard: what each chapter measured for each claim of the paper it tests.

A chapter, when executed, writes ``book/scorecard/<chapter>.json``: a list of entries ::

    {"id": "t1a_pretrained_vs_scratch", "chapter": "03_spatial", "claim": "...",
     "paper": 0.282, "lab": 0.153, "se": 0.041, "holds": true}

``paper`` and ``lab`` are fractions (the number that decides the claim: an accuracy, or a difference for a "vs"
claim); ``se`` is the lab number's standard error; ``holds`` is computed by the cell that measured it (never
typed). The last page of the book ("What reproduced") reads them all (:func:`load_all`, :func:`table`).

The book's chapters run with seed 0. ``tools/seed_runs.py`` executes the chapters again with other seeds and keeps
their entries in ``scorecard/seeds/<seed>/``: :func:`load_seeds` and :func:`seed_table` show how many training
runs each mark holds in.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from . import viz
from .files import atomic_write_json

__all__ = ["Claim", "write", "load_all", "table", "beats", "record_time", "load_times", "load_seeds", "holds_in",
           "seed_table"]


@dataclass
class Claim:
    """One claim of the paper, as the lab measured it."""

    id: str
    chapter: str
    claim: str
    paper: float | None
    lab: float
    se: float | None
    holds: bool

    def __post_init__(self):
        self.holds = bool(self.holds)
        for k in ("paper", "lab", "se"):
            v = getattr(self, k)
            if v is not None and not math.isfinite(float(v)):
                raise ValueError(f"scorecard {self.id}: {k} is not a finite number: {v}")


def beats(diff: float, se: float, k: float = 2.0) -> bool:
    """A difference ``diff`` counts as shown when it is positive by more than ``k`` standard errors ``se``."""
    return bool(diff > k * se)


def write(chapter: str, claims: list[Claim], folder: str | os.PathLike = "scorecard") -> Path:
    """Write ``folder/<chapter>.json`` (every claim of one chapter; replaces the chapter's previous file)."""
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise ValueError(f"scorecard {chapter}: duplicate ids {ids}")
    return atomic_write_json(Path(folder) / f"{chapter}.json", [asdict(c) for c in claims])


def load_all(folder: str | os.PathLike = "scorecard", profile: str = "cpu") -> list[Claim]:
    """Every chapter's claims, in chapter order, as measured with ``profile`` (``<chapter>.json`` for the CPU
    profile, ``<chapter>.<profile>.json`` for another)."""
    out = []
    for p in sorted(Path(folder).glob("*.json")):
        stem_profile = p.stem.split(".")[1] if "." in p.stem else "cpu"
        if stem_profile == profile and not p.name.startswith("timings"):
            out += [Claim(**d) for d in json.loads(p.read_text())]
    return out


def _timings_path(folder: str | os.PathLike, profile: str) -> Path:
    return Path(folder) / ("timings.json" if profile == "cpu" else f"timings.{profile}.json")


def record_time(chapter: str, seconds: float, folder: str | os.PathLike = "scorecard",
                profile: str = "cpu", reused_runs: int = 0) -> Path:
    """Record how long a chapter took to execute (``timings.json``, or ``timings.<profile>.json``), and how many
    finished runs it reused instead of training.

    What a reader wants to know is what a chapter costs executed from scratch, in order, so an execution that
    reused more runs than the recorded one (a re-execution over finished runs) leaves the record as it is."""
    path = _timings_path(folder, profile)
    times = json.loads(path.read_text()) if path.is_file() else {}
    old = times.get(chapter)
    if isinstance(old, dict) and old["reused_runs"] < reused_runs:
        return path
    times[chapter] = {"seconds": round(float(seconds), 1), "reused_runs": int(reused_runs)}
    return atomic_write_json(path, dict(sorted(times.items())))


def load_times(folder: str | os.PathLike = "scorecard", profile: str = "cpu") -> dict[str, float]:
    """``{chapter: seconds}``: what each chapter took, executed with ``profile`` reusing the fewest runs."""
    path = _timings_path(folder, profile)
    times = json.loads(path.read_text()) if path.is_file() else {}
    return {k: v["seconds"] if isinstance(v, dict) else v for k, v in times.items()}


def table(claims: list[Claim]):
    """The claims as the book shows them (a :func:`twostream_lib.viz.table`): paper beside lab (percent), the lab's
    standard error, ✔ / ✘."""
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    rows = [[c.claim, c.chapter, pct(c.paper), pct(c.lab), "–" if c.se is None else f"{100 * c.se:.1f}",
             "✔" if c.holds else "✘"] for c in claims]
    return viz.table(["claim", "chapter", "paper (%)", "lab (%)", "lab s.e. (points)", "reproduced"], rows)


def load_seeds(folder: str | os.PathLike = "scorecard") -> dict[int, list[Claim]]:
    """``{seed: claims}`` of the executions with other seeds (``folder/seeds/<seed>/``, ``tools/seed_runs.py``)."""
    root = Path(folder) / "seeds"
    dirs = [d for d in root.iterdir() if d.is_dir() and d.name.isdigit()] if root.is_dir() else []
    return {int(d.name): load_all(d) for d in sorted(dirs, key=lambda d: int(d.name))}


def _runs(claims: list[Claim], seeds: dict[int, list[Claim]]) -> dict[int, dict[str, Claim]]:
    return {0: {c.id: c for c in claims}, **{k: {c.id: c for c in v} for k, v in seeds.items()}}


def holds_in(claims: list[Claim], seeds: dict[int, list[Claim]]) -> dict[str, tuple[int, int]]:
    """``{claim id: (runs it holds in, runs that measured it)}`` over the book's run (seed 0) and ``seeds``."""
    runs = _runs(claims, seeds)
    out = {}
    for c in claims:
        done = [r[c.id] for r in runs.values() if c.id in r]
        out[c.id] = (sum(r.holds for r in done), len(done))
    return out


def seed_table(claims: list[Claim], seeds: dict[int, list[Claim]]):
    """Each claim of the book's run (seed 0) beside the same claim measured with each other seed: the lab number
    (percent) and its mark per seed, and in how many of the runs the claim holds."""
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    runs, counts = _runs(claims, seeds), holds_in(claims, seeds)
    rows = [[c.claim, pct(c.paper),
             *[f"{pct(r[c.id].lab)} {'✔' if r[c.id].holds else '✘'}" if c.id in r else "–" for r in runs.values()],
             "{} of {}".format(*counts[c.id])] for c in claims]
    return viz.table(["claim", "paper (%)", *[f"lab, seed {k} (%)" + (" (the book's)" if k == 0 else "")
                                              for k in runs], "holds in"], rows)
