"""The paper's test protocol (§6 "Testing"), defined once for the whole library.

"At test time, given a video, we sample a fixed number of frames (25 in our experiments) with equal temporal
spacing between them. From each of the frames we then obtain 10 ConvNet inputs by cropping and flipping four
corners and the center of the frame. The class scores for the whole video are then obtained by averaging the
scores across the sampled frames and crops therein."

A *view* is one ConvNet input. A video gets ``frames`` equally spaced frames (or flow stacks), each cut into
``crops`` views: 10 = four corners + centre and their horizontal flips (the paper), 5 = no flips, 1 = centre only.
"""
from __future__ import annotations

import numpy as np

__all__ = ["TEST_FRAMES", "TEST_CROPS", "CROP_CHOICES", "check_views", "spaced_positions", "crop_boxes"]

#: frames (or flow stacks) per test video (§6)
TEST_FRAMES = 25
#: views per test frame (§6): 4 corners + centre, and their horizontal flips
TEST_CROPS = 10
#: the crop counts the library knows: 10 (the paper), 5 (no flips), 1 (centre only)
CROP_CHOICES = (1, 5, 10)


def check_views(frames: int, crops: int, where: str = "") -> None:
    """Raise ``ValueError`` (prefixed with ``where``) unless ``frames >= 1`` and ``crops`` is one of
    :data:`CROP_CHOICES`."""
    pre = f"{where}: " if where else ""
    if int(frames) < 1:
        raise ValueError(f"{pre}frames must be >= 1 (the paper uses {TEST_FRAMES}), got {frames}")
    if crops not in CROP_CHOICES:
        raise ValueError(f"{pre}crops must be 1 (centre), 5 (corners + centre) or 10 (and their flips), got {crops}")


def spaced_positions(first: int, last: int, n: int = TEST_FRAMES) -> list[int]:
    """``n`` equally spaced positions in ``[first, last]`` (inclusive), as the paper's 25 test frames."""
    return np.linspace(first, last, n).round().astype(int).tolist()


def crop_boxes(h: int, w: int, size: int, crops: int = TEST_CROPS) -> list[tuple[int, int]]:
    """Top-left corners ``(y0, x0)`` of the ``size`` squares cut from an ``h x w`` frame: the 4 corners and the
    centre (``crops`` 5 or 10; with 10 each is used once more, flipped), or the centre alone (``crops=1``)."""
    boxes = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), ((h - size) // 2, (w - size) // 2)]
    return boxes[4:5] if crops == 1 else boxes
