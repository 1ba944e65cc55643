"""Tests of video-level evaluation (paper §6: softmax averaged over 25 frames x 10 crops per video), and the
end-to-end lab path: prepare a tiny cache -> train -> evaluate -> score file."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from twostream_lib import evaluate
from twostream_lib.evaluate import predict_videos, summarize

REPO = Path(__file__).resolve().parents[1]
K = 4  # classes of the probe model


class Probe(nn.Module):
    """logits = the first K pixels of channel 0's first row: a view's scores are whatever the data says."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))  # so .train()/.eval() and parameters() behave like a net

    def forward(self, x):
        return self.w * x[:, 0, 0, :K]


class MultiProbe(Probe):
    def forward(self, x, task=None):
        out = [super().forward(x), 2 * super().forward(x)]
        return out if task is None else out[task]


class FrameItems(Dataset):
    """Test items like twostream_lib.data: one per (video, frame), ``(views (V, 1, 2, K), label, video_index)``,
    random view contents (fixed per dataset)."""

    def __init__(self, num_videos=5, num_frames=3, num_crops=4, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.views = 3 * torch.randn(num_videos, num_frames, num_crops, 1, 2, K, generator=g)
        self.num_videos, self.num_frames = num_videos, num_frames
        self.video_index = np.repeat(np.arange(num_videos), num_frames)
        self.labels = [v % K for v in range(num_videos)]

    def __len__(self):
        return len(self.video_index)

    def __getitem__(self, i):
        v = int(self.video_index[i])
        return self.views[v, i - v * self.num_frames], self.labels[v], v

    def expected(self) -> np.ndarray:
        """Mean softmax over every view of each video, computed directly."""
        logits = self.views[..., 0, 0, :]  # (N, F, V, K)
        return torch.softmax(logits.double(), dim=-1).mean(dim=(1, 2)).numpy()


class VideoItems(FrameItems):
    """Whole-video items ``(views (F*V, 1, 2, K), label)``."""

    def __len__(self):
        return self.num_videos

    def __getitem__(self, i):
        return self.views[i].reshape(-1, 1, 2, K), self.labels[i]


@pytest.mark.parametrize("batch_videos,max_views", [(1, 512), (2, 5), (7, 1)])
def test_predict_videos_averages_softmax_over_all_views(batch_videos, max_views):
    ds = FrameItems()
    scores = predict_videos(Probe(), ds, "cpu", batch_videos=batch_videos, progress=False, max_views=max_views)
    assert scores.shape == (5, K) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, ds.expected(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)
    # not the same as averaging logits, nor as scoring one view
    logit_mean = torch.softmax(ds.views[..., 0, 0, :].mean(dim=(1, 2)), -1).numpy()
    assert not np.allclose(scores, logit_mean, atol=1e-3)


def test_predict_videos_whole_video_items_and_subsets():
    ds = VideoItems()
    np.testing.assert_allclose(predict_videos(Probe(), ds, progress=False), ds.expected(), rtol=1e-5, atol=1e-6)
    fi = FrameItems()
    part = predict_videos(Probe(), fi, progress=False, indices=[3, 4, 5])  # the items of video 1 only
    np.testing.assert_allclose(part[1], fi.expected()[1], rtol=1e-5, atol=1e-6)
    assert np.isnan(part[[0, 2, 3, 4]]).all()


def test_predict_videos_multitask_head_and_mode_restored():
    ds = FrameItems()
    m = MultiProbe().train()
    with pytest.raises(ValueError, match="pass task"):
        predict_videos(m, ds, progress=False)
    s1 = predict_videos(m, ds, progress=False, task=1)
    assert m.training  # the model's mode is restored
    expected = torch.softmax(2 * ds.views[..., 0, 0, :].double(), -1).mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(s1, expected, rtol=1e-5, atol=1e-6)


def test_summarize():
    scores = np.eye(3)[[0, 1, 2, 2]]
    labels = [0, 1, 2, 1]
    r = summarize(scores, labels, 3)
    assert r["accuracy"] == 0.75
    assert r["mean_class_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert r["confusion"].tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_caches(lab_root_tiny, tmp_path_factory):
    """lab-ucf and lab-hmdb tiny, prepared with ground-truth flow (seconds)."""
    from twostream_lib.prepare import prepare

    out = tmp_path_factory.mktemp("caches")
    caches = {}
    for name in ("lab-ucf", "lab-hmdb"):
        caches[name] = out / name
        prepare(name, lab_root_tiny / name, caches[name], flow="gt", short_side=None, progress=False)
    return caches


@pytest.mark.slow
def test_end_to_end_spatial_train_then_evaluate(lab_root_tiny, tiny_caches, tmp_path, capsys):
    """CLI path on real (tiny lab) data: train.main with the lab config + overrides, then evaluate test and
    train videos into score files that fusion reads."""
    from twostream_lib import evaluate, fusion, train
    from twostream_lib.splits import load_split

    torch.set_num_threads(1)
    out_dir = tmp_path / "run"
    rc = train.main(["configs/lab_spatial.yaml" if Path("configs").is_dir() else str(REPO / "configs/lab_spatial.yaml"),
                     f"roots=[{lab_root_tiny / 'lab-ucf'}]", f"caches=[{tiny_caches['lab-ucf']}]",
                     "arch=resnet18", "width=1", "crop_size=40", "batch_size=8", "max_iters=4", "lr_steps=[3]", "ckpt_every=2",
                     "val_every=2", "val_frames=2", "log_every=1", "workers=0", "device=cpu", "tensorboard=true",
                     f"out_dir={out_dir}", "--no-progress"])
    assert rc == 0
    assert "best val accuracy" in capsys.readouterr().out
    assert (out_dir / "best.pt").is_file() and (out_dir / "config.yaml").is_file()
    assert list((out_dir / "tb").glob("events.out.tfevents.*"))

    split = load_split("lab-ucf", lab_root_tiny / "lab-ucf", 1)
    r = evaluate.evaluate_checkpoint(out_dir / "best.pt", subset="test", out=tmp_path / "test.npz", frames=3,
                                     crops=10, device="cpu", progress=False)
    n_test = len(split.test)
    assert r["scores"].shape == (n_test, len(split.classes))
    np.testing.assert_allclose(r["scores"].sum(1), 1.0, atol=1e-4)
    assert r["video_ids"] == [split.video_id(p) for p, _ in split.test]
    assert r["confusion"].sum() == n_test and 0.0 <= r["accuracy"] <= 1.0
    saved = fusion.load_scores(tmp_path / "test.npz")
    assert saved["video_ids"] == r["video_ids"] and saved["meta"]["subset"] == "test"

    rc = evaluate.main([str(out_dir / "best.pt"), "--subset", "train", "--out", str(tmp_path / "train.npz"),
                        "--frames", "2", "--crops", "1", "--device", "cpu", "--no-progress"])
    assert rc == 0 and "accuracy" in capsys.readouterr().out
    tr = fusion.load_scores(tmp_path / "train.npz")
    assert len(tr["video_ids"]) == len(split.train)  # all training videos, held-out ones included (SVM fusion)


def test_end_to_end_multitask_temporal(lab_root_tiny, tiny_caches, tmp_path):
    """Two datasets -> one trunk, two heads (§4); each head evaluated on its own dataset."""
    from twostream_lib.config import load_config
    from twostream_lib.evaluate import evaluate_checkpoint
    from twostream_lib.splits import load_split
    from twostream_lib.train import train

    torch.set_num_threads(1)
    cfg = load_config(REPO / "configs/lab_multitask.yaml", [
        f"roots=[{lab_root_tiny / 'lab-ucf'},{lab_root_tiny / 'lab-hmdb'}]",
        f"caches=[{tiny_caches['lab-ucf']},{tiny_caches['lab-hmdb']}]", "arch=resnet18", "width=1", "crop_size=40", "L=3",
        "batch_size=8", "max_iters=3", "ckpt_every=3", "val_every=3", "val_frames=2", "workers=1", "device=cpu",
        "tensorboard=false", f"out_dir={tmp_path / 'mt'}"])
    r = train(cfg, progress=False)
    assert r["final"]["step"] == 3 and r["history"][-1]["val_acc_1"] is not None
    hmdb = load_split("lab-hmdb", lab_root_tiny / "lab-hmdb", 1)
    ev = evaluate_checkpoint(r["best_checkpoint"], subset="test", task=1, frames=2, crops=1, device="cpu",
                             progress=False)
    assert ev["scores"].shape == (len(hmdb.test), len(hmdb.classes))
    assert math.isfinite(ev["mean_class_accuracy"])
    # the loader's workers don't change a score; on a CPU the default builds the test items in place (0 workers)
    seen = []
    real = evaluate.predict_videos
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate, "predict_videos", lambda *a, **k: seen.append(k["workers"]) or real(*a, **k))
        by_default = evaluate_checkpoint(r["best_checkpoint"], task=1, frames=2, crops=10, device="cpu",
                                         progress=False)
        one_worker = evaluate_checkpoint(r["best_checkpoint"], task=1, frames=2, crops=10, device="cpu",
                                         progress=False, workers=1)
    assert seen == [0, 1]
    np.testing.assert_allclose(by_default["scores"], one_worker["scores"], rtol=0, atol=1e-6)


def test_shared_head_union_of_classes(lab_root_tiny, tiny_caches, tmp_path):
    """Table 2, row 3: the target's classes + the other dataset's non-shared classes under one softmax;
    evaluation scores the target over its own classes."""
    from twostream_lib.config import load_config
    from twostream_lib.evaluate import evaluate_checkpoint
    from twostream_lib.lab import SHARED_CLASSES
    from twostream_lib.splits import load_split
    from twostream_lib.train import build_datasets, train

    torch.set_num_threads(1)
    shared_ucf = [u for u, _ in SHARED_CLASSES]
    cfg = load_config(REPO / "configs/lab_multitask.yaml", [
        "datasets=[lab-hmdb,lab-ucf]", "heads=shared", f"exclude_classes=[{','.join(shared_ucf)}]",
        f"roots=[{lab_root_tiny / 'lab-hmdb'},{lab_root_tiny / 'lab-ucf'}]",
        f"caches=[{tiny_caches['lab-hmdb']},{tiny_caches['lab-ucf']}]", "arch=resnet18", "width=1", "crop_size=40",
        "L=3", "batch_size=8", "max_iters=2", "ckpt_every=2", "val_every=2", "val_frames=2", "workers=0",
        "device=cpu", "tensorboard=false", f"out_dir={tmp_path / 'sh'}"])
    hmdb = load_split("lab-hmdb", lab_root_tiny / "lab-hmdb", 1)
    ucf = load_split("lab-ucf", lab_root_tiny / "lab-ucf", 1)
    data = build_datasets(cfg)
    (union,) = data.classes
    assert union[:len(hmdb.classes)] == hmdb.classes
    assert len(union) == len(hmdb.classes) + len(ucf.classes) - len(shared_ucf)
    assert not set(shared_ucf) & set(union[len(hmdb.classes):])
    assert max(data.labels) == len(union) - 1 and len(data.val) == 1
    r = train(cfg, progress=False, data=data)
    ev = evaluate_checkpoint(r["best_checkpoint"], subset="test", frames=2, crops=1, device="cpu", progress=False)
    assert ev["scores"].shape == (len(hmdb.test), len(hmdb.classes))
    np.testing.assert_allclose(ev["scores"].sum(1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="not classes of"):
        build_datasets(load_config(REPO / "configs/lab_multitask.yaml", [
            "datasets=[lab-hmdb,lab-ucf]", "heads=shared", "exclude_classes=[Nope]",
            f"roots=[{lab_root_tiny / 'lab-hmdb'},{lab_root_tiny / 'lab-ucf'}]",
            f"caches=[{tiny_caches['lab-hmdb']},{tiny_caches['lab-ucf']}]", "L=3", "crop_size=40",
            "arch=resnet18", "width=1"]))


@pytest.fixture(scope="module")
def tiny_cache_256(lab_root_tiny, tmp_path_factory):
    """lab-ucf tiny prepared as the real data is: frames and flow at short side 256 (so 224 crops fit)."""
    from twostream_lib.prepare import prepare

    cache = tmp_path_factory.mktemp("c256") / "lab-ucf"
    prepare("lab-ucf", lab_root_tiny / "lab-ucf", cache, flow="gt", short_side=256, progress=False)
    return cache


@pytest.mark.slow
@pytest.mark.parametrize("config", ["ucf101_spatial_scratch", "ucf101_temporal"])
def test_paper_scale_configs_run_at_224(config, lab_root_tiny, tiny_cache_256, tmp_path):
    """The paper-scale configs (CNN-M-2048, width 1, 224 crops, their dropout/LRN/schedule) train and evaluate a
    few iterations end to end on lab data in the real-data layout and cache format."""
    from twostream_lib.config import load_config
    from twostream_lib.evaluate import evaluate_checkpoint
    from twostream_lib.train import train

    cfg = load_config(REPO / "configs" / f"{config}.yaml", [
        "datasets=[lab-ucf]", f"roots=[{lab_root_tiny / 'lab-ucf'}]", f"caches=[{tiny_cache_256}]",
        "batch_size=4", "max_iters=2", "ckpt_every=2", "val_every=2", "val_frames=1", "workers=0", "amp=false",
        "channels_last=false", "device=cpu", "tensorboard=false", f"out_dir={tmp_path / 'run'}"])
    assert cfg.crop_size == 224 and cfg.width == 1.0 and cfg.arch == "cnn_m_2048"
    r = train(cfg, progress=False)
    assert r["final"]["step"] == 2 and math.isfinite(r["final"]["loss"])
    ev = evaluate_checkpoint(r["best_checkpoint"], subset="test", frames=1, crops=1, device="cpu", progress=False)
    assert ev["scores"].shape[1] == 16 and np.isfinite(ev["scores"]).all()


def _relabelled_root(src: Path, dst: Path, order) -> Path:
    """A UCF-layout root with the same videos and the classes of ``order`` (names, in this order): classInd and
    the split lists rewritten, videos linked."""
    lists = dst / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (dst / "UCF-101").symlink_to(src / "UCF-101")
    (lists / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(order, 1)))
    idx = {c: i for i, c in enumerate(order, 1)}
    for f in (src / "ucfTrainTestlist").glob("*list0*.txt"):
        lines = [l.split() for l in f.read_text().splitlines() if l.strip()]
        keep = [l for l in lines if l[0].split("/")[0] in idx]
        (lists / f.name).write_text("".join(
            f"{l[0]} {idx[l[0].split('/')[0]]}\n" if len(l) == 2 else f"{l[0]}\n" for l in keep))
    return dst


@pytest.mark.slow
def test_evaluate_refuses_a_dataset_with_other_classes(lab_root_tiny, tiny_caches, tmp_path):
    """A reordered classInd.txt (same count) would silently write scores under the wrong class names; another
    count gave a cryptic range error. Both are refused, showing both class lists."""
    from twostream_lib.config import load_config
    from twostream_lib.evaluate import ClassListError, evaluate_checkpoint
    from twostream_lib.splits import load_split
    from twostream_lib.train import train

    torch.set_num_threads(1)
    src = lab_root_tiny / "lab-ucf"
    cfg = load_config(REPO / "configs/lab_spatial.yaml", [
        f"roots=[{src}]", f"caches=[{tiny_caches['lab-ucf']}]", "crop_size=48", "batch_size=4", "max_iters=2",
        "lr_steps=[1]", "ckpt_every=2", "val_fraction=0", "device=cpu", "tensorboard=false", "workers=0",
        f"out_dir={tmp_path / 'run'}"])
    ckpt = train(cfg, progress=False)["best_checkpoint"]
    classes = load_split("lab-ucf", src, 1).classes
    swapped = [classes[1], classes[0]] + classes[2:]
    with pytest.raises(ClassListError, match=rf"trained on the classes \['{classes[0]}', '{classes[1]}'.*"
                                             rf"lists \['{classes[1]}', '{classes[0]}'"):
        evaluate_checkpoint(ckpt, root=str(_relabelled_root(src, tmp_path / "swapped", swapped)), frames=1,
                            crops=1, device="cpu", progress=False)
    with pytest.raises(ClassListError, match=rf"\({len(classes)}\), but .* \({len(classes) - 1}\)"):
        evaluate_checkpoint(ckpt, root=str(_relabelled_root(src, tmp_path / "fewer", classes[:-1])), frames=1,
                            crops=1, device="cpu", progress=False)
    assert evaluate_checkpoint(ckpt, frames=1, crops=1, device="cpu", progress=False)["classes"] == classes


def test_cached_scores_reuse_only_the_same_checkpoint_and_protocol(tmp_path, monkeypatch):
    """One staleness rule for every chapter: a score file is reused only for the checkpoint (path, size, mtime)
    and the protocol (subset, frames, crops, task) it was written for, on the videos the split lists now."""
    import twostream_lib.evaluate as ev

    ckpt = tmp_path / "best.pt"
    ckpt.write_bytes(b"weights v1")
    calls = []

    def fake_evaluate(path, subset, out, frames, crops, task, **kw):
        calls.append((subset, frames, crops))
        meta = dict(checkpoint=str(Path(path).resolve()), checkpoint_stamp=ev._stamp(path), subset=subset,
                    frames=frames, crops=crops, task=task)
        ev.save_scores(out, np.eye(2), [0, 1], ["a", "b"], ["x", "y"], meta)
        return {"out": str(out)}

    listed = ["a", "b"]  # the split's videos now
    monkeypatch.setattr(ev, "evaluate_checkpoint", fake_evaluate)
    monkeypatch.setattr(ev, "_subset_video_ids", lambda *a, **k: list(listed))
    out = tmp_path / "s.npz"
    ev.cached_scores(ckpt, out, frames=5, crops=1)
    r = ev.cached_scores(ckpt, out, frames=5, crops=1)
    assert len(calls) == 1 and r["accuracy"] == 1.0  # read back
    ev.cached_scores(ckpt, out, frames=25, crops=1)  # another protocol
    assert len(calls) == 2
    import os
    os.utime(ckpt, ns=(1, 1))  # the checkpoint was rewritten
    ev.cached_scores(ckpt, out, frames=25, crops=1)
    assert len(calls) == 3
    listed.append("z")  # the split file now lists another test video: the score file is stale
    ev.cached_scores(ckpt, out, frames=25, crops=1)
    assert len(calls) == 4


def test_the_split_check_of_cached_scores_reads_the_split_files(lab_root_tiny):
    """``_subset_video_ids`` reads the dataset, root and split a score file's meta records: the ids the test list
    holds now; a file that records none, or a root that is gone, is stale (``None``)."""
    import twostream_lib.evaluate as ev

    root = lab_root_tiny / "lab-ucf"
    want = [ln.strip().split("/")[-1] for ln in
            (root / "ucfTrainTestlist" / "testlist01.txt").read_text().splitlines() if ln.strip()]
    got = ev._subset_video_ids({"dataset": "lab-ucf", "root": str(root), "split": 1}, "test")
    assert [g.split("/")[-1] for g in got] == want
    assert ev._subset_video_ids({"checkpoint": "best.pt"}, "test") is None
    assert ev._subset_video_ids({"dataset": "lab-ucf", "root": str(root / "gone"), "split": 1}, "test") is None


@pytest.mark.slow
def test_device_loader_trains_and_resumes_exactly(lab_root_tiny, tiny_caches, tmp_path):
    """``loader: device`` in the trainer (here on the CPU): a run interrupted after its first chunk and resumed ends
    with the weights of an uninterrupted one (the loader makes a skipped batch's random draws too)."""
    from twostream_lib.checkpoint import load_checkpoint
    from twostream_lib.config import load_config
    from twostream_lib.train import train

    torch.set_num_threads(1)

    def cfg(out, iters, resume=False):
        return load_config(REPO / "configs/lab_temporal.yaml", [
            f"roots=[{lab_root_tiny / 'lab-ucf'}]", f"caches=[{tiny_caches['lab-ucf']}]", "crop_size=48",
            "L=4", "batch_size=4", f"max_iters={iters}", "lr_steps=[3]", "ckpt_every=2", "val_fraction=0",
            "device=cpu", "tensorboard=false", "workers=0", "loader=device", f"out_dir={out}",
            f"resume={str(resume).lower()}"])

    whole = train(cfg(tmp_path / "a", 4), progress=False)
    train(cfg(tmp_path / "b", 2), progress=False)
    resumed = train(cfg(tmp_path / "b", 4, resume=True), progress=False)
    a, b = (load_checkpoint(r["last_checkpoint"])["model"] for r in (whole, resumed))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    assert whole["final"]["loss"] is not None and np.isfinite(whole["final"]["loss"])
