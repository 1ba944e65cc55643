"""The exercises' computed solutions: `make solutions` (tools/solutions.py) writes them, the chapters glue them."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch

from twostream_lib.book import SOLUTIONS_DIR, Chapter
from twostream_lib.errors import UserError
from twostream_lib.models import MultiTaskNet, multitask_losses

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import solutions  # noqa: E402

BOOK = Path(__file__).resolve().parents[1] / "book"


def write(folder: Path, base: dict, values: dict) -> None:
    doc = {"chapter": "x", "machine": "test", "base": base, "values": values}
    (folder / "x.json").write_text(json.dumps(doc))


def test_solutions_say_whether_they_were_computed_on_this_pages_runs(tmp_path):
    ch = Chapter("x", data="ucf101", runs_dir=tmp_path, verbose=False)
    write(tmp_path, {"default": 0.5}, {"ex1_gap": 6.0, "ex1_se": 2.0, "ex2_gap": 1.0, "ex2_se": 2.0, "ex1_acc": 71.0})
    same = ch.solutions({"default": 0.5}, where=tmp_path)
    assert same["same_runs"] and "against the runs this page shows" in same["note"]
    assert same["values"]["ex1"] == "ahead of" and same["values"]["ex2"].startswith("within")
    assert same["values"]["ex1_acc"] == 71.0
    other = ch.solutions({"default": 0.52}, where=tmp_path)
    assert not other["same_runs"] and "other runs" in other["note"] and "52.0%" in other["note"]
    assert not ch.solutions({"another run": 0.5}, where=tmp_path)["same_runs"]


def test_missing_solutions_say_how_to_compute_them(tmp_path):
    ch = Chapter("x", data="ucf101", runs_dir=tmp_path, verbose=False)
    with pytest.raises(UserError, match=r"x\.json.*make solutions"):
        ch.solutions({}, where=tmp_path)


def test_weighting_a_heads_gradient_trains_the_weighted_loss():
    """The hook makes the summed loss's gradients exactly those of 2 * loss_0 + loss_1, trunk included."""
    torch.manual_seed(0)
    x, y, t = torch.randn(6, 4, 5, 5), torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 1, 0, 1, 0, 1])

    def grads(how: str):
        torch.manual_seed(1)
        net = MultiTaskNet(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(100, 8), torch.nn.ReLU()), 8, [3, 3])
        if how == "hook":
            solutions.weight_head(net, 0, 2.0)
        parts = multitask_losses(net(x), y, t)
        (2.0 * parts[0] + parts[1] if how == "weighted" else parts[0] + parts[1]).backward()
        return [p.grad.clone() for p in net.parameters()]

    hook, weighted, plain = grads("hook"), grads("weighted"), grads("plain")
    for a, b in zip(hook, weighted):
        torch.testing.assert_close(a, b)
    assert not all(torch.allclose(a, b) for a, b in zip(hook, plain))


def test_curriculum_labels_draw_boosted_classes_three_times_as_often():
    labels = [0] * 6 + [1] * 6 + [2] * 6
    out = solutions.curriculum_labels(labels, ["a", "b", "c"], ["b"])
    assert out[:6] == [0] * 6 and out[12:] == [2] * 6
    assert sorted(set(out[6:12])) == [1, 4, 7] and all(out[6:12].count(k) == 2 for k in (1, 4, 7))


def glued_solution_keys(path: Path) -> set[str]:
    md = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "markdown")
    return set(re.findall(r"\{glue:\w+\}`sol_(\w+)(?::[^`]*)?`", md))


@pytest.mark.parametrize("name", sorted(solutions.CHAPTERS))
def test_every_glued_solution_number_is_in_the_computed_file(name):
    """A solution's {glue:text}`sol_<key>` must name a value `make solutions` wrote (or a verdict read from one)."""
    doc = json.loads((SOLUTIONS_DIR / f"{name}.json").read_text())
    values = set(doc["values"]) | {k[:-4] for k in doc["values"] if k.endswith("_gap")}
    missing = glued_solution_keys(BOOK / f"{name}.ipynb") - values - {"note", "step"}
    assert not missing, f"{name}: glued but not computed by tools/solutions.py: {sorted(missing)}"
    assert doc["chapter"] == name and doc["base"] is not None
