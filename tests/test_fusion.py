"""Score fusion (twostream_lib.fusion), score files, and accuracy metrics (twostream_lib.metrics)."""
import json
from pathlib import Path

import numpy as np
import pytest

from twostream_lib.fusion import average_fusion, fuse_files, stack_l2, svm_fusion
from twostream_lib.fusion import main as fusion_main
from twostream_lib.scores import ScoreFileError, check_aligned, load_scores, save_scores
from twostream_lib.metrics import (
    accuracy,
    confusion_matrix,
    mean_class_accuracy,
    per_class_accuracy,
    softmax,
)

CLASSES = ["Run", "Jump", "Wave"]


def _two_streams():
    """Test scores (4 videos, 3 classes) where each stream alone errs on one video, but together they are right.

    Spatial errs on video 0 (weakly: 0.45 vs 0.40), temporal errs on video 2 (weakly); on each error the other
    stream is confident in the true class.
    """
    labels = np.array([0, 1, 2, 0])
    spatial = np.array([[0.40, 0.45, 0.15],
                        [0.10, 0.80, 0.10],
                        [0.05, 0.05, 0.90],
                        [0.70, 0.20, 0.10]])
    temporal = np.array([[0.90, 0.05, 0.05],
                         [0.15, 0.75, 0.10],
                         [0.10, 0.48, 0.42],
                         [0.80, 0.10, 0.10]])
    return spatial, temporal, labels


