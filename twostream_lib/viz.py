"""Plotting helpers the chapters share (matplotlib): frame strips, flow colour coding, stacks, confusion matrices,
training curves, and animations for static HTML (``to_jshtml``, so they play without a kernel).
"""
from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

__all__ = ["Table", "table", "show_jpeg", "frame_strip", "show_strip", "show_flow", "show_stack", "show_confusion",
           "show_curves", "animate", "bar_compare", "two_stream_diagram", "filter_change", "show_rgb_filters",
           "show_flow_filters", "multitask_diagram"]


class Table(pd.DataFrame):
    """A :class:`pandas.DataFrame` that shows every cell whole (pandas cuts long cells and wide tables with
    "..." by default), as HTML in notebooks and the book, as aligned text elsewhere."""

    _WHOLE = ("display.max_colwidth", None, "display.max_columns", None, "display.width", 10_000)

    @property
    def _constructor(self):
        return Table

    def _repr_html_(self):
        with pd.option_context(*self._WHOLE):
            return super()._repr_html_()

    def __repr__(self) -> str:
        with pd.option_context(*self._WHOLE):
            return super().__repr__()


def table(header, rows, index: bool = True) -> Table:
    """A table for the book: a :class:`Table` (a DataFrame) of ``rows`` under ``header``. With ``index`` the first
    column labels the rows.

    The first header names the index as the *columns'* name, not the index's: pandas draws an index name as a
    second header row, empty but for that name, while the columns' name sits in the one header row, above the row
    labels."""
    df = Table([list(r) for r in rows], columns=[str(h) for h in header])
    if not index:
        return df
    df = df.set_index(df.columns[0])
    df.columns.name, df.index.name = df.index.name, None
    return df


def show_jpeg(fig, quality: int = 85):
    """Show a matplotlib figure as a JPEG image (photo-like figures, e.g. video frames, are several times lighter
    in the page than as PNG) and close it."""
    from IPython.display import Image, display  # the notebook's display machinery

    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", bbox_inches="tight", pil_kwargs={"quality": quality})
    plt.close(fig)
    display(Image(data=buf.getvalue(), format="jpeg"))


def frame_strip(frames: np.ndarray, n: int = 8, gap: int = 2) -> np.ndarray:
    """``n`` equally spaced frames of ``(T, H, W, 3)`` side by side, as one ``(H, n*W + gaps, 3)`` uint8 image."""
    frames = np.asarray(frames)
    idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    h, w = frames.shape[1:3]
    out = np.full((h, len(idx) * (w + gap) - gap, 3), 255, np.uint8)
    for k, i in enumerate(idx):
        out[:, k * (w + gap):k * (w + gap) + w] = frames[i]
    return out


