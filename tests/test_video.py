import cv2
import numpy as np
import pytest

from twostream_lib.video import (VideoError, frame_count, iter_frames, read_video, resize_short_side,
                                 video_info, write_video)


def _frames(t=12, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 255, (h // 4, w // 4), dtype=np.uint8)
    gray = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)  # a smooth texture codecs can keep
    base = np.stack([gray, gray * 0.8 + 20, gray * 0.6 + 40], axis=-1).astype(np.uint8)  # luminance detail, flat chroma
    return np.stack([np.roll(base, i, axis=1) for i in range(t)])


def test_round_trip(tmp_path):
    frames = _frames()
    p = tmp_path / "a.avi"
    write_video(p, frames, fps=25)
    v = read_video(p)
    assert v.shape == frames.shape and v.dtype == np.uint8
    assert frame_count(p) == 12
    info = video_info(p)
    assert info["fps"] == pytest.approx(25) and (info["width"], info["height"]) == (64, 48)
    # lossy codec, but far closer to the original than to another frame
    err = np.abs(v.astype(int) - frames.astype(int)).mean()
    err_other = np.abs(v[1:].astype(int) - frames[:-1].astype(int)).mean()
    assert err < 10 and err < 0.5 * err_other
    # RGB order preserved (not BGR): a pure red video decodes red
    red = np.zeros((5, 32, 32, 3), np.uint8)
    red[..., 0] = 255
    write_video(tmp_path / "red.avi", red)
    r = read_video(tmp_path / "red.avi")
    assert r[..., 0].mean() > 200 and r[..., 2].mean() < 50


def test_short_side_resize(tmp_path):
    frames = _frames(h=240, w=320, t=3)
    write_video(tmp_path / "b.avi", frames)
    v = read_video(tmp_path / "b.avi", short_side=256)
    assert v.shape == (3, 256, 341, 3)
    assert resize_short_side(np.zeros((100, 50, 2), np.float32), 25).shape == (50, 25, 2)


def test_missing_file(tmp_path):
    with pytest.raises(VideoError, match="no such video file"):
        read_video(tmp_path / "nope.avi")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.avi"
    p.write_bytes(b"")
    with pytest.raises(VideoError, match=r"empty\.avi.*empty file"):
        read_video(p)


def test_corrupt_file(tmp_path):
    p = tmp_path / "corrupt.avi"
    p.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="corrupt"):
        read_video(p)


def test_truncated_file(tmp_path):
    p = tmp_path / "full.avi"
    write_video(p, _frames(t=60, seed=1))
    data = p.read_bytes()
    q = tmp_path / "trunc.avi"
    q.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError, match="trunc"):
        read_video(q)


def test_too_short(tmp_path):
    p = tmp_path / "short.avi"
    write_video(p, _frames(t=3))
    with pytest.raises(VideoError, match="only 3 frame"):
        read_video(p, min_frames=11)


def test_write_is_atomic_and_validates(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.avi", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "x.avi", np.zeros((0, 8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
    write_video(tmp_path / "ok.avi", _frames(t=2))
    assert [p.name for p in tmp_path.iterdir()] == ["ok.avi"]


def test_iter_frames_lazy(tmp_path):
    write_video(tmp_path / "c.avi", _frames(t=5))
    it = iter_frames(tmp_path / "c.avi")
    assert next(it).shape == (48, 64, 3)