def _train_scores(n_per_class=100, seed=0):
    """Training-set softmax scores of two streams with independent, fairly weak errors."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    streams = []
    for _ in range(2):
        logits = rng.normal(0, 1.0, (labels.size, 3))
        logits[np.arange(labels.size), labels] += 1.5
        streams.append(softmax(logits))
    return streams, labels


def test_each_stream_errs_but_averaging_fixes_it():
    spatial, temporal, labels = _two_streams()
    assert accuracy(spatial, labels) == 0.75 and accuracy(temporal, labels) == 0.75
    fused = average_fusion([spatial, temporal])
    assert np.allclose(fused, (spatial + temporal) / 2)
    assert accuracy(fused, labels) == 1.0
    # weights: all weight on the spatial stream reproduces it
    assert np.allclose(average_fusion([spatial, temporal], weights=[1, 0]), spatial)
    with pytest.raises(ValueError, match="shape"):
        average_fusion([spatial, temporal[:3]])
    with pytest.raises(ValueError, match="weights"):
        average_fusion([spatial, temporal], weights=[1, -1])


def test_stack_l2():
    spatial, temporal, _ = _two_streams()
    x = stack_l2([spatial, temporal])
    assert x.shape == (4, 6)
    assert np.allclose(np.linalg.norm(x[:, :3], axis=1), 1) and np.allclose(np.linalg.norm(x[:, 3:], axis=1), 1)
    assert np.allclose(x[:, :3] * np.linalg.norm(spatial, axis=1, keepdims=True), spatial)


def test_svm_fusion_fixes_single_stream_errors():
    spatial, temporal, labels = _two_streams()
    (tr_s, tr_t), tr_labels = _train_scores()
    # the training streams are imperfect on their own, so the SVM must combine them
    assert accuracy(tr_s, tr_labels) < 1.0 and accuracy(tr_t, tr_labels) < 1.0
    scores = svm_fusion([tr_s, tr_t], tr_labels, [spatial, temporal], C=1.0)
    assert scores.shape == (4, 3)
    assert accuracy(scores, labels) == 1.0
    # deterministic
    assert np.array_equal(scores, svm_fusion([tr_s, tr_t], tr_labels, [spatial, temporal], C=1.0))


def test_svm_fusion_absent_class_and_two_classes():
    (tr_s, tr_t), tr_labels = _train_scores()
    keep = tr_labels != 2  # class 2 never seen in training
    spatial, temporal, labels = _two_streams()
    scores = svm_fusion([tr_s[keep], tr_t[keep]], tr_labels[keep], [spatial, temporal], num_classes=3)
    assert scores.shape == (4, 3)
    assert (scores.argmax(1) != 2).all()
    assert (scores.argmax(1)[[0, 1, 3]] == labels[[0, 1, 3]]).all()
    with pytest.raises(ValueError, match="at least 2"):
        svm_fusion([tr_s[:5], tr_t[:5]], np.zeros(5, int), [spatial, temporal])


def _write(tmp_path, name, scores, labels, ids, classes=CLASSES, meta=None):
    return save_scores(tmp_path / name, scores, labels, ids, classes, meta or {"stream": name})


def test_score_file_round_trip(tmp_path):
    spatial, _, labels = _two_streams()
    ids = [f"v_{i}" for i in range(4)]
    p = _write(tmp_path, "spatial.npz", spatial, labels, ids, meta={"stream": "spatial", "L": 10})
    assert p.exists() and not list(tmp_path.glob("*.tmp"))
    d = load_scores(p)
    assert np.allclose(d["scores"], spatial) and d["scores"].dtype == np.float32
    assert d["labels"].tolist() == labels.tolist()
    assert d["video_ids"] == ids and d["classes"] == CLASSES
    assert d["meta"] == {"stream": "spatial", "L": 10}
    with np.load(p, allow_pickle=False) as z:  # plain arrays only
        assert json.loads(str(z["meta"]))["L"] == 10
    with pytest.raises(ValueError, match="unique"):
        _write(tmp_path, "dup.npz", spatial, labels, ["a", "a", "b", "c"])
    with pytest.raises(ValueError, match="classes"):
        save_scores(tmp_path / "bad.npz", spatial, labels, ids, CLASSES[:2])
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz"):
        load_scores(tmp_path / "other.npz")


def test_fuse_files_aligns_by_video_id(tmp_path):
    spatial, temporal, labels = _two_streams()
    ids = np.array([f"v_{i}" for i in range(4)])
    perm = np.array([2, 0, 3, 1])
    ps = _write(tmp_path, "spatial.npz", spatial, labels, ids)
    pt = _write(tmp_path, "temporal.npz", temporal[perm], labels[perm], ids[perm])
    out = fuse_files([ps, pt], method="average")
    assert out["video_ids"] == ids.tolist()
    assert np.allclose(out["scores"], (spatial + temporal) / 2, atol=1e-6)
    assert out["accuracy"] == 1.0 and out["stream_accuracy"] == [0.75, 0.75]
    assert out["mean_class_accuracy"] == 1.0
    # SVM fusion from training-set score files
    (tr_s, tr_t), tr_labels = _train_scores()
    tr_ids = [f"t_{i}" for i in range(tr_labels.size)]
    ts = _write(tmp_path, "spatial_train.npz", tr_s, tr_labels, tr_ids)
    tt = _write(tmp_path, "temporal_train.npz", tr_t, tr_labels, tr_ids)
    out = fuse_files([ps, pt], method="svm", train_score_paths=[ts, tt])
    assert out["accuracy"] == 1.0
    with pytest.raises(ValueError, match="training score file"):
        fuse_files([ps, pt], method="svm")


def test_mismatched_score_files_are_refused(tmp_path):
    spatial, temporal, labels = _two_streams()
    ids = [f"v_{i}" for i in range(4)]
    ps = _write(tmp_path, "spatial.npz", spatial, labels, ids)
    wrong_labels = labels.copy()
    wrong_labels[1] = 2
    pl = _write(tmp_path, "temporal_labels.npz", temporal, wrong_labels, ids)
    with pytest.raises(ValueError, match=r"spatial\.npz.*temporal_labels\.npz.*labels"):
        fuse_files([ps, pl])
    pv = _write(tmp_path, "temporal_ids.npz", temporal, labels, ids[:3] + ["v_9"])
    with pytest.raises(ValueError, match=r"spatial\.npz.*temporal_ids\.npz.*different videos"):
        fuse_files([ps, pv])
    pc = _write(tmp_path, "temporal_classes.npz", temporal, labels, ids, classes=["Run", "Wave", "Jump"])
    with pytest.raises(ValueError, match="different classes"):
        check_aligned(load_scores(ps), load_scores(pc))


# ------------------------------------------------------------------------------------------ metrics


def test_accuracy_and_per_class():
    scores = np.array([[0.9, 0.1, 0.0],   # 0 -> 0 right
                       [0.2, 0.7, 0.1],   # 1 -> 1 right
                       [0.6, 0.3, 0.1],   # 1 -> 0 wrong
                       [0.1, 0.1, 0.8],   # 1 -> 2 wrong
                       [0.5, 0.5, 0.0]])  # 0 -> 0 (tie goes to the lower index) right
    labels = np.array([0, 1, 1, 1, 0])
    assert accuracy(scores, labels) == pytest.approx(3 / 5)
    pc = per_class_accuracy(scores, labels, 4)
    assert pc[0] == 1.0 and pc[1] == pytest.approx(1 / 3) and np.isnan(pc[2]) and np.isnan(pc[3])
    assert mean_class_accuracy(scores, labels, 4) == pytest.approx((1 + 1 / 3) / 2)
    with pytest.raises(ValueError, match="labels"):
        accuracy(scores, np.array([0, 1, 3, 1, 0]))


def test_confusion_matrix():
    cm = confusion_matrix([0, 1, 0, 2, 0], [0, 1, 1, 1, 0], 3)
    assert cm.tolist() == [[2, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert cm.sum() == 5
    with pytest.raises(ValueError, match="pred"):
        confusion_matrix([0, 3], [0, 1], 3)


def test_softmax():
    p = softmax(np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]]))
    assert np.allclose(p, [[0.5, 0.5], [0.25, 0.75]])


def test_fuse_cli(tmp_path, capsys):
    from twostream_lib.fusion import main

    labels = np.array([0, 1, 1])
    ids = ["a", "b", "c"]
    s1 = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])  # errs on b
    s2 = np.array([[0.4, 0.6], [0.1, 0.9], [0.3, 0.7]])  # errs on a
    save_scores(tmp_path / "s.npz", s1, labels, ids, ["x", "y"])
    save_scores(tmp_path / "t.npz", s2, labels, ids, ["x", "y"])
    assert main([str(tmp_path / "s.npz"), str(tmp_path / "t.npz"), "--out", str(tmp_path / "f.npz")]) == 0
    out = capsys.readouterr().out
    assert "fused (average): accuracy 100.0%" in out and "accuracy 66.7%" in out
    save_scores(tmp_path / "u.npz", s2, np.array([0, 1, 0]), ids, ["x", "y"])
    assert main([str(tmp_path / "s.npz"), str(tmp_path / "u.npz")]) == 2
    assert "label" in capsys.readouterr().err


def test_pair_accuracy():
    from twostream_lib.metrics import pair_accuracy

    scores = np.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7], [0.6, 0.1, 0.3]])
    labels = [0, 1, 1, 1]
    # only the videos of classes 0 and 1 count, and only the choice between them: video 2 (class 1) is right
    # within the pair (0.2 > 0.1) though its argmax is class 2; video 3 prefers 0 -> wrong
    assert pair_accuracy(scores, labels, 0, 1) == (0.75, 4)
    with pytest.raises(ValueError, match="no video"):
        pair_accuracy(scores, labels, 2, 2)


def test_svm_refuses_test_scores_as_training_scores(tmp_path):
    """Fitting the SVM on the test videos' scores inflates the fused accuracy: refuse it (and shared videos)."""
    rng = np.random.default_rng(0)
    ids = [f"v{i}" for i in range(12)]
    labels = np.arange(12) % len(CLASSES)
    sc = lambda: rng.random((12, len(CLASSES)))
    test = [_write(tmp_path, f"test{k}.npz", sc(), labels, ids, meta={"subset": "test"}) for k in range(2)]
    with pytest.raises(ScoreFileError, match=r"test0\.npz holds test-set scores .* given as training scores"):
        fuse_files(test, "svm", train_score_paths=test)
    train_ids = [f"t{i}" for i in range(11)] + ["v3"]
    train = [_write(tmp_path, f"train{k}.npz", sc(), labels, train_ids, meta={"subset": "train"}) for k in range(2)]
    with pytest.raises(ScoreFileError, match=r"share 1 video\(s\), e\.g\. \['v3'\]"):
        fuse_files(test, "svm", train_score_paths=train)
    with pytest.raises(ScoreFileError, match=r"train0\.npz holds train-set scores .* given as test scores"):
        fuse_files(train, "svm", train_score_paths=train)


