"""prepare (cache) and data (datasets) on a small synthetic UCF-layout root with real .avi files."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from twostream_lib.data import (BalancedSampler, MultiTaskDataset, SpatialDataset, TemporalDataset, VideoCache,
                                holdout, items_for)
from twostream_lib.protocol import spaced_positions
from twostream_lib.files import FolderLock, LockError
from twostream_lib.prepare import CacheError, prepare
from twostream_lib.splits import load_split
from twostream_lib.video import write_video

CLASSES = ["MoveLeft", "MoveRight"]


def _texture(h, w, seed):
    rng = np.random.default_rng(seed)
    g = cv2.resize(rng.integers(0, 255, (h // 4, w // 4), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    return np.stack([g, (g * 0.8 + 30).astype(np.uint8), (g * 0.5 + 60).astype(np.uint8)], -1)


def _clip(direction, seed, t=16, h=48, w=64):
    big = _texture(h, w + 2 * t, seed)
    off = t
    frames = []
    for i in range(t):
        x = off + direction * i  # the scene pans 1 px/frame
        frames.append(big[:, x:x + w])
    return np.stack(frames)


def make_root(root: Path, groups=3, t=16):
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CLASSES, 1)))
    rels = []
    for ci, c in enumerate(CLASSES):
        for g in range(1, groups + 1):
            rel = f"{c}/v_{c}_g{g:02d}_c01.avi"
            write_video(root / "UCF-101" / rel, _clip(-1 if ci == 0 else 1, seed=10 * ci + g, t=t))
            rels.append((rel, ci + 1, g))
    for s in (1, 2, 3):
        (lists / f"trainlist0{s}.txt").write_text("".join(f"{r} {i}\n" for r, i, g in rels if g != s))
        (lists / f"testlist0{s}.txt").write_text("".join(f"{r}\n" for r, i, g in rels if g == s))
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("ucf"))


@pytest.fixture(scope="module")
def cache(root, tmp_path_factory):
    c = tmp_path_factory.mktemp("cache") / "c"
    m = prepare("ucf101", root, c, flow="dis", short_side=None, backward=True, progress=False)
    assert m["num_videos"] == 6 and not m["failed"]
    return c


def test_manifest_and_cache(cache):
    vc = VideoCache(cache)
    assert vc.settings["flow"] == "dis" and vc.settings["bound"] == 20
    vid = "UCF-101/MoveRight/v_MoveRight_g01_c01.avi"
    assert vc.num_frames(vid) == 16 and vc.num_flows(vid) == 15
    assert vc.rgb(vid, 0).shape == (48, 64, 3)
    f = vc.flows(vid, [3, 4])
    assert f.shape == (2, 48, 64, 2) and f.dtype == np.float32
    # the scene content moves left by 1 px/frame when the window pans right: flow x ≈ -1 in the interior
    assert np.median(f[:, 8:-8, 8:-8, 0]) == pytest.approx(-1, abs=0.3)
    assert np.median(vc.flows(vid, [3], "backward")[..., 0]) == pytest.approx(1, abs=0.3)


def test_settings_mismatch_refused(root, cache):
    with pytest.raises(CacheError, match=r"other settings \(flow: cache has 'dis', asked 'farneback'"):
        prepare("ucf101", root, cache, flow="farneback", short_side=None, backward=True, progress=False)


def test_rerun_skips(root, cache):
    before = {p: p.stat().st_mtime_ns for p in Path(cache, "videos").rglob("rgb.bin")}
    m = prepare("ucf101", root, cache, flow="dis", short_side=None, backward=True, progress=False)
    assert m["prepared_now"] == 0 and m["num_videos"] == 6
    assert before == {p: p.stat().st_mtime_ns for p in Path(cache, "videos").rglob("rgb.bin")}


def test_corrupt_video_named_others_fine(tmp_path):
    root = make_root(tmp_path / "r", groups=3)
    bad = root / "UCF-101/MoveLeft/v_MoveLeft_g02_c01.avi"
    bad.write_bytes(b"not a video at all" * 50)
    m = prepare("ucf101", root, tmp_path / "c", flow="farneback", short_side=None, progress=False)
    assert list(m["failed"]) == ["UCF-101/MoveLeft/v_MoveLeft_g02_c01.avi"]
    assert "v_MoveLeft_g02_c01.avi" in m["failed"]["UCF-101/MoveLeft/v_MoveLeft_g02_c01.avi"]
    assert m["num_videos"] == 5
    vc = VideoCache(tmp_path / "c")
    sp = load_split("ucf101", root, 1)
    with pytest.raises(CacheError, match=r"could not be prepared, e\.g\. 'UCF-101/MoveLeft/v_MoveLeft_g02_c01.avi'"
                                          r".*The file is broken; re-running prepare won't fix it.*leave it out"):
        items_for(sp, "train", vc)  # g02 is in split 1's train list


def test_resume_after_kill(tmp_path):
    """SIGKILL prepare mid-run, rerun: the cache equals an uninterrupted run's, byte for byte."""
    root = make_root(tmp_path / "r", groups=3, t=30)
    ref = tmp_path / "ref"
    prepare("ucf101", root, ref, flow="tvl1", short_side=None, progress=False)
    cut = tmp_path / "cut"
    cmd = [sys.executable, "-m", "twostream_lib", "prepare", "--dataset", "ucf101", "--root", str(root),
           "--cache", str(cut), "--flow", "tvl1", "--workers", "1", "--short-side", "none", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list(cut.glob("videos/**/index.json")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = list(cut.glob("videos/**/index.json"))
    assert 0 < len(done) < 6, "the kill should land mid-run"
    prepare("ucf101", root, cut, flow="tvl1", short_side=None, progress=False)
    assert not list(cut.glob("videos/**/*.tmp-*"))
    a = {p.relative_to(ref): p.read_bytes() for p in ref.glob("videos/**/*") if p.is_file()}
    b = {p.relative_to(cut): p.read_bytes() for p in cut.glob("videos/**/*") if p.is_file()}
    assert a == b
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (ref, cut))
    assert ma["videos"] == mb["videos"]


def test_half_written_video_redone(root, tmp_path):
    c = tmp_path / "c"
    vid = "UCF-101/MoveLeft/v_MoveLeft_g01_c01.avi"
    prepare("ucf101", root, c, flow="farneback", short_side=None, progress=False, videos=[vid])
    tmp = c / "videos" / (vid + ".tmp-99999")
    tmp.mkdir()
    (tmp / "rgb.bin").write_bytes(b"half")
    shutil_dir = c / "videos" / vid
    import shutil
    shutil.rmtree(shutil_dir)  # as if killed before the rename
    m = prepare("ucf101", root, c, flow="farneback", short_side=None, progress=False, videos=[vid])
    assert m["prepared_now"] == 1 and not tmp.exists()
    assert VideoCache(c).rgb(vid, 5).shape == (48, 64, 3)


def test_spatial_dataset(root, cache):
    sp = load_split("ucf101", root, 1)
    items = items_for(sp, "train", VideoCache(cache))
    ds = SpatialDataset(cache, items, mode="train", crop_size=40)
    torch.manual_seed(0)
    x, y = ds[0]
    assert x.shape == (3, 40, 40) and x.dtype == torch.float32 and y == items[0][1]
    test = SpatialDataset(cache, items_for(sp, "test"), mode="test", crop_size=40)
    assert len(test) == 2 * 25
    views, label, v = test[26]
    assert views.shape == (10, 3, 40, 40) and v == 1
    # views 5..9 are the mirror images of views 0..4
    assert torch.equal(views[5:], views[:5].flip(-1))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=True)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 3, 40, 40)


