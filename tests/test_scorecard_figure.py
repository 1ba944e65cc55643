"""scorecard.verdict and scorecard.figure: direction against the paper kept apart from "beyond 2 s.e."."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from twostream_lib import scorecard  # noqa: E402

C = scorecard.Claim


def fake_claims():
    return [
        C("a_vs_b", "03_spatial", "a beats b", 0.024, 0.058, 0.02, False),    # larger than the paper's, beyond
        C("c_vs_d", "04_temporal", "c beats d", 0.07, 0.02, 0.03, False),     # same direction, within 2 s.e.
        C("e_vs_f", "05_multitask", "e beats f", 0.05, -0.09, 0.03, False),   # opposite, beyond
        C("acc", "04_temporal", "x recognises y (>= 80%)", None, 0.9, 0.04, True),
        C("low", "03_spatial", "frames can't tell pairs apart (<= 65%)", None, 0.7, 0.1, False),
    ]


def test_verdict_separates_direction_from_size():
    a, c, e, acc, low = (scorecard.verdict(x) for x in fake_claims())
    assert (a.kind, a.same_direction, a.beyond) == ("difference", True, True)  # +5.8 vs +2.4 is not "failed"
    assert a.label == "same direction as the paper, beyond 2 s.e."
    assert (c.same_direction, c.beyond) == (True, False) and "within 2 s.e." in c.label
    assert (e.same_direction, e.beyond) == (False, True) and e.label.startswith("opposite")
    assert (acc.kind, acc.same_direction, acc.beyond) == ("absolute", True, True)    # 90 - 80 > 2 x 4
    assert (low.same_direction, low.beyond) == (False, False)                          # 70 > 65, by < 2 x 10
    assert scorecard.verdict(fake_claims()[1], k=0.5).beyond is True                   # k is honoured


def test_bar_of_reads_the_claims_text():
    assert scorecard.bar_of(fake_claims()[3]) == (">=", pytest.approx(0.8))
    assert scorecard.bar_of(fake_claims()[4]) == ("<=", pytest.approx(0.65))
    nobar = C("z", "c", "no bar here", None, 0.5, None, True)
    assert scorecard.bar_of(nobar) is None and scorecard.verdict(nobar).same_direction is None
    assert scorecard.verdict(C("n", "c", "x (>= 50%)", None, 0.6, None, True)).beyond is None  # no s.e.


def test_figure_draws_both_panels_with_seeds():
    claims = fake_claims()
    seeds = {1: [C("a_vs_b", "03_spatial", "a beats b", 0.024, 0.03, 0.02, True)],
             2: [C("acc", "04_temporal", "x recognises y (>= 80%)", None, 0.85, 0.04, True)]}
    fig = scorecard.figure(claims, seeds)
    try:
        diff_ax, abs_ax = fig.axes
        assert [t.get_text() for t in diff_ax.get_yticklabels()] == ["a beats b", "c beats d", "e beats f"]
        assert len(abs_ax.get_yticklabels()) == 2
        texts = [t.get_text() for t in diff_ax.texts]  # the verdict beside each row, top row first
        assert texts[0].startswith("same direction") and "beyond" in texts[0]
        assert texts[2].startswith("opposite")
        # the seed values are drawn as open circles, at 100 x their value
        open_x = [x for ln in diff_ax.lines if ln.get_marker() == "o" and ln.get_markerfacecolor() == "none"
                  for x in ln.get_xdata()]
        assert open_x == [pytest.approx(3.0)]
    finally:
        plt.close(fig)
    only_diffs = scorecard.figure(claims[:3])
    assert len(only_diffs.axes) == 1
    plt.close(only_diffs)
    with pytest.raises(ValueError):
        scorecard.figure([])


def test_power_table_says_which_paper_effects_the_test_split_can_show():
    claims = fake_claims()  # paper +2.4 with 2 s.e. = 4.0: no; +7 with 6.0: yes; +5 with 6.0: no
    other = {1: [C("a_vs_b", "03_spatial", "a beats b", 0.024, 0.01, 0.01, False)]}  # 2 s.e. 2.0 with seed 1
    t = scorecard.power_table(claims, other)
    rows = {name: list(r) for name, r in zip(t.index, t.values.tolist())}
    assert set(rows) == {"a beats b", "c beats d", "e beats f"}  # differences only
    assert rows["a beats b"][1] == "2.0–4.0" and rows["a beats b"][2] == "at the edge"
    assert rows["c beats d"][2] == "yes" and rows["e beats f"][2] == "no"
    assert rows["a beats b"][3] == "+5.8, +1.0" and "smallest effect shown" in t.to_html()
