"""Tests of the procedural lab datasets (twostream_lib.lab), on the tiny scale."""
from __future__ import annotations

import re
import shutil

import cv2
import numpy as np
import pytest

from twostream_lib.flow import load_gt_flow
from twostream_lib import lab, viz
from twostream_lib.lab import classes as lab_classes, render as lab_render, specs as lab_specs, writer as lab_writer
from twostream_lib.splits import load_split
from twostream_lib.video import read_video, write_video

GROUP_RE = re.compile(r"_g(\d\d)_c(\d\d)\.avi$")


def _warp_errors(frames: np.ndarray, flow: np.ndarray, min_motion: float = -1.0) -> tuple[float, float]:
    """Mean abs intensity error of frame t vs frame t+1 sampled at p + flow (and at p), over the
    pixels whose target stays inside the frame and (optionally) that move more than min_motion px."""
    fr = frames.astype(np.float32)
    H, W = fr.shape[1:3]
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    e_gt, e_zero = [], []
    for t in range(len(flow)):
        mx, my = xs + flow[t, ..., 0], ys + flow[t, ..., 1]
        inside = (mx >= 0) & (mx <= W - 1) & (my >= 0) & (my <= H - 1)
        inside &= np.hypot(flow[t, ..., 0], flow[t, ..., 1]) > min_motion
        if not inside.any():
            continue
        warped = cv2.remap(fr[t + 1], mx, my, cv2.INTER_LINEAR)
        e_gt.append(np.abs(warped - fr[t])[inside].mean())
        e_zero.append(np.abs(fr[t + 1] - fr[t])[inside].mean())
    return float(np.mean(e_gt)), float(np.mean(e_zero))


# ------------------------------------------------------------------ classes
def test_class_metadata_is_consistent():
    for ds, classes, pattern in (("lab-ucf", lab.LAB_UCF_CLASSES, r"^[A-Z][A-Za-z]+$"),
                                 ("lab-hmdb", lab.LAB_HMDB_CLASSES, r"^[a-z]+(_[a-z]+)*$")):
        info = lab.class_info(ds)
        assert len(set(classes)) == len(classes)
        assert all(re.match(pattern, c) for c in classes), classes
        paired = [c for p in info["motion_pairs"] for c in p]
        assert set(paired) <= set(classes) and len(set(paired)) == len(paired)
        assert set(info["context"]) <= set(classes) and not set(info["context"]) & set(paired)
        assert sorted(paired + info["context"] + info["posture_motion"]) == sorted(classes)
        assert 0.25 <= len(paired) / len(classes) <= 0.45   # "about a third"
    assert 14 <= len(lab.LAB_UCF_CLASSES) <= 18 and 8 <= len(lab.LAB_HMDB_CLASSES) <= 12
    for u, h in lab.SHARED_CLASSES:
        assert u in lab.LAB_UCF_CLASSES and h in lab.LAB_HMDB_CLASSES
        assert u.lower() == h.replace("_", "")                      # same name up to case convention
        assert lab_classes.CLASS_ACTION[u] == lab_classes.CLASS_ACTION[h]         # same motion
    assert lab.class_info("lab-hmdb")["shared"]["wave"] == "Wave"
    with pytest.raises(ValueError, match="unknown lab dataset"):
        lab.class_info("ucf101")


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="scale"):
        lab.clip_spec("lab-ucf", "Wave", scale="huge")
    with pytest.raises(ValueError, match="not a lab-ucf class"):
        lab.clip_spec("lab-ucf", "wave")


# ------------------------------------------------------------------ layout and splits
@pytest.mark.parametrize("split", [1, 2, 3])
def test_layout_parses_with_official_parser(lab_root_tiny, split):
    for ds, classes in (("lab-ucf", lab.LAB_UCF_CLASSES), ("lab-hmdb", lab.LAB_HMDB_CLASSES)):
        s = load_split(ds, lab_root_tiny / ds, split)
        assert s.classes == sorted(classes)
        assert s.train and s.test
        # every class is in train and test
        assert {lbl for _, lbl in s.train} == set(range(len(classes)))
        assert {lbl for _, lbl in s.test} == set(range(len(classes)))
        for path, lbl in s.train + s.test:
            assert path.suffix == ".avi" and path.parent.name == s.classes[lbl]
            assert lab.flow_path(path).is_file()