def test_cache_memory_decodes_each_stream_once_and_serves_the_same_samples(root, cache, monkeypatch):
    items = items_for(load_split("ucf101", root, 1), "train")
    plain = VideoCache(cache)
    one_flow_stream = plain.num_flows(items[0][0]) * 48 * 64  # bytes of one video's decoded x (or y) flow
    kept = VideoCache(cache, memory_mb=2.5 * one_flow_stream / 2**20)  # room for two such streams
    vid = items[0][0]
    want = {t: plain.flows(vid, range(t, t + 10)) for t in (0, 3, 5)}
    decodes = []
    real_imdecode = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decodes.append(1) or real_imdecode(*a))
    for t in (0, 3, 5):  # the same fields as the plain cache's; the x and y streams are each decoded once
        assert np.array_equal(kept.flows(vid, range(t, t + 10)), want[t])
    assert len(decodes) == 2 * plain.num_flows(vid)
    assert kept._decoded_bytes == 2 * one_flow_stream
    assert len([k for k in kept._decoded if k[0] == vid]) == 2
    with pytest.raises(ValueError, match="read-only"):
        kept._decoded[(vid, "flow_x")][0, 0, 0] = 0
    kept.flows(items[1][0], [0])  # a third and fourth stream: the least recently used are dropped
    assert kept._decoded_bytes <= 2.5 * one_flow_stream and (items[1][0], "flow_y") in kept._decoded
    decodes.clear()
    rgb = kept.rgb(vid, 2)  # a stream larger than the budget: only the frame asked for is decoded, and not kept
    assert len(decodes) == 1 and (vid, "rgb") not in kept._decoded
    assert np.array_equal(rgb, plain.rgb(vid, 2))
    # datasets over either cache give the same training samples for the same random draws
    def samples(memory_mb):
        torch.manual_seed(0)
        ds = TemporalDataset(VideoCache(cache, memory_mb=memory_mb), items, mode="train", crop_size=40, L=5)
        return [ds[i][0] for i in range(len(items))]

    assert all(torch.equal(a, b) for a, b in zip(samples(0), samples(1)))
    with pytest.raises(ValueError, match="memory_mb"):
        VideoCache(cache, memory_mb=-1)


