"""The lab's analogue of ImageNet pre-training (paper §5, Table 1a): a procedural still-image dataset.

The paper's spatial net is pre-trained on ImageNet (ILSVRC-2012) and then fine-tuned on UCF-101, or only its last
layer is retrained; both beat training from scratch (Table 1a). ImageNet is *generic objects and scenes*, its
labels are not the target actions, and it holds no motion. :func:`make_stills` models that for the lab: single
images (no temporal information) of objects, scenes and textures drawn with the lab renderer's own public
primitives (:mod:`twostream_lib.lab.render`: textured backgrounds, water and court floors, capsules, discs and
ellipses), with random backgrounds, colours, positions and scales, framed on the object (objects are larger than in
the lab videos, as ImageNet photos are framed on their object). Like ImageNet it has breadth: its labels
(:data:`STILLS_CLASSES`) name the props and floors of the lab's scenes, more objects built from the same parts, and
whole-frame textures, none of them an action class of lab-ucf or lab-hmdb (a net whose frozen features must serve a
new classifier, Table 1a's last-layer row, needs features that general). There are no human figures: labels of
figures in poses (arms up, seated, ...) would name the very postures that define the lab's action classes, handing
the spatial net part of the answer, and ImageNet has no such labels either.

This module is the data only (it sits below the trainer: it does not import :mod:`twostream_lib.train`).
Pre-training is training: one ordinary run (``configs/lab_pretrain.yaml``) trained on :func:`stills_run_data` by
:mod:`twostream_lib.pretrain` (:func:`~twostream_lib.pretrain.pretrain`,
:func:`~twostream_lib.pretrain.pretrain_run`; ``python -m twostream_lib pretrain``), whose ``best.pt`` starts a lab
spatial run with ``init_from=`` (``finetune=all``: fine-tuning; ``finetune=last``: the last layer only).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import ConfigError, TrainConfig
from ..data import RunData, VideoCache, holdout, make_dataset
from .motions import PI, rand_color
from .render import STYLE, Part, Scene, background, render_scene, tileable_noise
from .specs import SCALES

__all__ = ["STILLS_CLASSES", "STILLS_PER_CLASS", "STILLS_SEED", "make_stills", "StillsCache", "stills_run_data"]

#: object, scene and texture classes (ImageNet's role: many generic labels, none of them the target actions): the
#: lab scenes' own props and floors, more objects built from the same parts (balls in numbers and sizes, sticks in
#: figures, posts and frames), and whole-frame textures (as texture datasets label surfaces)
STILLS_CLASSES: tuple[str, ...] = (
    "ball", "three balls", "water", "court floor", "chair", "bar",
    "two balls", "ring of balls", "row of balls", "big ball", "egg", "stick", "cross", "triangle", "square frame",
    "pole", "fence", "ladder", "stool", "table",
    "noise texture", "blob texture", "striped texture", "tiled texture", "wallpaper texture", "brick texture",
)
#: images per class of the pre-training set, and its seed (fixed data, as ImageNet is; not the run's seed)
STILLS_PER_CLASS = 100
STILLS_SEED = 0
_WALLS = ("noise", "blobs", "stripes", "tiles", "wallpaper", "bricks", "noise_muted")
_TEXTURES = {"noise texture": "noise", "blob texture": "blobs", "striped texture": "stripes",
             "tiled texture": "tiles", "wallpaper texture": "wallpaper", "brick texture": "bricks"}


# ---------------------------------------------------------------------------------------------- drawing
def _part(x, y, a, L, r, color, rng, shape="capsule", contrast=0.4, figure=False) -> Part:
    """A one-frame :class:`~twostream_lib.lab.render.Part` at ``(x, y)`` pixels, direction ``a``."""
    return Part(x=np.array([float(x)]), y=np.array([float(y)]), a=np.array([float(a)]), L=float(L),
                 r=float(max(r, 0.8)), color=np.asarray(color, np.float32), shape=shape,
                 tex=(float(rng.uniform(0, 64)), float(rng.uniform(0, 64))), contrast=contrast, figure=figure)


def _chair(rng, x0, ground, h, sg, seat: float = 0.45) -> list[Part]:
    """The sit-down chair of :mod:`~twostream_lib.lab.motions` (back at ``x0``, facing ``sg``; seat ``seat``
    figure units high), ``h`` pixels per figure unit."""
    wood = rand_color(rng, (0.05, 0.12), (0.4, 0.8), (0.35, 0.7))
    sy = ground - seat * h
    return [_part(x0, sy, 0.0, seat * h, 0.018 * h, wood, rng, contrast=0.35),
            _part(x0 + sg * 0.22 * h, sy, 0.0, seat * h, 0.018 * h, wood, rng, contrast=0.35),
            _part(x0, sy, PI, 0.3 * h, 0.02 * h, wood, rng, contrast=0.35),
            _part(x0, sy, sg * PI / 2, 0.22 * h, 0.022 * h, wood, rng, contrast=0.35)]


def _stick(cx, cy, a, length, r, color, rng) -> Part:
    """A stick of ``length`` pixels centred on ``(cx, cy)`` along direction ``a``."""
    return _part(cx - 0.5 * length * np.sin(a), cy - 0.5 * length * np.cos(a), a, length, r, color, rng,
                 contrast=0.35)


def _polygon(rng, cx, cy, n, radius, r, color) -> list[Part]:
    """The ``n`` sides of a regular polygon of circumradius ``radius`` around ``(cx, cy)``, randomly turned."""
    t0 = rng.uniform(0, 2 * PI)
    corners = [(cx + radius * np.sin(t0 + 2 * PI * k / n), cy + radius * np.cos(t0 + 2 * PI * k / n))
               for k in range(n + 1)]
    return [_part(x0, y0, np.arctan2(x1 - x0, y1 - y0), float(np.hypot(x1 - x0, y1 - y0)), r, color, rng,
                  contrast=0.35) for (x0, y0), (x1, y1) in zip(corners, corners[1:])]


def _balls(rng, centres, r, contrast=0.5) -> list[Part]:
    return [_part(x, y, rng.uniform(0, 2 * PI), 0.0, r, rand_color(rng, (0, 1), (0.6, 1.0), (0.7, 1.0)), rng,
                  contrast=contrast) for x, y in centres]


def _ball_groups(rng, cls: str, H: int, cx: float, cy: float, col) -> list[Part]:
    """Balls in numbers and sizes, and the egg."""
    if cls == "two balls":
        a, d, r = rng.uniform(0, PI), rng.uniform(0.12, 0.22) * H, rng.uniform(0.05, 0.1) * H
        return _balls(rng, [(cx + s * d * np.sin(a), cy + s * d * np.cos(a)) for s in (-1, 1)], r)
    if cls == "ring of balls":
        n, rad, t0 = int(rng.integers(6, 9)), rng.uniform(0.2, 0.32) * H, rng.uniform(0, 2 * PI)
        return _balls(rng, [(cx + rad * np.sin(t0 + 2 * PI * k / n), cy + rad * np.cos(t0 + 2 * PI * k / n))
                            for k in range(n)], rng.uniform(0.03, 0.05) * H)
    if cls == "row of balls":
        n, a, step = int(rng.integers(4, 6)), rng.uniform(0, PI), rng.uniform(0.1, 0.14) * H
        return _balls(rng, [(cx + (k - (n - 1) / 2) * step * np.sin(a), cy + (k - (n - 1) / 2) * step * np.cos(a))
                            for k in range(n)], rng.uniform(0.03, 0.05) * H)
    if cls == "big ball":
        return _balls(rng, [(cx, cy)], rng.uniform(0.28, 0.4) * H, contrast=0.6)
    a, length = rng.uniform(0, 2 * PI), rng.uniform(0.35, 0.55) * H  # the egg
    return [_part(cx - 0.5 * length * np.sin(a), cy - 0.5 * length * np.cos(a), a, length,
                  rng.uniform(0.3, 0.45) * length, col, rng, shape="ellipse", contrast=0.5)]


def _stick_figures(rng, cls: str, H: int, cx: float, cy: float, col, thick: float) -> list[Part]:
    """A stick, a cross, a triangle, a square frame."""
    if cls == "stick":
        return [_stick(cx, cy, rng.uniform(0, PI), rng.uniform(0.5, 0.85) * H, thick, col, rng)]
    if cls == "cross":
        a, length = rng.uniform(0, PI), rng.uniform(0.45, 0.75) * H
        return [_stick(cx, cy, a, length, thick, col, rng),
                _stick(cx, cy, a + PI / 2 + rng.uniform(-0.3, 0.3), length, thick, col, rng)]
    return _polygon(rng, cx, cy, 3 if cls == "triangle" else 4, rng.uniform(0.25, 0.4) * H, thick, col)


def _standing(rng, cls: str, H: int, W: int, cx: float, ground: float, col, thick: float) -> list[Part]:
    """Things that stand on the ground: a pole, a fence, a ladder (posts and rails), a stool, a table (a top on
    two legs)."""
    top = ground - rng.uniform(0.5, 0.8) * H
    if cls == "pole":
        return [_part(cx, top, 0.0, ground - top, thick, col, rng, contrast=0.35),
                _part(cx, top, 0.0, 0.0, 2.2 * thick, col, rng, contrast=0.35)]
    if cls in ("fence", "ladder"):
        n_posts, half = (int(rng.integers(4, 7)), rng.uniform(0.3, 0.42) * W) if cls == "fence" else \
            (2, rng.uniform(0.08, 0.14) * W)
        xs = np.linspace(cx - half, cx + half, n_posts)
        rails = rng.uniform(0.15, 0.35, 2) if cls == "fence" else np.linspace(0.1, 0.9, int(rng.integers(4, 7)))
        return ([_part(x, top, 0.0, ground - top, thick, col, rng, contrast=0.35) for x in xs]
                + [_part(xs[0], top + f * (ground - top), PI / 2, xs[-1] - xs[0], 0.8 * thick, col, rng,
                         contrast=0.35) for f in rails])
    half = rng.uniform(0.12, 0.2) * W if cls == "stool" else rng.uniform(0.25, 0.4) * W
    height = rng.uniform(0.25, 0.4) * H if cls == "stool" else rng.uniform(0.35, 0.5) * H
    ty = ground - height
    return [_part(cx - half, ty, PI / 2, 2 * half, 1.6 * thick, col, rng, contrast=0.35),
            _part(cx - 0.85 * half, ty, 0.0, height, thick, col, rng, contrast=0.35),
            _part(cx + 0.85 * half, ty, 0.0, height, thick, col, rng, contrast=0.35)]


def _more_objects(rng, cls: str, H: int, W: int, cx: float, cy: float, ground: float) -> list[Part]:
    """The parts of the classes beyond the lab scenes' own six."""
    col = rand_color(rng, (0, 1), (0.3, 0.9), (0.45, 0.95))
    thick = rng.uniform(0.018, 0.035) * H
    if cls in ("two balls", "ring of balls", "row of balls", "big ball", "egg"):
        return _ball_groups(rng, cls, H, cx, cy, col)
    if cls in ("stick", "cross", "triangle", "square frame"):
        return _stick_figures(rng, cls, H, cx, cy, col, thick)
    return _standing(rng, cls, H, W, cx, ground, col, thick)