def show_strip(frames: np.ndarray, n: int = 8, title: str | None = None, ax=None):
    strip = frame_strip(frames, n)
    if ax is None:
        _, ax = plt.subplots(figsize=(min(16, 2 * n), 2.2))
    ax.imshow(strip)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def show_flow(flows: dict, frame: np.ndarray | None = None, max_magnitude: float | None = None, wheel: bool = True):
    """One row: the frame (optional), each named flow field in Middlebury colours, and the colour wheel legend.

    Args:
        flows: ``{title: (H, W, 2) flow}``.
        max_magnitude: common normalisation so the panels are comparable (default: the largest magnitude).
    """
    from .flow import color_wheel, flow_to_color

    if max_magnitude is None:
        max_magnitude = max(float(np.linalg.norm(f, axis=-1).max()) for f in flows.values()) or 1.0
    panels = ([("frame", frame)] if frame is not None else []) + [
        (k, flow_to_color(f, max_magnitude=max_magnitude)) for k, f in flows.items()]
    if wheel:
        panels.append((f"colour key (|d| = {max_magnitude:.1f} px at rim)", color_wheel(96)))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.4))
    for ax, (t, im) in zip(np.atleast_1d(axes), panels):
        ax.imshow(im)
        ax.set_title(t, fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def show_stack(stack: np.ndarray, title: str | None = None, vmax: float | None = None):
    """The ``2L`` channels of a temporal input ``(2L, H, W)`` as two rows (x channels, y channels)."""
    L = stack.shape[0] // 2
    vmax = vmax or float(np.abs(stack).max()) or 1.0
    fig, axes = plt.subplots(2, L, figsize=(1.3 * L, 2.9), squeeze=False)
    for k in range(L):
        for r, name in ((0, "x"), (1, "y")):
            ax = axes[r, k]
            ax.imshow(stack[2 * k + r], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set_axis_off()
            ax.set_title(f"{name}{k + 1}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def filter_change(weight: np.ndarray) -> np.ndarray:
    """How much each first-layer filter of a temporal net changes over its stack of fields: ``(F,)`` in [0, 2].

    ``weight`` is conv1's ``(F, 2L, k, k)``, channels ``x1, y1, ..., xL, yL``. The value is the energy of the
    differences between consecutive fields' kernels (x and y alike) over the filter's energy: near 0 for a filter
    that applies the same pattern to every field (it sees motion *in space*: spatial derivatives of the flow), large
    for one whose kernel changes from field to field (a *temporal* derivative: a change of motion)."""
    w = np.asarray(weight, dtype=np.float64)
    f, c = w.shape[:2]
    fields = w.reshape(f, c // 2, 2, -1)  # (F, L, 2, k*k)
    diff = np.diff(fields, axis=1)
    return (diff ** 2).sum(axis=(1, 2, 3)) / np.maximum((fields ** 2).sum(axis=(1, 2, 3)), 1e-12)


def show_rgb_filters(weight: np.ndarray, title: str = "", ax=None):
    """The first-layer filters of a spatial net, ``(F, 3, k, k)``, as small RGB images in one row (each filter
    scaled to its own range)."""
    w = np.asarray(weight, dtype=np.float64)
    f, _, k, _ = w.shape
    tiles = np.ones((k + 2, f * (k + 2), 3))
    for j in range(f):
        t = w[j].transpose(1, 2, 0)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-12)
        tiles[1:k + 1, j * (k + 2) + 1:j * (k + 2) + k + 1] = t
    if ax is None:
        _, ax = plt.subplots(figsize=(min(16, 0.35 * f + 1), 1.0))
    ax.imshow(tiles, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return ax


def show_flow_filters(weight: np.ndarray, order: np.ndarray | None = None, title: str = "", ax=None):
    """The first-layer filters of a temporal net as the paper's Figure 2 draws them: a column per filter, a row per
    input channel (``x1 ... xL`` above, ``y1 ... yL`` below), each filter on its own symmetric colour scale (red
    positive, blue negative). ``order`` sorts the columns (e.g. by :func:`filter_change`)."""
    w = np.asarray(weight, dtype=np.float64)
    f, c, k, _ = w.shape
    L = c // 2
    rows = list(range(0, c, 2)) + list(range(1, c, 2))  # x channels, then y channels
    grid = np.full((c * (k + 1) + 1, f * (k + 1) + 1), np.nan)
    for col, j in enumerate(range(f) if order is None else order):
        v = np.abs(w[j]).max() or 1.0
        for r, ch in enumerate(rows):
            grid[r * (k + 1) + 1:r * (k + 1) + 1 + k, col * (k + 1) + 1:col * (k + 1) + 1 + k] = w[j, ch] / v
    if ax is None:
        _, ax = plt.subplots(figsize=(min(16, 0.45 * f + 1.5), 0.23 * c + 1.2))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="white")
    ax.imshow(grid, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([(r + 0.5) * (k + 1) for r in (0, L)], [f"x1 … x{L}", f"y1 … y{L}"], fontsize=8)
    ax.set_title(title, fontsize=9)
    return ax


def show_confusion(cm: np.ndarray, classes: list[str], title: str = "", ax=None, normalize: bool = True):
    """A confusion matrix (rows: true class, columns: predicted), row-normalised by default."""
    cm = np.asarray(cm, dtype=float)
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.38 * len(classes) + 2, 0.38 * len(classes) + 1.5))
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return ax


def show_curves(histories: dict, key: str = "loss", ax=None, xkey: str = "step"):
    """Training curves: ``{label: list of dict rows}`` (the trainer's history), one line each."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    for label, rows in histories.items():
        rows = [r for r in rows if r.get(key) is not None]
        ax.plot([r[xkey] for r in rows], [r[key] for r in rows], label=label)
    ax.set_xlabel(xkey)
    ax.set_ylabel(key)
    ax.legend(fontsize=8)
    return ax


def bar_compare(rows: dict, ylabel: str = "accuracy (%)", title: str = "", ax=None):
    """Grouped bars: ``{setting: {"lab": value, "paper": value}}`` (either may be missing)."""
    names = list(rows)
    series = sorted({k for v in rows.values() for k in v})
    if ax is None:
        _, ax = plt.subplots(figsize=(1.4 * len(names) + 2, 3))
    width = 0.8 / len(series)
    for j, s in enumerate(series):
        vals = [rows[n].get(s, np.nan) for n in names]
        ax.bar(np.arange(len(names)) + j * width, vals, width, label=s)
    ax.set_xticks(np.arange(len(names)) + width * (len(series) - 1) / 2, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return ax


def animate(frames: np.ndarray, fps: int = 12, scale: float = 2.0, title: str | None = None):
    """An HTML animation of ``(T, H, W, 3)`` frames that plays in static pages (``to_jshtml``, no kernel).

    Returns an ``IPython.display.HTML`` object."""
    from IPython.display import HTML
    from matplotlib import animation

    frames = np.asarray(frames)
    h, w = frames.shape[1:3]
    fig, ax = plt.subplots(figsize=(scale * w / 72, scale * h / 72 + (0.3 if title else 0)), dpi=72)
    im = ax.imshow(frames[0])
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()

    def update(i):
        im.set_data(frames[i])
        return (im,)

    anim = animation.FuncAnimation(fig, update, frames=len(frames), interval=1000 / fps, blit=True)
    with plt.rc_context({"animation.frame_format": "jpeg"}):  # JPEG frames: pages ~6x lighter than PNG
        html = HTML(anim.to_jshtml(default_mode="loop"))
    plt.close(fig)
    return html


def two_stream_diagram(frame: np.ndarray, flows: np.ndarray, classes: int = 101):
    """The paper's Fig. 1, drawn: one RGB frame -> the spatial stream ConvNet, a stack of optical flow fields -> the
    temporal stream ConvNet, each ending in class scores, fused late (averaging or an SVM).

    Args:
        frame: ``(H, W, 3)`` uint8, the frame the spatial stream sees.
        flows: ``(L, H, W, 2)`` px, the flow fields the temporal stream stacks (shown in Middlebury colours).
        classes: the softmax size written under the nets.
    """
    from .flow import flow_to_color

    fig = plt.figure(figsize=(12, 4.6))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 4.6)
    ax.set_axis_off()
    h, w = frame.shape[:2]
    aspect = h / w

    def image(x, y, im, width):
        ax.imshow(im, extent=(x, x + width, y, y + width * aspect), zorder=3)
        ax.add_patch(FancyBboxPatch((x, y), width, width * aspect, boxstyle="square,pad=0", fill=False, lw=0.8,
                                    zorder=4))

    def arrow(x0, y0, x1, y1):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=14, lw=1.2, color="0.3"))

    layers = ["conv1", "conv2", "conv3", "conv4", "conv5", "full6", "full7", "softmax"]
    mag = np.linalg.norm(flows, axis=-1)
    scale = float(np.percentile(mag[mag > 0.2], 90)) if (mag > 0.2).any() else 1.0  # saturated: limbs stand out
    for y, name, color, inputs in ((2.55, "spatial stream ConvNet", "#f4a261", "single frame"),
                                   (0.35, "temporal stream ConvNet", "#4c8bf5", f"multi-frame optical flow "
                                                                              f"(L = {len(flows)})")):
        if name.startswith("spatial"):
            image(0.3, y + 0.15, frame, 1.6)
        else:
            for k in range(min(len(flows), 5))[::-1]:  # a stack, back to front
                image(0.3 + 0.09 * k, y + 0.15 + 0.09 * k, flow_to_color(flows[k], max_magnitude=scale), 1.6)
        ax.text(1.1, y + 1.65 + (0.35 if "flow" in inputs else 0), inputs, ha="center", fontsize=9)
        arrow(2.45, y + 0.75, 2.85, y + 0.75)
        for i, lay in enumerate(layers):
            x = 2.95 + i * 0.78
            ax.add_patch(FancyBboxPatch((x, y + 0.25), 0.6, 1.0, boxstyle="round,pad=0.02", fc=color,
                                        ec="0.2", lw=0.8, alpha=0.35 + 0.08 * i))
            ax.text(x + 0.3, y + 0.75, lay, ha="center", va="center", fontsize=8, rotation=90)
        ax.text(2.95 + 3.1, y + 1.45, name, ha="center", fontsize=10, weight="bold")
        arrow(2.95 + 7 * 0.78 + 0.62, y + 0.75, 9.55, y + 0.75 + (0.55 if y < 1 else -0.55))
    ax.add_patch(FancyBboxPatch((9.6, 1.45), 2.1, 1.2, boxstyle="round,pad=0.05", fc="#9bd39b", ec="0.2", lw=0.8))
    ax.text(10.65, 2.05, "class score\nfusion\n(average or SVM)", ha="center", va="center", fontsize=9)
    ax.text(6.05, 2.2, f"each: CNN-M-2048, {classes}-way softmax", ha="center", fontsize=8, color="0.35")
    return fig


def multitask_diagram(heads: list[tuple[str, int]], L: int = 10):
    """Multitask learning (§4), drawn: one temporal-stream trunk (conv1 ... full7) shared by every dataset, one
    softmax head per dataset, each head's cross-entropy taken on its own dataset's samples, the losses summed.

    Args:
        heads: ``(dataset, number of classes)`` per head, in head order (head 0 first).
        L: the stacked flow fields of the input (``2L`` channels).
    """
    height = 0.7 + 1.1 * len(heads)
    tops = [height - 0.85 - 1.1 * k for k in range(len(heads))]  # each head's box
    fig = plt.figure(figsize=(11, height - tops[-1] + 0.45))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, 11)
    ax.set_ylim(tops[-1] - 0.45, height)
    ax.set_axis_off()
    mid = float(np.mean(tops)) + 0.35

    def box(x, y, w, h, text, fc):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.03", fc=fc, ec="0.2", lw=0.8))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5)

    def arrow(x0, y0, x1, y1):
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, lw=1.1, color="0.3"))

    box(0.2, mid - 0.45, 1.5, 0.9, f"flow stack\n{2 * L} channels\n(any dataset)", "#dde7fb")
    arrow(1.75, mid, 2.05, mid)
    for i, lay in enumerate(["conv1", "conv2", "conv3", "conv4", "conv5", "full6", "full7"]):
        box(2.1 + 0.62 * i, mid - 0.5, 0.5, 1.0, lay, "#4c8bf5" if i < 5 else "#7fa8f7")
    ax.text(2.1 + 0.62 * 3.25, mid + 0.7, "one trunk, shared by every dataset", ha="center", fontsize=9.5,
            weight="bold")
    for k, (name, n) in enumerate(heads):
        y = tops[k]
        arrow(6.45, mid, 6.95, y + 0.35)
        box(7.0, y, 1.7, 0.7, f"head {k}: softmax\n{n} {name} classes", "#f4d35e")
        arrow(8.75, y + 0.35, 9.05, y + 0.35)
        box(9.1, y, 1.7, 0.7, f"cross-entropy on\n{name} samples only", "#f7e7a6")
    ax.text(9.95, tops[-1] - 0.3, "the losses are summed", ha="center", fontsize=9, style="italic")
    return fig
