"""viz.table: one header row (no empty index-name row), in HTML and in text."""
from __future__ import annotations

import re

from twostream_lib import viz


def test_table_has_one_header_row_with_the_row_label_header():
    t = viz.table(["chapter", "what", "time"], [["one", "frames", 1.5], ["two", "flow", 2.0]])
    html = t._repr_html_()
    thead = re.search(r"<thead>(.*?)</thead>", html, re.S).group(1)
    rows = re.findall(r"<tr.*?</tr>", thead, re.S)
    assert len(rows) == 1, thead  # pandas puts an index *name* on a second, otherwise empty header row
    assert re.findall(r"<th[^>]*>(.*?)</th>", rows[0]) == ["chapter", "what", "time"]
    assert list(t.index) == ["one", "two"] and list(t.columns) == ["what", "time"]
    assert repr(t).splitlines()[0].split() == ["chapter", "what", "time"]  # text: one header line too
    assert len(repr(t).splitlines()) == 3


def test_table_without_index_and_derived_frames():
    t = viz.table(["a", "b"], [[1, 2]], index=False)
    assert list(t.columns) == ["a", "b"] and "<thead>" in t._repr_html_()
    sub = viz.table(["k", "v"], [["x", 1], ["y", 2]]).loc[["y"]]
    assert isinstance(sub, viz.Table) and sub.columns.name == "k"
