"""The first-layer filter views (chapter 4's Figure 2): the change measure and the grids."""
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

from twostream_lib import viz  # noqa: E402


def test_filter_change_is_zero_for_one_pattern_on_every_field_and_large_for_a_sign_flip():
    rng = np.random.default_rng(0)
    pattern = rng.normal(size=(2, 7, 7))
    same = np.tile(pattern, (10, 1, 1))[None]                           # (1, 20, 7, 7): x1 y1 ... x10 y10
    flip = np.concatenate([pattern * (-1) ** k for k in range(10)])[None]  # the sign alternates field to field
    change = viz.filter_change(np.concatenate([same, flip]))
    assert change[0] < 1e-12
    assert 3.5 < change[1] <= 4.0  # (2p)^2 per step over 10 fields of p^2: 9 * 4 / 10


def test_flow_filter_grid_puts_x_channels_above_y_channels():
    w = np.zeros((1, 4, 3, 3))
    w[0, 0], w[0, 2] = 1.0, 1.0    # x1, x2 positive
    w[0, 1], w[0, 3] = -1.0, -1.0  # y1, y2 negative
    ax = viz.show_flow_filters(w)
    grid = ax.images[0].get_array()
    rows = [grid[r * 4 + 1:r * 4 + 4, 1:4].mean() for r in range(4)]
    assert rows == [1.0, 1.0, -1.0, -1.0]


def test_multitask_diagram_draws_one_head_per_dataset():
    fig = viz.multitask_diagram([("lab-hmdb", 10), ("lab-ucf", 16)], L=10)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert [t for t in texts if t.startswith("head ")] == ["head 0: softmax\n10 lab-hmdb classes",
                                                           "head 1: softmax\n16 lab-ucf classes"]
    assert "flow stack\n20 channels\n(any dataset)" in texts