@pytest.mark.parametrize("stacking", ["stacking", "trajectory"])
def test_temporal_dataset(root, cache, stacking):
    sp = load_split("ucf101", root, 1)
    items = items_for(sp, "train")
    ds = TemporalDataset(cache, items, mode="train", crop_size=40, L=10, stacking=stacking, flip=False)
    x, y = ds[0]
    assert x.shape == (20, 40, 40)
    # mean subtraction: every channel of the full-frame stack has zero mean; the crop is close to it
    assert abs(float(x.mean())) < 0.3
    raw = TemporalDataset(cache, items, mode="test", crop_size=40, L=10, stacking=stacking, mean_subtraction=False)
    views, label, v = raw[0]
    assert views.shape == (10, 20, 40, 40)
    xs = views[:5, 0::2]
    # class 0 content moves right (+1 px/frame): x channels ≈ +1, and the flipped views ≈ -1
    sign = 1 if label == 0 else -1
    assert float(xs.median()) == pytest.approx(sign, abs=0.3)
    assert float(views[5:, 0::2].median()) == pytest.approx(-sign, abs=0.3)
    assert torch.allclose(views[5:, 1::2], views[:5, 1::2].flip(-1))


def test_bidirectional_and_too_short(root, cache):
    items = items_for(load_split("ucf101", root, 1), "train")
    ds = TemporalDataset(cache, items, mode="test", crop_size=40, L=10, bidirectional=True, mean_subtraction=False)
    views, label, _ = ds[0]
    sign = 1 if label == 0 else -1
    # forward half (channels 0..9) moves one way, backward half the other
    assert float(views[:5, 0:10:2].median()) == pytest.approx(sign, abs=0.3)
    assert float(views[:5, 10:20:2].median()) == pytest.approx(-sign, abs=0.3)
    with pytest.raises(ValueError, match=r"only 15 flow field\(s\), too short for a stack of L=16"):
        TemporalDataset(cache, items, L=16, crop_size=40)


def test_spaced_positions_cover_video():
    p = spaced_positions(0, 90, 25)
    assert len(p) == 25 and p[0] == 0 and p[-1] == 90 and np.all(np.diff(p) > 0)


def test_holdout_and_sampler():
    items = [(f"v{i}", i % 3) for i in range(30)]
    tr, va = holdout(items, 0.2, seed=0)
    assert len(va) == 6 and {lab for _, lab in va} == {0, 1, 2} and not set(tr) & set(va)
    labels = [0] * 90 + [1] * 10  # imbalanced: the sampler draws classes uniformly
    s = BalancedSampler(labels, 2000, seed=1)
    drawn = np.array(labels)[s.indices()]
    assert 0.4 < drawn.mean() < 0.6
    s.set_epoch(1)
    a = s.indices()
    s.set_epoch(1)
    assert np.array_equal(a, s.indices())


