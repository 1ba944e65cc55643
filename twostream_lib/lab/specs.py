"""What determines one lab clip (:class:`ClipSpec`), the lab's scales, and every clip of a dataset at a scale.

Everything is deterministic for a seed: every clip has its own RNG seeded from ``(seed, dataset, class, clip
index)`` (:func:`clip_rng`), so parallel workers give identical files.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .classes import dataset_classes

__all__ = ["SCALES", "EXTRA_TEST_SPLIT", "ClipSpec", "clip_rng", "check_scale", "clip_spec", "lab_clip_specs",
           "ucf_test_groups"]

#: height, width, UCF groups per class, clips per group (min, max), HMDB clips per class (min, max) and how many
#: of them each split trains on (the rest are test clips), clip length in frames (min, max); and the test-only
#: clips of split :data:`EXTRA_TEST_SPLIT`: ``ucf_test_extra`` more clips in each of its test groups (per class),
#: ``hmdb_test_extra`` more clips per class. Real test splits are large (UCF-101 split 1: 3,783 videos; HMDB-51:
#: 30 per class): these give the small lab's paired comparisons the test videos their power needs, while no
#: training list changes (the clips are in no training list of any split).
SCALES: dict[str, dict] = {
    "tiny": dict(height=48, width=64, ucf_groups=3, ucf_clips=(1, 2), hmdb_clips=(4, 5), hmdb_train=3,
                 frames=(12, 20), ucf_test_extra=0, hmdb_test_extra=0),
    "small": dict(height=96, width=128, ucf_groups=12, ucf_clips=(2, 3), hmdb_clips=(12, 16), hmdb_train=6,
                  frames=(50, 100), ucf_test_extra=4, hmdb_test_extra=24),
    "full": dict(height=240, width=320, ucf_groups=25, ucf_clips=(4, 7), hmdb_clips=(40, 60), hmdb_train=24,
                 frames=(50, 100), ucf_test_extra=0, hmdb_test_extra=0),
}
#: the split whose test set holds the test-only clips: the book's (its chapters run split 1)
EXTRA_TEST_SPLIT = 1


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
    test_only: bool = False  # one of split EXTRA_TEST_SPLIT's test-only clips (in no training list)


def ucf_test_groups(n_groups: int, split: int) -> range:
    """The test groups of lab-ucf split ``split`` (1-3) among ``n_groups``: UCF-101's rule (split k tests on groups
    7(k-1)+1 .. 7k of 25), scaled to ``n_groups`` and kept disjoint across the three splits."""
    b = max(1, round(7 * n_groups / 25))
    if 3 * b > n_groups - 1:
        b = max(1, (n_groups - 1) // 3)
    return range((split - 1) * b + 1, split * b + 1)


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
        xr = clip_rng(seed, dataset, cls, "test-only")  # its own stream: the other clips stay as they were
        length = lambda rng: int(rng.integers(cfg["frames"][0], cfg["frames"][1] + 1))
        if dataset == "lab-ucf":
            test_g = set(ucf_test_groups(cfg["ucf_groups"], EXTRA_TEST_SPLIT))
            for g in range(1, cfg["ucf_groups"] + 1):
                n_clips = int(lr.integers(cfg["ucf_clips"][0], cfg["ucf_clips"][1] + 1))
                for c in range(1, n_clips + 1):
                    out.append(_ucf_spec(dataset, cls, g, c, seed, cfg, length(lr)))
                for c in range(n_clips + 1, n_clips + 1 + (cfg["ucf_test_extra"] if g in test_g else 0)):
                    out.append(_ucf_spec(dataset, cls, g, c, seed, cfg, length(xr), test_only=True))
        else:
            n_clips = int(lr.integers(cfg["hmdb_clips"][0], cfg["hmdb_clips"][1] + 1))
            for i in range(1, n_clips + 1 + cfg["hmdb_test_extra"]):
                name = f"{cls}_v{i:03d}"
                out.append(ClipSpec(dataset, cls, (i, 0), seed, cfg["height"], cfg["width"],
                                    length(lr if i <= n_clips else xr), name, f"{cls}/{name}.avi",
                                    test_only=i > n_clips))
    return out


def _ucf_spec(dataset, cls, g, c, seed, cfg, n_frames, test_only=False) -> ClipSpec:
    name = f"v_{cls}_g{g:02d}_c{c:02d}"
    return ClipSpec(dataset, cls, (g, c), seed, cfg["height"], cfg["width"], n_frames, name, f"{cls}/{name}.avi",
                    test_only=test_only)