@pytest.mark.parametrize("split", [1, 2, 3])
def test_ucf_groups_never_in_train_and_test(lab_root_tiny, split):
    s = load_split("lab-ucf", lab_root_tiny / "lab-ucf", split)
    train_g = {int(GROUP_RE.search(p.name).group(1)) for p, _ in s.train}
    test_g = {int(GROUP_RE.search(p.name).group(1)) for p, _ in s.test}
    assert train_g and test_g and not train_g & test_g
    assert len(set(s.train) | set(s.test)) == len(s.train) + len(s.test)


def test_ucf_test_groups_scale_like_ucf101():
    # UCF-101 (25 groups): split k tests groups 7(k-1)+1 .. 7k
    assert [list(lab_specs.ucf_test_groups(25, k)) for k in (1, 2, 3)] == \
        [list(range(1, 8)), list(range(8, 15)), list(range(15, 22))]
    for g in (3, 5, 12):
        blocks = [set(lab_specs.ucf_test_groups(g, k)) for k in (1, 2, 3)]
        assert all(b and len(b) < g and max(b) <= g for b in blocks)   # some groups always train
        assert not (blocks[0] & blocks[1]) and not (blocks[1] & blocks[2])


@pytest.mark.parametrize("split", [1, 2, 3])
def test_hmdb_has_few_training_clips_per_class(lab_root_tiny, split):
    s = load_split("lab-hmdb", lab_root_tiny / "lab-hmdb", split)
    for lbl, cls in enumerate(s.classes):
        n_tr = sum(1 for _, l in s.train if l == lbl)
        n_te = sum(1 for _, l in s.test if l == lbl)
        assert n_tr + n_te == len(list((lab_root_tiny / "lab-hmdb" / cls).glob("*.avi")))
        assert n_tr == lab.SCALES["tiny"]["hmdb_train"] and n_te >= 1


def test_small_hmdb_split_trains_on_6_clips_per_class(tmp_path):
    """Split files only (no rendering): at the small scale every class trains on 6 clips and tests on the rest."""
    from twostream_lib.lab.writer import _write_splits

    specs = lab.lab_clip_specs("lab-hmdb", "small")
    _write_splits(tmp_path, "lab-hmdb", specs, "small", 0)
    for cls in lab.LAB_HMDB_CLASSES:
        ids = [line.split()[1] for line in
               (tmp_path / "lab-hmdb" / "testTrainMulti_7030_splits" / f"{cls}_test_split1.txt").read_text().splitlines()]
        assert ids.count("1") == 6 and ids.count("2") == len(ids) - 6 >= 6


def test_test_only_clips_change_no_training_list_and_no_other_clip(tmp_path, monkeypatch):
    """Split 1's test-only clips (``ucf_test_extra`` per test group, ``hmdb_test_extra`` per class): every other clip
    keeps its spec, every training list and splits 2-3's test lists stay as without them (split files only)."""
    from twostream_lib.lab.writer import _write_splits

    small = dict(lab.SCALES["small"])
    assert small["ucf_test_extra"] > 0 and small["hmdb_test_extra"] > 0
    files = {}
    for extra in (True, False):
        monkeypatch.setitem(lab_specs.SCALES, "small", small if extra else
                            dict(small, ucf_test_extra=0, hmdb_test_extra=0))
        out = tmp_path / str(extra)
        specs = {ds: lab.lab_clip_specs(ds, "small") for ds in ("lab-ucf", "lab-hmdb")}
        for ds, sp in specs.items():
            _write_splits(out, ds, sp, "small", 0)
        files[extra] = ({p.relative_to(out).as_posix(): p.read_text() for p in out.rglob("*.txt")}, specs)
    (with_x, specs_x), (without, specs_0) = files[True], files[False]
    for ds in specs_x:
        assert [s for s in specs_x[ds] if not s.test_only] == specs_0[ds]  # the same clips, the same lengths
    assert sorted(with_x) == sorted(without)
    for name, text in without.items():
        if "trainlist" in name or name.endswith(("testlist02.txt", "testlist03.txt", "classInd.txt")):
            assert with_x[name] == text, name
    ucf_extra = [s for s in specs_x["lab-ucf"] if s.test_only]
    test_g = set(lab_specs.ucf_test_groups(small["ucf_groups"], 1))
    assert len(ucf_extra) == len(lab.LAB_UCF_CLASSES) * len(test_g) * small["ucf_test_extra"]
    assert {s.index[0] for s in ucf_extra} == test_g
    t1 = with_x["lab-ucf/ucfTrainTestlist/testlist01.txt"].split()
    assert set(without["lab-ucf/ucfTrainTestlist/testlist01.txt"].split()) < set(t1)
    assert len(t1) == len(without["lab-ucf/ucfTrainTestlist/testlist01.txt"].split()) + len(ucf_extra)
    for cls in lab.LAB_HMDB_CLASSES:
        for k in (1, 2, 3):
            name = f"lab-hmdb/testTrainMulti_7030_splits/{cls}_test_split{k}.txt"
            old, new = without[name].splitlines(), with_x[name].splitlines()
            assert new[:len(old)] == old  # the clips the split had keep their ids
            assert [ln.split()[1] for ln in new[len(old):]] == ["2" if k == 1 else "0"] * small["hmdb_test_extra"]


