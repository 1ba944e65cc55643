"""The prose rule (tools/prose_rule.py): a lab figure or verdict reaches a chapter's prose only through glue."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import prose_rule  # noqa: E402

NOTEBOOKS = sorted((REPO / "book").glob("*.ipynb"))
SETTINGS = prose_rule.setting_numbers()

# Prose the book held before the rule, each a lab figure or verdict typed by hand that a re-execution had left
# behind (or contradicted): the rule must flag every one.
DRIFTED = {
    "ch3 views": "What does the averaging do? Single views disagree (a corner crop may miss the figure altogether, as "
                 "above; many poses are shared by several classes).",
    "ch3 chance": "On the lab's quarter-width net, 1000 iterations with dropout 0.9 leave the net at chance (the lesson "
                  "of chapter 4's dropout section).",
    "ch4 videos": "The paper's differences between these rows are 0.2–1.1 points on 3.8K test videos. On 116 lab test "
                  "videos one standard error is about 4 points.",
    "ch4 pairs": "The temporal net tells the pairs apart: within-pair accuracy 87 % in the lab.",
    "ch6 pairs": "The motion-only pairs are where the lab puts the burden on the temporal stream: the spatial stream "
                 "can't, and the fusion keeps the temporal stream's answer there.",
    "ch6 exercise": "2. **(CPU)** Fit the SVM with `C` in {0.1, 1, 10}. Does the SVM catch up with averaging?",
    "ch7 loader": "On the lab's small frames the device path's gain is its batched decoding.",
}

# Prose the rule must leave alone: glued figures, settings, the paper's numbers, structure.
CLEAN = {
    "glued": "The lab's temporal net reaches {glue:text}`acc_t:.1%` on {glue:text}`n_test` test videos.",
    "glued verdict": "Pre-training carries over: the fine-tuned net is {glue:text}`ft_verdict` the net from scratch.",
    "paper": "The paper's temporal net reaches 81.0 % (Table 1b), 8.8 points above HMDB-51 alone (Table 2).",
    "setting": "The lab trains 1000 iterations of batch 32 on 80×80 crops, and tests 25 × 10 views per video.",
    "structure": "Chapter 4 trains UCF-101's split 1 with CNN-M-2048 (conv1 to full7); see exercise 3 and §3.1.",
    "code": "Set `ITERS = 4000` and compare `lr=0.02`.",
    "general": "Dropout on a small net slows learning; mean subtraction keeps the relative motion.",
    "code block in a solution": "````{solution} ex-1\n:class: dropdown\n\n```bash\n#SBATCH --time=24:00:00\n"
                                "torchrun --master_port 29500 train.py\n```\n\nRun it.\n````",
}


@pytest.mark.parametrize("name", DRIFTED)
def test_rule_flags_prose_that_drifted(name):
    found = prose_rule.check_markdown(DRIFTED[name], SETTINGS)
    assert found, f"the rule misses {name}: {DRIFTED[name]!r}"


@pytest.mark.parametrize("name", CLEAN)
def test_rule_leaves_glued_and_sourced_prose_alone(name):
    found = prose_rule.check_markdown(CLEAN[name], SETTINGS)
    assert not found, [str(f) for f in found]


def test_a_number_in_the_chapters_code_is_a_setting():
    nb = {"cells": [{"cell_type": "code", "source": ["ABL_FRAMES, ABL_CROPS = 10, 1\n", "ITERS = 4_000\n"]},
                    {"cell_type": "markdown", "source": ["The lab runs 4,000 iterations, then 4K more; 17 of them."]}]}
    allowed = prose_rule.code_numbers(nb) | SETTINGS
    found = prose_rule.check_markdown(nb["cells"][1]["source"][0], allowed)
    assert [f.text for f in found] == ["17"]


def test_a_number_in_a_solutions_code_block_is_a_setting_but_not_in_its_output():
    md = ("````{solution} ex-1\n:class: dropdown\n\n```python\ntrain(cfg, ['max_iters=3000'])\n```\n\n"
          "```text\naccuracy 71.3\n```\n\nThe run of 3000 iterations scores 71.3%.\n````")
    nb = {"cells": [{"cell_type": "markdown", "source": [md]}]}
    allowed = prose_rule.code_numbers(nb) | SETTINGS
    assert [f.text for f in prose_rule.check_markdown(md, allowed)] == ["71.3"]


def test_reviewed_sentences_are_still_in_the_book():
    """A reviewed general sentence that no chapter holds any more is a stale entry."""
    text = " ".join(" ".join("".join(c["source"]).split()) for p in NOTEBOOKS
                    for c in __import__("json").loads(p.read_text())["cells"] if c["cell_type"] == "markdown")
    stale = [k for k in prose_rule.REVIEWED if k not in text]
    assert not stale, stale


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_chapter_prose_states_no_typed_lab_figure(path):
    found = prose_rule.check_notebook(path, SETTINGS)
    assert not found, "glue these (myst_nb.glue + {glue:text}), or write them as settings:\n" + "\n".join(
        map(str, found))