def _still(rng, cls: str, H: int, W: int) -> np.ndarray:
    """One (H, W, 3) uint8 image of class ``cls``."""
    style = STYLE["lab-ucf" if rng.random() < 0.5 else "lab-hmdb"]
    unit = W / 128.0
    texture = _TEXTURES.get(cls)
    wall = texture or ("water" if cls == "water" and rng.random() < 0.5 else str(rng.choice(_WALLS)))
    bg = background(rng, wall, H, W, unit, style)
    floor = {"water": "water", "court floor": "court"}.get(cls, "noise")
    lo, hi = (0.15, 0.55) if cls in ("water", "court floor") else (0.55, 0.95)
    horizon = int(H * rng.uniform(lo, hi))
    if texture is None and (cls in ("water", "court floor") or rng.random() < 0.6):
        bg[horizon:] = background(rng, floor, H, W, unit, style)[horizon:]
    ground = H * rng.uniform(0.85, 0.97)
    cx, cy = W / 2 + rng.uniform(-0.12, 0.12) * W, H / 2 + rng.uniform(-0.12, 0.12) * H
    parts: list[Part] = []
    if cls == "ball":
        hue = (0.04, 0.09) if rng.random() < 0.5 else (0, 1)
        col = rand_color(rng, hue, (0.6, 0.95), (0.7, 1.0))
        parts.append(_part(cx, cy, rng.uniform(0, 2 * PI), 0.0, rng.uniform(0.09, 0.2) * H, col, rng,
                           contrast=0.6))
    elif cls == "three balls":
        r, arc = rng.uniform(0.045, 0.08) * H, rng.uniform(0.15, 0.3) * H
        a0 = rng.uniform(0, 2 * PI)
        for i, hue in enumerate(rng.permutation([0.0, 0.3, 0.6])):
            b = a0 + 2 * PI * i / 3 + rng.uniform(-0.3, 0.3)
            col = rand_color(rng, (hue, hue + 0.08), (0.7, 1.0), (0.8, 1.0))
            parts.append(_part(cx + arc * np.cos(b), cy + arc * np.sin(b), rng.uniform(0, 2 * PI), 0.0, r, col,
                               rng, contrast=0.5))
    elif cls == "chair":
        seat = rng.uniform(0.4, 0.5)
        h = min(H * rng.uniform(0.9, 1.6), (ground - 0.03 * H) / (seat + 0.3))
        sg = -1.0 if rng.random() < 0.5 else 1.0
        parts += _chair(rng, cx - sg * 0.11 * h, ground, h, sg, seat)
    elif cls == "bar":
        h = min(H * rng.uniform(0.5, 0.8), 0.9 * W)
        metal = rand_color(rng, (0.0, 1.0), (0.0, 0.15), (0.55, 0.85))
        by = ground - rng.uniform(0.8, 1.1) * h
        parts += [_part(cx - 0.45 * h, by, PI / 2, 0.9 * h, 0.022 * h, metal, rng, contrast=0.35),
                  _part(cx - 0.45 * h, by, 0.0, ground - by, 0.025 * h, metal, rng, contrast=0.35),
                  _part(cx + 0.45 * h, by, 0.0, ground - by, 0.025 * h, metal, rng, contrast=0.35)]
    elif texture is None and cls not in ("water", "court floor"):
        parts += _more_objects(rng, cls, H, W, cx, cy, ground)
    atlas = tileable_noise(rng, 64, sigma=max(rng.uniform(1.2, 2.2) * unit, 1.1))
    noise = rng.uniform(*style["noise"])
    sc = Scene(1, H, W, parts, np.ones(1), np.full(1, (W - 1) / 2), np.full(1, (H - 1) / 2), bg, (0.0, 0.0),
                atlas.astype(np.float32), noise)
    frames, _, _ = render_scene(sc, True, False, rng)
    return frames[0]