def test_multitask_dataset(root, cache):
    items = items_for(load_split("ucf101", root, 1), "train")
    a = SpatialDataset(cache, items, crop_size=40)
    b = SpatialDataset(cache, items[:2], crop_size=40)
    mt = MultiTaskDataset([a, b])
    assert len(mt) == len(a) + 2
    x, y, task = mt[len(a) + 1]
    assert task == 1 and y == items[1][1]


def test_holdout_keeps_ucf_groups_whole():
    """Model selection: clips of one UCF group (same actor and scene) never land on both sides."""
    items = [(f"UCF-101/C{c}/v_C{c}_g{g:02d}_c{k:02d}.avi", c) for c in range(3) for g in range(8, 26)
             for k in range(1, 5)]
    tr, va = holdout(items, 0.1, seed=3)
    group = lambda v: v.split("_g")[0] + v.split("_")[-2]
    assert not {group(v) for v, _ in tr} & {group(v) for v, _ in va}
    for c in range(3):  # about 10 % of each class: 72 videos in 4-clip groups -> 2 groups (8 videos)
        n_va = sum(lab == c for _, lab in va)
        assert 7 <= n_va <= 11, n_va
    assert sorted(tr + va) == sorted(items)
    one_group = [(f"UCF-101/A/v_A_g01_c{k:02d}.avi", 0) for k in range(1, 6)]
    assert holdout(one_group, 0.5)[1] == []  # a class's only group stays for training


def test_replaced_source_video_is_prepared_again(tmp_path):
    root = make_root(tmp_path / "r", groups=3)
    c = tmp_path / "c"
    vid = "UCF-101/MoveLeft/v_MoveLeft_g01_c01.avi"
    prepare("ucf101", root, c, flow="farneback", short_side=None, progress=False, videos=[vid])
    old = VideoCache(c).rgb(vid, 0)
    write_video(root / vid, _clip(1, seed=99, t=20))  # another clip under the same name
    m = prepare("ucf101", root, c, flow="farneback", short_side=None, progress=False, videos=[vid])
    assert m["prepared_now"] == 1 and m["changed"] == [vid]
    vc = VideoCache(c)
    assert vc.num_frames(vid) == 20 and not np.array_equal(vc.rgb(vid, 0), old)
    assert prepare("ucf101", root, c, flow="farneback", short_side=None, progress=False,
                   videos=[vid])["prepared_now"] == 0


def test_prepare_refuses_a_cache_in_use(root, tmp_path):
    c = tmp_path / "c"
    with FolderLock(c, "cache"):  # as another prepare would hold it
        with pytest.raises(LockError, match=r"cache is in use by process \d+"):
            prepare("ucf101", root, c, flow="dis", short_side=None, progress=False)
    assert not (c / "settings.json").exists()


def test_failed_prepare_writes_nothing_and_empty_cache_never_blocks(root, tmp_path):
    c = tmp_path / "c"
    with pytest.raises(Exception, match="split folder not found"):
        prepare("ucf101", tmp_path / "nowhere", c, flow="dis", short_side=None, progress=False)
    with pytest.raises(ValueError, match="bound must be a positive"):
        prepare("ucf101", root, c, flow="dis", bound=-1, short_side=None, progress=False)
    assert not c.exists()
    c.mkdir()
    (c / "settings.json").write_text(json.dumps({"flow": "tvl1", "format": 2}))  # a cache with no video in it
    m = prepare("ucf101", root, c, flow="farneback", short_side=None, progress=False,
                videos=["UCF-101/MoveLeft/v_MoveLeft_g01_c01.avi"])
    assert m["num_videos"] == 1 and VideoCache(c).settings["flow"] == "farneback"


def test_cli_prepare_bad_input_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "twostream_lib", "prepare", "--dataset", "ucf101", "--root",
                        str(tmp_path / "nowhere"), "--cache", str(tmp_path / "c"), "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "split folder not found" in r.stderr