def test_fuse_cli_names_a_file_that_is_not_npz(tmp_path, capsys):
    bad = tmp_path / "notes.txt"
    bad.write_text("not scores")
    assert fusion_main([str(bad), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err and "not a readable .npz" in err and "Traceback" not in err


def test_scorecard_round_trip(tmp_path):
    from twostream_lib import scorecard

    a = scorecard.Claim("x_vs_y", "04_temporal", "x beats y", 0.07, 0.05, 0.02, scorecard.beats(0.05, 0.02))
    b = scorecard.Claim("z", "04_temporal", "z", None, 0.5, None, False)
    scorecard.write("04_temporal", [a, b], tmp_path)
    back = scorecard.load_all(tmp_path)
    assert back == [a, b] and back[0].holds is True
    t = scorecard.table(back)
    assert list(t["reproduced"]) == ["✔", "✘"] and t.loc["x beats y", "lab (%)"] == "5.0"
    with pytest.raises(ValueError, match="duplicate"):
        scorecard.write("04_temporal", [a, a], tmp_path)
    with pytest.raises(ValueError, match="finite"):
        scorecard.Claim("n", "c", "n", None, float("nan"), None, False)


def test_scorecard_seed_table_counts_the_runs_a_claim_holds_in(tmp_path):
    from twostream_lib import scorecard

    claim = lambda lab, holds: scorecard.Claim("x_vs_y", "04_temporal", "x beats y", 0.07, lab, 0.02, holds)
    other = scorecard.Claim("z", "05_multitask", "z", None, 0.5, None, True)
    scorecard.write("04_temporal", [claim(0.05, True)], tmp_path)
    scorecard.write("05_multitask", [other], tmp_path)
    assert scorecard.load_seeds(tmp_path) == {}
    scorecard.write("04_temporal", [claim(0.01, False)], tmp_path / "seeds" / "2")
    scorecard.write("04_temporal", [claim(0.06, True)], tmp_path / "seeds" / "10")  # seeds sort as numbers
    seeds = scorecard.load_seeds(tmp_path)
    assert list(seeds) == [2, 10] and scorecard.load_all(tmp_path) == [claim(0.05, True), other]
    t = scorecard.seed_table(scorecard.load_all(tmp_path), seeds)
    assert list(t.columns) == ["paper (%)", "lab, seed 0 (%) (the book's)", "lab, seed 2 (%)", "lab, seed 10 (%)",
                               "holds in"]
    assert list(t.loc["x beats y"]) == ["7.0", "5.0 ✔", "1.0 ✘", "6.0 ✔", "2 of 3"]
    assert list(t.loc["z"]) == ["–", "50.0 ✔", "–", "–", "1 of 1"]  # not measured with the other seeds
    assert scorecard.holds_in(scorecard.load_all(tmp_path), seeds) == {"x_vs_y": (2, 3), "z": (1, 1)}


def test_chapter_time_kept_from_the_execution_that_trained_its_runs(tmp_path):
    """A re-execution over finished runs takes seconds; the front page must keep the from-scratch cost."""
    from twostream_lib import scorecard

    scorecard.record_time("05_multitask", 330.0, tmp_path, reused_runs=1)   # from scratch, in order
    scorecard.record_time("05_multitask", 20.0, tmp_path, reused_runs=5)    # every run reused: not the cost
    assert scorecard.load_times(tmp_path) == {"05_multitask": 330.0}
    scorecard.record_time("05_multitask", 300.0, tmp_path, reused_runs=1)   # from scratch again: the new cost
    scorecard.record_time("06_fusion", 12.0, tmp_path, reused_runs=3)
    assert scorecard.load_times(tmp_path) == {"05_multitask": 300.0, "06_fusion": 12.0}
    assert scorecard.load_times(tmp_path, profile="gpu") == {}


def test_chapter_counts_the_runs_it_reuses(tmp_path):
    from twostream_lib.book import Chapter
    from twostream_lib.train import finished_run

    import torch
    from twostream_lib.checkpoint import make_checkpoint, save_checkpoint

    ch = Chapter("05_multitask", data="ucf101", runs_dir=tmp_path)   # real data: nothing is generated
    cfg = ch.config("lab_temporal", "ucf101_temporal")
    assert ch.reused == set() and finished_run(cfg) is None
    for f in ("last.pt", "best.pt"):   # the run, finished (as train leaves it)
        save_checkpoint(Path(cfg.out_dir) / f, make_checkpoint(torch.nn.Linear(1, 1), cfg, cfg.max_iters, [["a"]]))
    ch.config("lab_temporal", "ucf101_temporal")
    ch.config("lab_temporal", "ucf101_temporal", ["lr=0.02"], variant="t")  # other settings: another run
    assert ch.reused == {cfg.out_dir}
