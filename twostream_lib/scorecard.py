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
import re
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.lines import Line2D

from . import viz
from .files import atomic_write_json
from .metrics import beats  # the rule each comparative claim's mark follows (re-exported: scorecard.beats)

__all__ = ["Claim", "write", "load_all", "table", "beats", "record_time", "load_times", "load_seeds", "holds_in",
           "seed_table", "power_table", "Verdict", "verdict", "bar_of", "figure"]


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
    standard error, ✔ / ✘ (the claim's own test), and :func:`verdict`'s label (direction, and beyond 2 s.e.)."""
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    rows = [[c.claim, c.chapter, pct(c.paper), pct(c.lab), "–" if c.se is None else f"{100 * c.se:.1f}",
             "✔" if c.holds else "✘", verdict(c).label] for c in claims]
    return viz.table(["claim", "chapter", "paper (%)", "lab (%)", "lab s.e. (points)", "reproduced",
                      "lab against the paper (or the bar)"], rows)


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


def power_table(claims: list[Claim], seeds: dict[int, list[Claim]] | None = None, k: float = 2.0):
    """What each "vs" claim's test split can show: the smallest difference it marks as shown (``k`` paired standard
    errors, over the book's run and the other seeds) beside the paper's effect and the lab's. A paper effect below
    that bar is one the lab could not show even if it reproduced it exactly."""
    runs = _runs(claims, seeds or {})
    rows = []
    for c in claims:
        if verdict(c, k).kind != "difference":
            continue
        ses = [r[c.id].se for r in runs.values() if c.id in r and r[c.id].se is not None]
        if not ses:
            continue
        lo, hi = 100 * k * min(ses), 100 * k * max(ses)
        labs = [100 * r[c.id].lab for r in runs.values() if c.id in r]
        shown = "yes" if abs(100 * c.paper) > hi else ("no" if abs(100 * c.paper) < lo else "at the edge")
        rows.append([c.claim, f"{100 * c.paper:+.1f}", f"{lo:.1f}" if hi - lo < 0.05 else f"{lo:.1f}–{hi:.1f}",
                     shown, ", ".join(f"{v:+.1f}" for v in labs)])
    return viz.table(["claim", "paper's effect (points)", f"smallest effect shown, lab ({k:g} paired s.e., points)",
                      "could the lab show the paper's effect?", "lab's effect per seed (points)"], rows)


# ---------------------------------------------------------------- at a glance: direction and size of each effect
_BAR = re.compile(r"(>=|<=|≥|≤)\s*([+-]?\d+(?:\.\d+)?)\s*%")


@dataclass(frozen=True)
class Verdict:
    """How one lab number reads against the paper, in two separate questions.

    ``kind``: ``"difference"`` (a "vs" claim: the paper reports an effect) or ``"absolute"`` (an accuracy against a
    bar stated in the claim's text). ``same_direction``: the lab effect has the paper's sign (a difference), or the
    lab number is on the bar's side (an absolute claim). ``beyond``: it is more than ``k`` standard errors from zero
    (a difference) or from the bar (an absolute claim); ``None`` when there is no standard error (or no bar).
    ``label``: both answers in words."""

    kind: str
    same_direction: bool | None
    beyond: bool | None
    label: str


def bar_of(c: Claim) -> tuple[str, float] | None:
    """The bar an absolute claim states in its text, e.g. ``("<=", 0.65)`` for "... (... <= 65%)"; ``None``."""
    m = _BAR.search(c.claim)
    if m is None:
        return None
    op = {"≥": ">=", "≤": "<="}.get(m.group(1), m.group(1))
    return op, float(m.group(2)) / 100


def verdict(c: Claim, k: float = 2.0) -> Verdict:
    """Classify one claim: direction against the paper (or its bar), and whether the lab is beyond ``k`` s.e."""
    within = f"within {k:g} s.e."
    if c.paper is not None:  # an effect the paper reports: a difference between two settings
        same = (c.lab > 0) == (c.paper > 0) and c.lab != 0
        beyond = None if c.se is None else beats(abs(c.lab), c.se, k)
        word = "same direction as the paper" if same else "opposite direction to the paper"
        size = "" if beyond is None else (f", beyond {k:g} s.e." if beyond else f", {within} of zero")
        return Verdict("difference", bool(same), beyond, word + size)
    bar = bar_of(c)
    if bar is None:
        return Verdict("absolute", None, None, "no bar stated")
    op, b = bar
    same = c.lab >= b if op == ">=" else c.lab <= b
    beyond = None if c.se is None else beats(abs(c.lab - b), c.se, k)
    word = "on the bar's side" if same else "misses the bar"
    size = "" if beyond is None else (f", beyond {k:g} s.e." if beyond else f", {within} of the bar")
    return Verdict("absolute", bool(same), beyond, word + size)


_COLOURS = {(True, True): "#1a7f37", (True, False): "#8fc98f", (True, None): "#8fc98f",
            (False, True): "#cf222e", (False, False): "#f2a19b", (False, None): "#f2a19b"}


def _colour(v: Verdict) -> str:
    return "0.5" if v.same_direction is None else _COLOURS[v.same_direction, v.beyond]


def _draw_claim(ax, yi: float, c: Claim, others: list[dict[str, Claim]], k: float) -> None:
    """One row of :func:`figure`: the lab's value and interval, the other seeds, and the paper's effect (a
    difference) or the claim's bar (an absolute claim), with :func:`verdict`'s label at the right."""
    v = verdict(c, k)
    col = _colour(v)
    if c.se is not None:
        ax.errorbar(100 * c.lab, yi, xerr=100 * k * c.se, fmt="o", ms=8, color=col, ecolor=col, elinewidth=3,
                    capsize=4, zorder=3)
    else:
        ax.plot(100 * c.lab, yi, "o", ms=8, color=col, zorder=3)
    for o in others:
        if c.id in o:
            ax.plot(100 * o[c.id].lab, yi + 0.22, "o", ms=5, mfc="none", mec="0.25", zorder=4)
    if c.paper is not None:
        ax.plot(100 * c.paper, yi - 0.22, "D", ms=6, color="0.55", zorder=4)
        if c.se is not None:
            side = 1 if c.paper > 0 else -1
            ax.plot([side * 100 * k * c.se] * 2, [yi - 0.3, yi + 0.3], color="0.2", lw=1.2, zorder=2)
    elif (bar := bar_of(c)) is not None:
        op, b = bar
        ax.plot([100 * b] * 2, [yi - 0.38, yi + 0.38], color="k", lw=2.2, zorder=2)
        ax.fill_betweenx([yi - 0.38, yi + 0.38], 100 * b, 100 if op == ">=" else 0, color="0.9", zorder=1)
    ax.text(1.01, yi, v.label.replace(", ", ",\n"), transform=ax.get_yaxis_transform(), va="center", fontsize=7.5,
            color="0.15")


def figure(claims: list[Claim], seeds: dict[int, list[Claim]] | None = None, k: float = 2.0, width: float = 12.0):
    """Every claim at a glance, in points: one row per claim, the lab's value with its ±``k`` s.e. interval
    (coloured by :func:`verdict`: dark green same direction and beyond ``k`` s.e., light green same direction but
    within, light/dark red the opposite), each other seed's value (open circles, :func:`load_seeds`), a tick at
    ``k`` s.e. on the paper's side (the distance the lab must pass), and the paper's effect (grey diamond).

    Differences (claims with a paper number) go in the left panel, around zero; absolute claims (an accuracy
    against a bar stated in the claim) in the right panel, with their bar (black bar, the side that holds shaded).
    Returns the matplotlib figure."""
    seeds = seeds or {}
    others = [{c.id: c for c in v} for v in seeds.values()]
    groups = [[c for c in claims if c.paper is not None], [c for c in claims if c.paper is None]]
    groups = [g for g in groups if g]
    if not groups:
        raise ValueError("scorecard.figure: no claims")
    n = sum(len(g) for g in groups)
    height = 0.5 * n + 1.0 * len(groups) + 1.0
    fig, axes = plt.subplots(len(groups), 1, figsize=(width, height), squeeze=False,
                             gridspec_kw={"height_ratios": [len(g) + 0.6 for g in groups]})
    for ax, group in zip(axes[:, 0], groups):
        diff = group[0].paper is not None
        y = list(range(len(group)))[::-1]
        for yi, c in zip(y, group):
            _draw_claim(ax, yi, c, others, k)
        ax.set_yticks(y, [textwrap.fill(c.claim, 60) for c in group], fontsize=7.5)
        ax.set_ylim(-0.7, len(group) - 0.3)
        if diff:
            ax.axvline(0, color="k", lw=0.8)
            ax.set_xlabel(f"difference between the two settings (points), lab ± {k:g} s.e.")
            ax.set_title("Differences: the lab's effect beside the paper's", fontsize=10)
        else:
            ax.set_xlim(0, 100)
            ax.set_xlabel(f"accuracy (%), lab ± {k:g} s.e.")
            ax.set_title("Accuracies against the claim's bar", fontsize=10)
        ax.grid(axis="x", color="0.92", zorder=0)
    handles = [Line2D([], [], marker="o", ls="", ms=8, color=_COLOURS[True, True],
                      label=f"lab (book's run): same direction, beyond {k:g} s.e."),
               Line2D([], [], marker="o", ls="", ms=8, color=_COLOURS[True, False],
                      label=f"same direction, within {k:g} s.e."),
               Line2D([], [], marker="o", ls="", ms=8, color=_COLOURS[False, True], label="opposite direction"),
               Line2D([], [], marker="D", ls="", ms=6, color="0.55", label="paper"),
               Line2D([], [], marker="|", ls="", ms=10, mew=1.2, color="0.2", label=f"{k:g} s.e. from zero"),
               Line2D([], [], color="k", lw=2.2, label="the claim's bar")]
    if others:
        handles.insert(3, Line2D([], [], marker="o", ls="", ms=5, mfc="none", mec="0.25",
                                 label=f"other seeds ({', '.join(str(s) for s in seeds)})"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=7.5, frameon=False)
    fig.subplots_adjust(left=0.36, right=0.8, top=1 - 0.45 / height, bottom=1.25 / height,
                        hspace=1.1 / (height / len(groups)))
    return fig