def test_workers_die_with_a_killed_parent(tmp_path):
    """kill -9 of `prepare --workers 2` must not leave its workers blocked forever."""
    root = make_root(tmp_path / "r", groups=3, t=40)
    cmd = [sys.executable, "-m", "twostream_lib", "prepare", "--dataset", "ucf101", "--root", str(root),
           "--cache", str(tmp_path / "c"), "--flow", "tvl1", "--workers", "2", "--short-side", "none",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def children():
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    deadline = time.time() + 60
    while time.time() < deadline and len(children()) < 2:
        time.sleep(0.05)
    kids = children()
    assert len(kids) >= 2, "the workers never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    alive = kids
    while time.time() < deadline and alive:
        time.sleep(0.1)
        alive = [k for k in kids if Path(f"/proc/{k}").exists() and
                 "Z" not in Path(f"/proc/{k}/stat").read_text().split()[2]]
    assert not alive, f"workers {alive} outlived their killed parent"


def test_tvl1_torch_cache_matches_opencv_tvl1(root, tmp_path):
    """``prepare --flow tvl1-torch``: one process solving the pairs of several videos together (the GPU path, run
    here on the CPU) writes the cache an OpenCV TV-L1 cache would be, within JPEG and float rounding."""
    three = [f"UCF-101/{c}/v_{c}_g0{g}_c01.avi" for c, g in (("MoveLeft", 1), ("MoveLeft", 2), ("MoveRight", 1))]
    m = prepare("ucf101", root, tmp_path / "torch", flow="tvl1-torch", workers=1, batch=24, short_side=None,
                backward=True, progress=False, videos=three)
    ref = prepare("ucf101", root, tmp_path / "cv", flow="tvl1", workers=2, short_side=None, backward=True,
                  progress=False, videos=three)
    assert m["num_videos"] == ref["num_videos"] == 3 and not m["failed"]
    a, b = VideoCache(tmp_path / "torch"), VideoCache(tmp_path / "cv")
    step = 2 * a.bound / 255
    for vid in a.video_ids:
        assert a.num_flows(vid) == b.num_flows(vid)
        for direction in ("forward", "backward"):
            fa, fb = (c.flows(vid, range(c.num_flows(vid)), direction) for c in (a, b))
            assert np.abs(fa - fb).mean() < 0.25 * step, (vid, direction, np.abs(fa - fb).mean())
            assert (np.abs(fa - fb) <= 1.01 * step).mean() > 0.99
    per_video = prepare("ucf101", root, tmp_path / "torch2", flow="tvl1-torch", workers=2, short_side=None,
                        backward=False, progress=False, videos=three)  # one video per call, in worker processes
    two = prepare("ucf101", root, tmp_path / "torch3", flow="tvl1-torch", workers=1, batch=10, short_side=None,
                  backward=False, progress=False, videos=three, device="cpu,cpu")  # two solver threads
    assert two["num_videos"] == 3 and not two["failed"]
    for vid in three:
        assert VideoCache(tmp_path / "torch3").stored_bytes(videos=[vid]) > 0
    c = VideoCache(tmp_path / "torch2")
    for vid in c.video_ids:  # batching videos together changes nothing beyond float rounding
        d = np.abs(c.flows(vid, range(c.num_flows(vid))) - a.flows(vid, range(a.num_flows(vid))))
        assert d.max() <= 1.01 * step
    assert per_video["num_videos"] == 3


def test_training_and_evaluation_refuse_a_stale_cache(tmp_path):
    """A source video replaced after prepare: train and evaluate (both read a split through items_for) refuse the
    cache, naming the file, as prepare would redo it; the untouched subset still reads."""
    from twostream_lib.data import items_for

    root = make_root(tmp_path / "r", groups=3)
    c = tmp_path / "c"
    prepare("ucf101", root, c, flow="farneback", short_side=None, progress=False)
    split = load_split("ucf101", root, 1)
    assert len(items_for(split, "test", VideoCache(c))) == len(split.test)
    replaced = split.test[0][0]
    write_video(replaced, _clip(1, seed=99, t=20))  # another clip under the same name
    with pytest.raises(CacheError, match=rf"1 test video\(s\) changed after they were prepared, e\.g\. {replaced}"):
        items_for(split, "test", VideoCache(c))
    assert len(items_for(split, "train", VideoCache(c))) == len(split.train)
    prepare("ucf101", root, c, flow="farneback", short_side=None, progress=False)  # what the message says to do
    assert len(items_for(split, "test", VideoCache(c))) == len(split.test)
