"""Official layout parsing on hand-written roots (the lab roots are checked in test_lab.py)."""
from pathlib import Path

import pytest

from twostream_lib.splits import SplitError, hmdb51_split, load_split, ucf101_split


def make_ucf(root: Path, classes=("ApplyEyeMakeup", "Archery")):
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, 1)))
    for s in (1, 2, 3):
        train, test = [], []
        for i, c in enumerate(classes, 1):
            for g in (1, 2, 3):
                rel = f"{c}/v_{c}_g{g:02d}_c01.avi"
                (root / "UCF-101" / c).mkdir(parents=True, exist_ok=True)
                (root / "UCF-101" / rel).write_bytes(b"x")
                (test if g == s else train).append((rel, i))
        (lists / f"trainlist0{s}.txt").write_text("".join(f"{r} {i}\n" for r, i in train))
        (lists / f"testlist0{s}.txt").write_text("".join(f"{r}\n" for r, _ in test))
    return root


def make_hmdb(root: Path, classes=("brush_hair", "cartwheel")):
    sd = root / "testTrainMulti_7030_splits"
    sd.mkdir(parents=True)
    for c in classes:
        (root / c).mkdir()
        for s in (1, 2, 3):
            lines = []
            for k in range(4):
                name = f"{c}_clip_{k}.avi"
                (root / c / name).write_bytes(b"x")
                lines.append(f"{name} {[1, 1, 2, 0][(k + s) % 4]}\n")
            (sd / f"{c}_test_split{s}.txt").write_text("".join(lines))
    return root


def test_ucf_parse(tmp_path):
    root = make_ucf(tmp_path)
    for s in (1, 2, 3):
        sp = ucf101_split(root, s)
        assert sp.classes == ["ApplyEyeMakeup", "Archery"]
        assert len(sp.train) == 4 and len(sp.test) == 2
        assert all(f"_g{s:02d}_" in p.name for p, _ in sp.test)
        assert {lab for _, lab in sp.train} == {0, 1}
        assert sp.video_id(sp.test[0][0]) == f"UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g{s:02d}_c01.avi"


def test_hmdb_parse(tmp_path):
    root = make_hmdb(tmp_path)
    sp = hmdb51_split(root, 1)
    assert sp.classes == ["brush_hair", "cartwheel"]
    assert len(sp.train) == 4 and len(sp.test) == 2  # one '0' (unused) per class is in neither
    assert load_split("lab-hmdb", root, 2).dataset == "lab-hmdb"


@pytest.mark.parametrize("fname", ["classInd.txt", "trainlist01.txt", "testlist01.txt"])
def test_ucf_missing_split_file(tmp_path, fname):
    root = make_ucf(tmp_path)
    (root / "ucfTrainTestlist" / fname).unlink()
    with pytest.raises(SplitError, match=rf"{fname}: split file not found"):
        ucf101_split(root, 1)


@pytest.mark.parametrize("line,msg", [
    ("Nope/v_Nope_g01_c01.avi 1", r"trainlist01.txt:5: unknown class 'Nope'"),
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi 2", r"trainlist01.txt:5: label 2 disagrees"),
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi x", r"trainlist01.txt:5: label 'x' is not an integer"),
    ("just_a_name.avi", r"trainlist01.txt:5: expected"),
    # another spelling of a training video, in any form that would pass for a second video
    ("Archery/../Archery/v_Archery_g02_c01.avi 2", r"trainlist01.txt:5: expected .*no '\.' or '\.\.'"),
    ("Archery/./v_Archery_g02_c01.avi 2", r"trainlist01.txt:5: expected"),
    ("Archery//v_Archery_g02_c01.avi 2", r"trainlist01.txt:5: expected"),
    ("./Archery/v_Archery_g02_c01.avi 2", r"trainlist01.txt:5: expected"),
    ("ApplyEyeMakeup/v_ApplyEyeMakeup_g99_c01.avi 1", r"trainlist01.txt:5: listed video .*g99.* does not exist"),
])
def test_ucf_bad_lines(tmp_path, line, msg):
    root = make_ucf(tmp_path)
    with open(root / "ucfTrainTestlist" / "trainlist01.txt", "a") as f:
        f.write(line + "\n")
    with pytest.raises(SplitError, match=msg):
        ucf101_split(root, 1)


