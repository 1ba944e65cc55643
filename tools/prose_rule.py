"""The book's prose rule: what an execution measured reaches the prose only through myst-nb's ``glue``.

    .venv/bin/python tools/prose_rule.py book/*.ipynb     # lists every typed lab figure or verdict; exit 1 if any

A chapter's markdown may state a number only when the reader can see where it comes from:

* **glued**: inside a ``{glue}`` / ``{glue:text}`` / ``{glue:md}`` role (the cell that computed it put it there);
* **a setting**: it is written in the chapter's own code cells, in a config file's values (``configs/*.yaml``), or
  is one of the library's protocol constants and lab scales (the reader can find and change it);
* **the paper's**: it stands in a sentence that names the paper (``paper``, ``Table 2``, a ``{cite}`` role,
  ``§4``) and does not speak of the lab;
* **structural**: a chapter, table, figure, section, exercise, split or row number, a year, a list marker, part
  of a name (``UCF-101``, ``conv1``, ``L2``), inside code (backticks), maths (``$...$``) or a link target.

Anything else is a lab figure typed into prose: after the next re-execution it may no longer be what the cells
print. Verdicts drift the same way ("the fusion keeps the temporal stream's answer", "single views disagree"):
a sentence that uses a verdict word (:data:`VERDICTS`) about what the lab's runs did must be glued too (a
``{glue:md}`` sentence written by the cell), or be a question, a condition, or about the paper. Sentences that
use a verdict word for something general, not measured here, are listed in :data:`REVIEWED` with the reason; an
edited or new sentence leaves that list and is checked again.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from twostream_lib import protocol  # noqa: E402
from twostream_lib.lab.specs import SCALES  # noqa: E402

__all__ = ["Finding", "check_notebook", "check_markdown", "setting_numbers", "code_numbers", "VERDICTS"]

#: a number: digits with optional thousands commas, decimals and a K/M suffix; not part of a word or name
NUMBER = re.compile(r"(?<![\w.\-/^])(\d[\d,]*(?:\.\d+)?)(?:\s?[KM](?![a-z]))?(?![\w])")
#: words that state an outcome (what a run did, or how two runs compare)
VERDICTS = re.compile(
    r"\b(reproduc\w*|at chance|above chance|ahead|behind|beats?|outperform\w*|catch(?:es)? up|caught up|"
    r"disagree\w*|keeps|gains?|helps?|hurts?|wins?|loses|fails?|improves?|matches|overfits?|"
    r"better|worse|higher|lower(?![- ]arms)|slower|faster)\b", re.I)
#: a sentence is about the lab's runs when it names them
LAB_WORDS = re.compile(r"\b(lab|here|this run|these runs|our|printed|the table|the figure|measured|this chapter's|"
                       r"(as|run|runs|table|figure|plot|cell|cells|shown|printed|one|ones|sample) (above|below))\b",
                       re.I)
PAPER_WORDS = re.compile(r"(\bpaper\b|\bTable \d|\[cite\]|§\s?\d|Simonyan|\bFig(?:ure)?\.? \d)", re.I)
STRUCTURAL_BEFORE = re.compile(r"(chapter|Chapter|Table|Figure|Fig\.|§|[Ee]xercise|[Ss]ection|[Ss]plit|[Rr]ows?|"
                               r"[Ss]tep|[Pp]art|[Ee]q\.?|[Ss]eeds?|[Ll]ayer|[Cc]olumn)\s*$")
CONDITIONAL = re.compile(r"\b(if|whether|expect\w*)\b|\?", re.I)
#: verdicts that a question or a condition still asserts ("does the SVM catch up?" says it is behind)
PRESUPPOSING = re.compile(r"\b(catch(?:es)? up|fall(?:s)? behind|stays? ahead)\b", re.I)

#: sentences with a verdict word that are general statements, not the lab's outcome (how the sentence starts ->
#: the reason it was reviewed as such). A sentence that starts otherwise is checked again.
REVIEWED: dict[str, str] = {
    "**Fusion can only gain what the weaker stream adds.**":
        "chapter 6: a bound that holds for any runs (a fusion that picks one stream's answer), not a measurement",
}


@dataclass(frozen=True)
class Finding:
    """One typed lab figure (``kind="number"``) or verdict (``kind="verdict"``) in a markdown cell."""

    notebook: str
    cell: int
    kind: str
    text: str
    context: str

    def __str__(self) -> str:
        return f"{self.notebook} cell {self.cell}: typed {self.kind} {self.text!r} in: ...{self.context}..."


def _norm(num: str) -> str:
    return num.replace(",", "").replace("_", "").rstrip(".")


def _numbers_in(text: str) -> set[str]:
    out = set()
    for m in re.findall(r"\d[\d_,]*(?:\.\d+)?(?:e-?\d+)?", text):
        n = _norm(m)
        out.add(n)
        try:
            v = float(n)
        except ValueError:
            continue
        out.add(f"{v:g}")
        if v >= 1000 and v % 1000 == 0:
            out.add(f"{v / 1000:g}K")
        if 0 < v < 1:
            out.add(f"{100 * v:g}")  # a fraction written as a percentage (dropout 0.5 -> 50 %)
    return out


#: a fenced block of code (not of output) in markdown: an exercise's solution shows the code that ran it
CODE_FENCE = re.compile(r"^(`{3,})(?:python|bash)\s*$(.*?)^\1", re.S | re.M)


def code_numbers(nb: dict) -> set[str]:
    """Every number written in the notebook's code: its code cells and the ``python`` / ``bash`` blocks of its
    markdown (settings, the paper's numbers as constants)."""
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    code += [m.group(2) for c in nb["cells"] if c["cell_type"] == "markdown"
             for m in CODE_FENCE.finditer("".join(c["source"]))]
    return _numbers_in("\n".join(code))


def setting_numbers() -> set[str]:
    """The values of ``configs/*.yaml`` (not their comments), the protocol constants and the lab scales."""
    vals: list = [protocol.TEST_FRAMES, protocol.TEST_CROPS, *protocol.CROP_CHOICES, SCALES]
    for p in sorted((REPO / "configs").glob("*.yaml")):
        vals.append(yaml.safe_load(p.read_text()))
    return _numbers_in(json.dumps(vals))


def _strip(md: str) -> str:
    """Markdown without the parts whose numbers are not prose: glue and other roles, code, maths, link targets,
    directive option lines and HTML comments."""
    md = re.sub(r"<!--.*?-->", " ", md, flags=re.S)
    md = re.sub(r"^(```|~~~).*?^\1", " ", md, flags=re.S | re.M)
    md = re.sub(r"\{cite(:\w+)?\}`[^`]*`", " [cite] ", md)
    md = re.sub(r"\{[\w:-]+\}`[^`]*`", " ", md)
    md = re.sub(r"`[^`]*`", " ", md)
    md = re.sub(r"\$\$.*?\$\$", " ", md, flags=re.S)
    md = re.sub(r"\$[^$\n]*\$", " ", md)
    md = re.sub(r"\]\([^)]*\)", "]", md)
    md = re.sub(r"^\s*:[\w-]+:.*$", " ", md, flags=re.M)
    md = re.sub(r"^\s*(\d+\.|[-*])\s", " ", md, flags=re.M)  # list markers
    return md


def _sentences(md: str) -> list[str]:
    parts = re.split(r"(?<=[.!?:;])\s+(?=[A-Z*(\"'])|\n\s*\n|\n\s*[-*]\s|\n#+\s", md)
    return [p for p in parts if p.strip()]


def _directive_bodies(md: str) -> str:
    """Keep the text inside MyST directives (exercise, solution, note, ...) checkable: their fences go, the body
    stays."""
    out, stack = [], []  # the open fences, innermost last: (fence, is a directive)
    for line in md.split("\n"):
        m = re.match(r"^\s*(`{3,}|~{3,})(.*)$", line)
        if m is None:
            out.append(line)
        elif stack and not m.group(2).strip() and m.group(1) == stack[-1][0]:  # closes the innermost block
            out.append(" " if stack.pop()[1] else line)
        else:  # opens a block: a directive's fence goes, a code block's stays (its text is stripped later)
            stack.append((m.group(1), m.group(2).strip().startswith("{")))
            out.append(" " if stack[-1][1] else line)
    return "\n".join(out)


def check_markdown(md: str, allowed: set[str], where: tuple[str, int] = ("", 0)) -> list[Finding]:
    """The typed lab figures and verdicts of one markdown cell, given the numbers ``allowed`` as settings."""
    out = []
    for sent in _sentences(_strip(_directive_bodies(md))):
        flat = " ".join(sent.split())
        paper = bool(PAPER_WORDS.search(flat)) and not LAB_WORDS.search(flat)
        for m in NUMBER.finditer(flat):
            n = _norm(m.group(1))
            if paper or n in allowed or re.fullmatch(r"(19|20)\d\d", n):
                continue
            if STRUCTURAL_BEFORE.search(flat[:m.start()]) or re.fullmatch(r"[0-9]", n) and _spelled(flat, m):
                continue
            out.append(Finding(*where, "number", m.group(0).strip(), flat[max(0, m.start() - 50):m.end() + 30]))
        for m in VERDICTS.finditer(flat):
            presupposed = PRESUPPOSING.match(m.group(0))
            if not presupposed and (not LAB_WORDS.search(flat) or CONDITIONAL.search(flat)
                                    or (PAPER_WORDS.search(flat) and "lab" not in flat.lower())):
                continue
            if any(flat.startswith(k) for k in REVIEWED):
                continue
            out.append(Finding(*where, "verdict", m.group(0), flat[:160]))
            break
    return out


def _spelled(flat: str, m: re.Match) -> bool:
    """A single digit used as a count of things the chapter set up (``2 streams``, ``the 4 corners``): allowed."""
    return bool(re.match(r"\s+(streams?|corners?|crops?|heads?|nets?|layers?|frames?|fields?|channels?|cores?|"
                         r"GPUs?|seeds?|ways?|kinds?|rows?|classes of|dimensions?|warps?|times)\b",
                         flat[m.end():]))


def check_notebook(path: str | Path, settings: set[str] | None = None) -> list[Finding]:
    """Every typed lab figure or verdict in the markdown cells of notebook ``path``."""
    nb = json.loads(Path(path).read_text())
    allowed = code_numbers(nb) | (setting_numbers() if settings is None else settings)
    out = []
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] == "markdown":
            out += check_markdown("".join(c["source"]), allowed, (Path(path).stem, i))
    return out


def main(argv: list[str]) -> int:
    settings = setting_numbers()
    found = [f for p in argv for f in check_notebook(p, settings)]
    for f in found:
        print(f)
    print(f"{len(found)} typed lab figure(s) or verdict(s) in {len(argv)} notebook(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
