"""Reading and writing videos with OpenCV.

Videos are handled as ``(T, H, W, 3)`` uint8 RGB numpy arrays throughout the library
(OpenCV's BGR order is converted at the boundary, here and nowhere else).

Every failure names the file: a missing path, a file OpenCV cannot open, a file that
decodes to no frames (empty or corrupt), or one that stops decoding early.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .errors import UserError

__all__ = [
    "VideoError",
    "read_video",
    "iter_frames",
    "write_video",
    "frame_count",
    "video_info",
    "resize_short_side",
    "short_side_size",
]


class VideoError(UserError, RuntimeError):
    """A video could not be read or written. The message names the file and the problem."""


def _open(path: str | os.PathLike) -> cv2.VideoCapture:
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such video file")
    if path.is_dir():
        raise VideoError(f"{path}: is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"{path}: OpenCV cannot open this file (corrupt or unsupported container/codec)")
    return cap


def video_info(path: str | os.PathLike) -> dict:
    """Container metadata: ``{"frames", "fps", "width", "height"}``.

    ``frames`` is the count the container *claims*; use :func:`frame_count` for the
    number of frames that actually decode.
    """
    cap = _open(path)
    try:
        return {
            "frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT)),
            "fps": float(cap.get(cv2.CAP_PROP_FPS)),
            "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        }
    finally:
        cap.release()


def iter_frames(path: str | os.PathLike, short_side: int | None = None):
    """Yield the frames of a video one at a time as ``(H, W, 3)`` uint8 RGB arrays.

    Args:
        path: the video file.
        short_side: if given, each frame is resized so its shorter side has this length
            (aspect ratio kept), as the paper rescales to 256 (§5).

    Raises:
        VideoError: the file is missing, cannot be opened, or decodes to no frame at all.
    """
    cap = _open(path)
    n = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            n += 1
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if short_side is not None:
                rgb = resize_short_side(rgb, short_side)
            yield rgb
    finally:
        cap.release()
    if n == 0:
        raise VideoError(f"{path}: no frame could be decoded (empty or corrupt video)")


def read_video(path: str | os.PathLike, short_side: int | None = None, min_frames: int = 1) -> np.ndarray:
    """Decode a whole video.

    Args:
        path: the video file.
        short_side: optional short-side resize (see :func:`resize_short_side`).
        min_frames: raise if fewer frames decode than this (e.g. ``L + 1`` for a flow stack).

    Returns:
        ``(T, H, W, 3)`` uint8 RGB array.

    Raises:
        VideoError: missing/unreadable/corrupt/empty file, or a video shorter than ``min_frames``,
            or one that decodes to far fewer frames than its header claims (truncated file).
    """
    frames = list(iter_frames(path, short_side=short_side))
    video = np.stack(frames)
    if len(video) < min_frames:
        raise VideoError(f"{path}: only {len(video)} frame(s) decoded, at least {min_frames} needed")
    claimed = video_info(path)["frames"]
    # Containers may round the count by a frame or two; a file that stops decoding well
    # before its claimed length is truncated or corrupt, and silently using the head of it
    # would mislabel the rest of the pipeline's statistics.
    if claimed > 0 and len(video) < 0.9 * claimed - 2:
        raise VideoError(
            f"{path}: truncated or corrupt: header says {claimed} frames but only {len(video)} decode"
        )
    return video


def frame_count(path: str | os.PathLike) -> int:
    """The number of frames that actually decode (decodes the whole file; exact, unlike the header)."""
    cap = _open(path)
    n = 0
    try:
        while cap.grab():
            n += 1
    finally:
        cap.release()
    if n == 0:
        raise VideoError(f"{path}: no frame could be decoded (empty or corrupt video)")
    return n


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 25.0, fourcc: str = "XVID") -> None:
    """Write ``(T, H, W, 3)`` uint8 RGB frames to ``path`` (``.avi``, XVID like UCF-101 by default).

    The file is written to a temporary name beside ``path`` and renamed when complete, so a
    killed writer never leaves a half-written video under the final name.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if len(frames) == 0:
        raise ValueError(f"{path}: refusing to write a video with no frames")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        raise VideoError(f"{path}: OpenCV cannot open a {fourcc} writer")
    try:
        for f in frames:
            writer.write(cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    os.replace(tmp, path)


def short_side_size(h: int, w: int, short_side: int) -> tuple[int, int]:
    """``(new_h, new_w)`` with the shorter side equal to ``short_side`` and the aspect ratio kept."""
    if h <= w:
        return short_side, max(1, round(w * short_side / h))
    return max(1, round(h * short_side / w)), short_side


def resize_short_side(image: np.ndarray, short_side: int, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Resize an ``(H, W, C)`` image so that ``min(H, W) == short_side``.

    Works for any channel count (RGB frames, 2-channel flow). Note: resizing a *flow* field
    also has to scale its values; see ``flow.resize_flow``.
    """
    h, w = image.shape[:2]
    nh, nw = short_side_size(h, w, short_side)
    if (nh, nw) == (h, w):
        return image
    if nh > h and interpolation == cv2.INTER_AREA:
        interpolation = cv2.INTER_LINEAR
    out = cv2.resize(image, (nw, nh), interpolation=interpolation)
    if image.ndim == 3 and out.ndim == 2:
        out = out[..., None]
    return out