def test_a_lab_dataset_of_an_older_design_is_refused(tmp_path):
    import json

    root = tmp_path / "tiny"
    lab.make_lab_datasets(root, "tiny", progress=False, datasets=("lab-hmdb",))
    info = json.loads((root / "lab_info.json").read_text())
    info["datasets"]["lab-hmdb"]["version"] = 1
    (root / "lab_info.json").write_text(json.dumps(info))
    with pytest.raises(lab.LabVersionError, match=r"lab-hmdb: rendered by version 1 .* renders version 2"):
        lab.make_lab_datasets(root, "tiny", progress=False, datasets=("lab-hmdb",))
    shutil.rmtree(root / "lab-hmdb")  # what the message asks for: then it renders the dataset afresh
    assert lab.make_lab_datasets(root, "tiny", progress=False, datasets=("lab-hmdb",))["lab-hmdb"] > 0
    assert json.loads((root / "lab_info.json").read_text())["datasets"]["lab-hmdb"]["version"] == 2


# ------------------------------------------------------------------ ground-truth flow
@pytest.mark.parametrize("ds,cls,idx", [("lab-ucf", "Jump", 0), ("lab-ucf", "SitDown", 0), ("lab-ucf", "Juggle", 1),
                                        ("lab-hmdb", "cartwheel", 0), ("lab-hmdb", "pull_up", 2),
                                        ("lab-hmdb", "throw", 1)])
def test_gt_flow_warps_rendered_frames(ds, cls, idx):
    frames, flow = lab.render_clip(lab.clip_spec(ds, cls, idx, seed=0, scale="small", n_frames=12), noise=False)
    assert frames.shape == (12, 96, 128, 3) and frames.dtype == np.uint8
    assert flow.shape == (11, 96, 128, 2) and flow.dtype == np.float32
    e_gt, e_zero = _warp_errors(frames, flow)
    assert e_zero > 0.3, "clip does not move: pick another for this test"
    assert e_gt < 0.5 * e_zero, (e_gt, e_zero)


def test_gt_flow_with_camera_motion_is_exact_on_background():
    """A clip whose camera moves: the background flow is the camera's, and it warps to ~1 grey level."""
    for idx in range(40):
        spec = lab.clip_spec("lab-ucf", "Wave", idx, seed=0, scale="small", n_frames=10)
        sc = lab_render.build_scene(spec)
        if np.ptp(sc.fx) > 3:   # a pan
            break
    else:
        pytest.fail("no clip with a camera pan among 40")
    frames, flow, mask = lab.render_clip(spec, noise=False, return_mask=True)
    bg = ~mask[:-1]
    assert np.abs(flow[bg]).mean() > 0.2
    e_gt, e_zero = _warp_errors(frames, flow)
    assert e_gt < 0.35 * e_zero, (e_gt, e_zero)