def test_ucf_bad_classind(tmp_path):
    root = make_ucf(tmp_path)
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("1 A\n3 B\n")
    with pytest.raises(SplitError, match="without gaps"):
        ucf101_split(root, 1)
    (root / "ucfTrainTestlist" / "classInd.txt").write_text("1 A\nB\n")
    with pytest.raises(SplitError, match=r"classInd.txt:2: expected"):
        ucf101_split(root, 1)


def test_ucf_not_a_root(tmp_path):
    with pytest.raises(SplitError, match="split folder not found"):
        ucf101_split(tmp_path, 1)


@pytest.mark.parametrize("line,msg", [
    ("x.avi 3", r"cartwheel_test_split1.txt:5: split id must be 0, 1 or 2"),
    ("x.avi", r"cartwheel_test_split1.txt:5: expected"),
    ("../cartwheel/cartwheel_clip_0.avi 2", r"cartwheel_test_split1.txt:5: expected .*a file name, no folder"),
    ("./cartwheel_clip_0.avi 2", r"cartwheel_test_split1.txt:5: expected"),
    ("ghost.avi 1", r"cartwheel_test_split1.txt:5: listed video .*ghost.avi does not exist"),
])
def test_hmdb_bad_lines(tmp_path, line, msg):
    root = make_hmdb(tmp_path)
    with open(root / "testTrainMulti_7030_splits" / "cartwheel_test_split1.txt", "a") as f:
        f.write(line + "\n")
    with pytest.raises(SplitError, match=msg):
        hmdb51_split(root, 1)


def test_hmdb_missing_split_file(tmp_path):
    root = make_hmdb(tmp_path)
    (root / "testTrainMulti_7030_splits" / "cartwheel_test_split2.txt").unlink()
    with pytest.raises(SplitError, match=r"cartwheel_test_split2.txt: split file not found"):
        hmdb51_split(root, 2)


def test_bad_split_number_and_dataset(tmp_path):
    with pytest.raises(SplitError, match="1, 2 or 3"):
        ucf101_split(tmp_path, 4)
    with pytest.raises(SplitError, match="unknown dataset"):
        load_split("kinetics", tmp_path, 1)


def test_ucf_video_in_train_and_test_refused(tmp_path):
    root = make_ucf(tmp_path / "u")
    lists = root / "ucfTrainTestlist"
    with open(lists / "testlist01.txt", "a") as f:  # g02 is a training group of split 1
        f.write("Archery/v_Archery_g02_c01.avi\n")
    with pytest.raises(SplitError, match=r"v_Archery_g02_c01\.avi in both the train and test lists"):
        ucf101_split(root, 1)


def test_ucf_test_video_spelt_another_way_is_refused(tmp_path):
    """The audit's bypass: a training video listed in the test list as 'Class/../Class/video.avi'."""
    root = make_ucf(tmp_path / "u")
    with open(root / "ucfTrainTestlist" / "testlist01.txt", "a") as f:  # g02 is a training group of split 1
        f.write("Archery/../Archery/v_Archery_g02_c01.avi\n")
    with pytest.raises(SplitError, match=r"testlist01.txt:\d+: expected"):
        ucf101_split(root, 1)


def test_ucf_video_listed_twice_refused(tmp_path):
    root = make_ucf(tmp_path / "u")
    with open(root / "ucfTrainTestlist" / "trainlist02.txt", "a") as f:
        f.write("Archery/v_Archery_g01_c01.avi 2\n")
    with pytest.raises(SplitError, match=r"v_Archery_g01_c01\.avi twice in the train list"):
        ucf101_split(root, 2)


def test_hmdb_video_in_train_and_test_refused(tmp_path):
    root = make_hmdb(tmp_path / "h")
    f = root / "testTrainMulti_7030_splits" / "cartwheel_test_split1.txt"
    first = f.read_text().splitlines()[0].split()[0]  # marked 1 or 2 in split 1
    mark = [l.split()[1] for l in f.read_text().splitlines()][0]
    with open(f, "a") as fh:
        fh.write(f"{first} {'2' if mark == '1' else '1'}\n")
    with pytest.raises(SplitError, match=rf"cartwheel/{first} in both the train and test lists"):
        hmdb51_split(root, 1)


def test_video_group():
    from twostream_lib.splits import video_group

    assert video_group("UCF-101/Archery/v_Archery_g08_c03.avi") == "Archery/g08"
    assert video_group("brush_hair/some_clip_0.avi") is None