def make_stills(n_per_class: int, size: tuple[int, int] = (96, 128), seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
    """The still-image pre-training set, generated in memory.

    Args:
        n_per_class: images of each of the :data:`STILLS_CLASSES`.
        size: ``(H, W)`` of the images (the lab scale's frame size: 96x128 for ``small``).
        seed: the same seed gives the same images (each image's RNG is seeded by ``(seed, class, index)``).
    Returns:
        ``images`` ``(N, H, W, 3)`` uint8 RGB and ``labels`` ``(N,)`` int64 (indices into :data:`STILLS_CLASSES`),
        ``N = n_per_class * len(STILLS_CLASSES)``, class by class.
    """
    H, W = int(size[0]), int(size[1])
    n = int(n_per_class)
    images = np.empty((n * len(STILLS_CLASSES), H, W, 3), np.uint8)
    labels = np.repeat(np.arange(len(STILLS_CLASSES), dtype=np.int64), n)
    for k, cls in enumerate(STILLS_CLASSES):
        for i in range(n):
            images[k * n + i] = _still(np.random.default_rng([int(seed), 7919, k, i]), cls, H, W)
    return images, labels


# ---------------------------------------------------------------------------------------------- datasets
class StillsCache(VideoCache):
    """In-memory images seen as a :class:`~twostream_lib.data.VideoCache` of one-frame videos, so that the
    spatial stream's own :class:`~twostream_lib.data.SpatialDataset` (crops, flips, RGB jitter, ImageNet
    normalisation, test views) reads them unchanged."""

    def __init__(self, images: np.ndarray, name: str = "lab-stills"):  # noqa: D107 - no files to read
        self.root = Path(f"<{name} in memory>")
        self.images = images
        n, H, W = images.shape[:3]
        self.settings = {"dataset": name, "flow": None, "bound": 1.0}
        self.videos = {self.video_id(i): {"frames": 1, "flows": 0, "height": H, "width": W} for i in range(n)}
        self.manifest = {"videos": self.videos}
        self.bound = 1.0

    @staticmethod
    def video_id(i: int) -> str:
        return f"still_{i:06d}"

    def rgb(self, vid: str, i: int) -> np.ndarray:
        if i != 0:
            raise IndexError(f"{vid}: a still has one frame, asked for {i}")
        return self.images[int(vid.rsplit("_", 1)[1])]


def _stills_size(cfg: TrainConfig) -> tuple[int, int]:
    """The lab scale's frame size, read from the run's root ``<data_dir>/lab/<scale>/lab-stills``; else frames
    of the lab's 3:4 shape around the crop."""
    scale = Path(cfg.roots[0]).parent.name
    if scale in SCALES:
        return SCALES[scale]["height"], SCALES[scale]["width"]
    h = int(round(cfg.crop_size * 1.2))
    return h, int(round(h * 4 / 3))


def stills_run_data(cfg: TrainConfig, n_per_class: int = STILLS_PER_CLASS, seed: int = STILLS_SEED,
                    size: tuple[int, int] | None = None) -> RunData:
    """The pre-training run's :class:`~twostream_lib.data.RunData`: the stills (:func:`make_stills`, generated in
    memory: ~5 ms an image at 96x128, so not kept on disk) at the lab scale's frame size (``size``, else read from
    ``cfg.roots[0]`` = ``<data_dir>/lab/<scale>/lab-stills``), a held-out ``val_fraction`` of each class for model
    selection, and the spatial stream's own datasets over them (``cfg.crop_size`` crops, flips, RGB jitter,
    ImageNet normalisation)."""
    if cfg.stream != "spatial":
        raise ConfigError(f"{cfg.name}: pre-training on the stills needs stream: spatial (got stream: {cfg.stream})")
    size = size or _stills_size(cfg)
    images, labels = make_stills(n_per_class, size, seed)
    cache = StillsCache(images)
    items = [(cache.video_id(i), int(lab)) for i, lab in enumerate(labels)]
    tr, val = holdout(items, fraction=cfg.val_fraction, seed=cfg.seed)
    train_set = make_dataset(cfg, cache, tr, "train")
    val_sets = [make_dataset(cfg, cache, val, "test", frames=cfg.val_frames, crops=cfg.val_crops)] if val else []
    return RunData(train_set, list(train_set.labels), val_sets, [list(STILLS_CLASSES)])