def test_gt_flow_files_match_videos(lab_root_tiny):
    s = load_split("lab-hmdb", lab_root_tiny / "lab-hmdb", 1)
    for p, _ in s.train[:5]:
        frames = read_video(p)
        with np.load(lab.flow_path(p)) as z:
            assert z["flow"].dtype == np.float16
            assert z["flow"].shape == (len(frames) - 1, *frames.shape[1:3], 2)
        assert np.isfinite(load_gt_flow(p)).all()


def test_gt_flow_matches_decoded_video(tmp_path):
    """Through the XVID codec (and with sensor noise) the GT flow still warps far better than
    zero flow on the pixels that move (|flow| > 0.5 px)."""
    e = []
    for ds, cls, idx in (("lab-ucf", "Jump", 0), ("lab-ucf", "Juggle", 1), ("lab-hmdb", "cartwheel", 0),
                         ("lab-hmdb", "throw", 1)):
        frames, flow = lab.render_clip(lab.clip_spec(ds, cls, idx, seed=0, scale="small", n_frames=12))
        write_video(tmp_path / "v.avi", frames)
        decoded = read_video(tmp_path / "v.avi")
        assert decoded.shape == frames.shape
        e.append(_warp_errors(decoded, flow, min_motion=0.5))
    e_gt, e_zero = np.mean(e, axis=0)
    assert e_gt < 0.6 * e_zero, (e_gt, e_zero)


# ------------------------------------------------------------------ motion-only pairs
def _pose_features(ds: str, cls: str, n: int) -> np.ndarray:
    """Position/scale-free silhouette statistics per frame: bbox aspect, centroid height, fill."""
    out = []
    for i in range(n):
        _, _, mask = lab.render_clip(lab.clip_spec(ds, cls, i, seed=0, scale="tiny"), noise=False, return_mask=True)
        for m in mask:
            ys, xs = np.nonzero(m)
            if len(ys):
                h, w = np.ptp(ys) + 1, np.ptp(xs) + 1
                out.append([w / h, (ys.mean() - ys.min()) / h, len(ys) / (h * h)])
    return np.array(out)


def _quantile_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([abs(np.quantile(a[:, k], q) - np.quantile(b[:, k], q))
                          for k in range(a.shape[1]) for q in (0.25, 0.5, 0.75)]))


def test_motion_pairs_have_the_same_pose_statistics():
    """One frame can't tell a pair apart: members' silhouette statistics agree far more closely
    than with a non-pair class that uses similar poses."""
    cases = [("SitDown", "StandUp", "Bend"), ("RaiseArms", "LowerArms", "Wave"),
             ("ArmCirclesOut", "ArmCirclesIn", "Clap")]
    for a, b, other in cases:
        fa, fb, fo = (_pose_features("lab-ucf", c, 10) for c in (a, b, other))
        d_pair, d_other = _quantile_distance(fa, fb), _quantile_distance(fa, fo)
        assert d_pair < 0.5 * d_other, (a, b, other, d_pair, d_other)


def test_pair_member_is_exact_time_reversal(monkeypatch):
    spec = lab.clip_spec("lab-ucf", "SitDown", 3, seed=0, scale="tiny")
    frames, _ = lab.render_clip(spec, noise=False)
    monkeypatch.setitem(lab_classes.CLASS_ACTION, "SitDown", ("sit", True))
    reversed_frames, _ = lab.render_clip(spec, noise=False)
    np.testing.assert_array_equal(reversed_frames, frames[::-1])


def test_motion_tells_pairs_apart():
    """The temporal signal exists: the figure moves down when sitting down, up when standing up."""
    def mean_vy(cls):
        v = []
        for i in range(4):
            _, flow, mask = lab.render_clip(lab.clip_spec("lab-ucf", cls, i, scale="tiny"), noise=False,
                                            return_mask=True)
            v.append(flow[..., 1][mask[:-1]].mean())
        return np.array(v)
    assert (mean_vy("SitDown") > 0.05).all() and (mean_vy("StandUp") < -0.05).all()


# ------------------------------------------------------------------ determinism and resume
def _split_texts(root):
    d = root / "lab-hmdb" / "testTrainMulti_7030_splits"
    return {p.name: p.read_text() for p in sorted(d.iterdir())}


