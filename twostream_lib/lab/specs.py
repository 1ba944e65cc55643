"""What determines one lab clip (:class:`ClipSpec`), the lab's scales, and every clip of a dataset at a scale.

Everything is deterministic for a seed: every clip has its own RNG seeded from ``(seed, dataset, class, clip
index)`` (:func:`clip_rng`), so parallel workers give identical files.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .classes import dataset_classes

__all__ = ["SCALES", "ClipSpec", "clip_rng", "check_scale", "clip_spec", "lab_clip_specs"]

#: height, width, UCF groups per class, clips per group (min, max), HMDB clips per class (min, max) and how many
#: of them each split trains on (the rest are test clips), clip length in frames (min, max).
SCALES: dict[str, dict] = {
    "tiny": dict(height=48, width=64, ucf_groups=3, ucf_clips=(1, 2), hmdb_clips=(4, 5), hmdb_train=3,
                 frames=(12, 20)),
    "small": dict(height=96, width=128, ucf_groups=12, ucf_clips=(2, 3), hmdb_clips=(12, 16), hmdb_train=6,
                  frames=(50, 100)),
    "full": dict(height=240, width=320, ucf_groups=25, ucf_clips=(4, 7), hmdb_clips=(40, 60), hmdb_train=24,
                 frames=(50, 100)),
}


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one rendered clip (its RNG is seeded from these fields).

    ``index`` is ``(group, clip)`` for lab-ucf and ``(clip, 0)`` for lab-hmdb; ``name`` is the
    file stem and ``rel`` the video path relative to the dataset root.
    """
    dataset: str
    cls: str
    index: tuple[int, int]
    seed: int
    height: int
    width: int
    n_frames: int
    name: str = ""
    rel: str = ""


def _crc(s: str) -> int:
    return zlib.crc32(s.encode("utf-8")) & 0xFFFFFFFF


def clip_rng(seed: int, *keys) -> np.random.Generator:
    ints = [int(seed) & 0xFFFFFFFF] + [_crc(k) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(ints))


def check_scale(scale: str) -> dict:
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    return SCALES[scale]


def clip_spec(dataset: str, cls: str, index: int = 0, seed: int = 0, scale: str = "tiny",
              n_frames: int | None = None) -> ClipSpec:
    """A stand-alone clip spec (for notebooks and tests), not necessarily one of the dataset's."""
    cfg = check_scale(scale)
    if cls not in dataset_classes(dataset):
        raise ValueError(f"class {cls!r} is not a {dataset} class; expected one of {dataset_classes(dataset)}")
    if n_frames is None:
        n_frames = int(clip_rng(seed, dataset, cls, "len", index).integers(cfg["frames"][0], cfg["frames"][1] + 1))
    return ClipSpec(dataset, cls, (int(index), 9999), int(seed), cfg["height"], cfg["width"], int(n_frames),
                    name=f"{cls}_{index}", rel=f"{cls}/{cls}_{index}.avi")


def lab_clip_specs(dataset: str, scale: str = "small", seed: int = 0) -> list[ClipSpec]:
    """All clips of a lab dataset at a scale, in file order (class, group, clip)."""
    cfg = check_scale(scale)
    out = []
    for cls in sorted(dataset_classes(dataset)):
        lr = clip_rng(seed, dataset, cls, "layout")
        if dataset == "lab-ucf":
            for g in range(1, cfg["ucf_groups"] + 1):
                for c in range(1, int(lr.integers(cfg["ucf_clips"][0], cfg["ucf_clips"][1] + 1)) + 1):
                    n = int(lr.integers(cfg["frames"][0], cfg["frames"][1] + 1))
                    name = f"v_{cls}_g{g:02d}_c{c:02d}"
                    out.append(ClipSpec(dataset, cls, (g, c), seed, cfg["height"], cfg["width"], n,
                                        name, f"{cls}/{name}.avi"))
        else:
            for i in range(1, int(lr.integers(cfg["hmdb_clips"][0], cfg["hmdb_clips"][1] + 1)) + 1):
                n = int(lr.integers(cfg["frames"][0], cfg["frames"][1] + 1))
                name = f"{cls}_v{i:03d}"
                out.append(ClipSpec(dataset, cls, (i, 0), seed, cfg["height"], cfg["width"], n,
                                    name, f"{cls}/{name}.avi"))
    return out