def test_deterministic_for_a_seed(lab_root_tiny, tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    assert lab.make_lab_datasets(a, "tiny", seed=0, progress=False, datasets=("lab-hmdb",))["lab-hmdb"] > 0
    lab.make_lab_datasets(b, "tiny", seed=1, progress=False, datasets=("lab-hmdb",))
    assert _split_texts(a) == _split_texts(lab_root_tiny)
    for ucf_list in ("classInd.txt", "trainlist01.txt"):   # UCF lists depend only on the seed too
        assert (lab_root_tiny / "lab-ucf" / "ucfTrainTestlist" / ucf_list).read_text()
    video = "wave/wave_v001.avi"
    f_ref = read_video(lab_root_tiny / "lab-hmdb" / video)[0]
    assert read_video(a / "lab-hmdb" / video)[0].tobytes() == f_ref.tobytes()
    assert read_video(b / "lab-hmdb" / video)[0].tobytes() != f_ref.tobytes()
    spec = lab.clip_spec("lab-ucf", "Punch", 2, seed=5)
    f1, g1 = lab.render_clip(spec)
    f2, g2 = lab.render_clip(spec)
    np.testing.assert_array_equal(f1, f2)
    np.testing.assert_array_equal(g1, g2)


def test_parallel_workers_give_identical_files(tmp_path):
    lab.make_lab_datasets(tmp_path / "w1", "tiny", seed=0, workers=1, progress=False, datasets=("lab-hmdb",))
    lab.make_lab_datasets(tmp_path / "w2", "tiny", seed=0, workers=2, progress=False, datasets=("lab-hmdb",))
    for p in sorted((tmp_path / "w1" / "lab-hmdb" / "throw").iterdir()):
        q = tmp_path / "w2" / "lab-hmdb" / "throw" / p.name
        if p.suffix == ".npz":
            np.testing.assert_array_equal(np.load(p)["flow"], np.load(q)["flow"])
        else:
            np.testing.assert_array_equal(read_video(p), read_video(q))


def test_resume_skips_finished_and_redoes_half_written(tmp_path):
    root = tmp_path / "lab"
    lab.make_lab_datasets(root, "tiny", seed=0, progress=False, datasets=("lab-hmdb",))
    files = sorted(p for p in (root / "lab-hmdb").rglob("*") if p.is_file())
    mtimes = {p: p.stat().st_mtime_ns for p in files if p.suffix in (".avi", ".npz")}
    lab.make_lab_datasets(root, "tiny", seed=0, progress=False, datasets=("lab-hmdb",))
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    # a run killed mid-write: a temp file left behind and the final video missing
    d = root / "lab-hmdb" / "wave"
    (d / "wave_v002.avi").unlink()
    tmp = d / ".wave_v002.tmp12345.avi"
    tmp.write_bytes(b"half a video")
    # a run killed between writing the flow and the video of another clip
    (d / "wave_v003.flow.npz").unlink()
    lab.make_lab_datasets(root, "tiny", seed=0, progress=False, datasets=("lab-hmdb",))
    assert not tmp.exists()
    assert len(read_video(d / "wave_v002.avi")) >= 12
    assert load_gt_flow(d / "wave_v003.avi").shape[0] >= 11
    untouched = {p: t for p, t in mtimes.items() if p.stem.split(".")[0] not in ("wave_v002", "wave_v003")}
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched

    with pytest.raises(ValueError, match="lab_info.json"):
        lab.make_lab_datasets(root, "tiny", seed=1, progress=False, datasets=("lab-hmdb",))


def test_frame_strip():
    frames = np.random.default_rng(0).integers(0, 255, (20, 8, 10, 3), dtype=np.uint8)
    s = viz.frame_strip(frames, n=4, gap=2)
    assert s.shape == (8, 4 * 10 + 3 * 2, 3) and s.dtype == np.uint8
    np.testing.assert_array_equal(s[:, :10], frames[0])
    np.testing.assert_array_equal(s[:, -10:], frames[-1])
    with pytest.raises(ValueError):
        viz.frame_strip(frames[..., 0])
