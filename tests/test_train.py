"""Tests of the config, the training loop, checkpoints, resume, DDP and the end-to-end lab path.

The loop is tested on small synthetic datasets (a class = a bright band at a class-specific place + noise) and a
narrow CNN-M-2048 (width 0.125, 64x64 inputs), so each run takes about a second on one CPU thread.
"""
from __future__ import annotations

import csv
import os
import signal
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from twostream_lib.config import ConfigError, TrainConfig, load_config
from twostream_lib.checkpoint import load_checkpoint
from twostream_lib.data import RunData
from twostream_lib.train import finished_run, train

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- synthetic data
class SynthTrain(Dataset):
    """Train mode: ``(x (C, S, S), label)``; class k lights band k. ``noise`` from torch's RNG (like the real
    datasets' random crops), or per-index deterministic noise with ``fixed_noise=True`` (for DDP exactness)."""

    def __init__(self, num_classes=3, per_class=6, size=64, channels=3, noise=0.5, fixed_noise=False):
        self.labels = [c for c in range(num_classes) for _ in range(per_class)]
        self.num_classes, self.size, self.channels = num_classes, size, channels
        self.noise, self.fixed_noise = noise, fixed_noise
        self.fetches = 0

    def base(self, label):
        x = torch.zeros(self.channels, self.size, self.size)
        s = self.size // self.num_classes
        x[:, :, label * s:(label + 1) * s] = 1.0
        return x

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.fetches += 1
        y = self.labels[i]
        g = torch.Generator().manual_seed(1000 + i) if self.fixed_noise else None
        return self.base(y) + self.noise * torch.randn(self.base(y).shape, generator=g), y


class SynthTest(SynthTrain):
    """Test mode like :mod:`twostream_lib.data`: one item per (video, frame), ``(views (V, C, S, S), label,
    video_index)``; deterministic."""

    def __init__(self, num_frames=3, num_crops=2, **kw):
        super().__init__(**kw)
        self.num_frames, self.num_crops = num_frames, num_crops
        self.num_videos = len(self.labels)
        self.video_index = np.repeat(np.arange(self.num_videos), num_frames)
        self.video_ids = [f"v{i}" for i in range(self.num_videos)]

    def __len__(self):
        return len(self.video_index)

    def __getitem__(self, i):
        v = int(self.video_index[i])
        y = self.labels[v]
        g = torch.Generator().manual_seed(i)
        noise = torch.randn((self.num_crops, self.channels, self.size, self.size), generator=g)
        return self.base(y)[None] + self.noise * noise, y, v


class Poisoned(SynthTrain):
    """Returns NaN inputs after ``nan_at`` fetches."""

    def __init__(self, nan_at, **kw):
        super().__init__(**kw)
        self.nan_at = nan_at

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        if self.nan_at is not None and self.fetches > self.nan_at:
            x = x * float("nan")
        return x, y


def synth_data(train_ds=None, val=True, fixed_noise=False) -> RunData:
    train_ds = train_ds if train_ds is not None else SynthTrain(fixed_noise=fixed_noise)
    return RunData(train_ds, list(train_ds.labels), [SynthTest(per_class=2)] if val else [], [["a", "b", "c"]])


def synth_cfg(tmp_path: Path, **kw) -> TrainConfig:
    base = dict(name="t", datasets=["lab-ucf"], roots=["unused"], caches=["unused"], crop_size=64, width=0.125,
                dropout=0.5, batch_size=8, lr=0.01, lr_steps=[20], max_iters=30, ckpt_every=10, val_every=15,
                log_every=5, out_dir=str(tmp_path / "run"), tensorboard=False, device="cpu", val_frames=3)
    base.update(kw)
    return TrainConfig(**base).validate()


def state_of(path) -> dict:
    return load_checkpoint(path)["model"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------- config
def test_config_yaml_overrides_and_types(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("stream: temporal\ndatasets: [lab-ucf, lab-hmdb]\nroots: [a, b]\ncaches: [c, d]\nlr: 1e-2\n"
                 "L: 6\nlr_steps: [10, 20]\nmax_iters: 30\n")
    cfg = load_config(p, ["lr=0.05", "max_iters=40", "bidirectional=true", "lr_steps=[5,25]", "conv2_norm=null",
                          "dropout=0.9", "out_dir=runs/x"])
    assert cfg.stream == "temporal" and cfg.datasets == ["lab-ucf", "lab-hmdb"] and cfg.num_tasks == 2
    assert cfg.lr == 0.05 and isinstance(cfg.lr, float)
    assert cfg.max_iters == 40 and isinstance(cfg.max_iters, int)
    assert cfg.bidirectional is True and cfg.lr_steps == [5, 25] and cfg.conv2_norm is None
    assert cfg.in_channels == 12 and cfg.use_conv2_norm is False  # 2L channels; no conv2 LRN (temporal, §5)
    assert load_config(p).lr == 0.01  # "1e-2" (a YAML string) coerced to float


def test_config_errors_name_key_and_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("stream: spatial\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'learning_rate'"):
        load_config(p)
    good = tmp_path / "good.yaml"
    good.write_text("stream: spatial\n")
    with pytest.raises(ConfigError, match="'nope'"):
        load_config(good, ["nope=1"])
    with pytest.raises(ConfigError, match="max_iters must be an integer"):
        load_config(good, ["max_iters=1.5"])
    with pytest.raises(ConfigError, match="stream must be"):
        load_config(good, ["stream=audio"])
    with pytest.raises(ConfigError, match="roots has 1 entries but datasets has 2"):
        load_config(good, ["datasets=[ucf101,hmdb51]"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(good, ["lr"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_config(path)
    assert cfg.momentum == 0.9 and cfg.lr == 0.01  # §5
    assert all(not Path(p).is_absolute() for p in cfg.roots + cfg.caches + [cfg.out_dir])
    if not path.name.startswith("lab_"):  # paper scale (§5)
        assert cfg.batch_size == 256 and cfg.crop_size == 224 and cfg.width == 1.0
        assert (cfg.lr_steps, cfg.max_iters) in (([50_000, 70_000], 80_000), ([14_000], 20_000))
        if cfg.stream == "temporal":
            assert cfg.dropout == 0.9 and cfg.L == 10


# ------------------------------------------------------------------------------------------- training
def test_training_lowers_the_loss(tmp_path):
    cfg = synth_cfg(tmp_path, max_iters=40, dropout=0.0, lr_steps=[30])
    r = train(cfg, progress=False, data=synth_data())
    losses = [h["loss"] for h in r["history"] if h["loss"] is not None]
    assert losses[0] > 0.9  # ~ln 3 at the start
    assert losses[-1] < 0.5 * losses[0], losses
    assert r["final"]["best_val"] > 0.5  # chance is 1/3
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r_["step"]) for r_ in rows] == [h["step"] for h in r["history"]]
    assert set(rows[0]) >= {"step", "lr", "loss", "acc", "val_acc", "samples_per_s"}
    # lr schedule by iteration (§5): 0.01 until iteration 30, then 0.001
    lrs = {int(r_["step"]): float(r_["lr"]) for r_ in rows}
    assert lrs[25] == pytest.approx(0.01) and lrs[30] == pytest.approx(0.001)


def test_checkpoints_load_weights_only(tmp_path):
    r = train(synth_cfg(tmp_path, max_iters=10, val_every=10), progress=False, data=synth_data())
    for path in (r["last_checkpoint"], r["best_checkpoint"]):
        ckpt = torch.load(path, weights_only=True)
        assert isinstance(ckpt["config"], dict) and ckpt["config"]["max_iters"] == 10
        assert ckpt["num_classes"] == [3]
    last = torch.load(r["last_checkpoint"], weights_only=True)
    assert last["step"] == 10 and {"optimizer", "scheduler", "rng", "best_val", "classes"} <= set(last)
    assert isinstance(last["rng"]["torch"], torch.Tensor)
    assert not list((tmp_path / "run").glob("*.tmp*"))  # atomic writes leave no temp file


def _model(cfg, crash_at=None):
    """The run's net, seeded like ``train`` does; raises during its ``crash_at``-th training forward."""
    from twostream_lib.models import build_model_for

    torch.manual_seed(cfg.seed)
    model = build_model_for(cfg, [3])
    calls = [0]

    def hook(module, args):
        if module.training:
            calls[0] += 1
            if crash_at is not None and calls[0] >= crash_at:
                raise RuntimeError("simulated crash")

    model.register_forward_pre_hook(hook)
    return model


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly(tmp_path, workers):
    """A run killed mid-chunk and resumed from last.pt ends with the weights of an uninterrupted run (dropout
    and random inputs on, a validation between the checkpoint and the kill; with and without worker processes)."""
    kw = dict(max_iters=30, ckpt_every=10, val_every=15, workers=workers)
    cfg_a = synth_cfg(tmp_path / "a", **kw)
    full = train(cfg_a, progress=False, data=synth_data(), model=_model(cfg_a))

    cfg_b = synth_cfg(tmp_path / "b", **kw)
    with pytest.raises(RuntimeError, match="simulated crash"):  # dies in iteration 26
        train(cfg_b, progress=False, data=synth_data(), model=_model(cfg_b, crash_at=26))
    assert load_checkpoint(tmp_path / "b" / "run" / "last.pt")["step"] == 20
    cfg_b = replace(cfg_b, resume=True)
    resumed = train(cfg_b, progress=False, data=synth_data(), model=_model(cfg_b))

    a, b = state_of(full["last_checkpoint"]), state_of(resumed["last_checkpoint"])
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    assert resumed["final"]["best_val"] == full["final"]["best_val"]
    steps = [h["step"] for h in resumed["history"]]
    assert steps == [h["step"] for h in full["history"]]  # log rows after the resume point are not duplicated
    # and the runs did train: weights moved away from the initialisation
    w0 = _model(cfg_a).state_dict()
    assert not torch.allclose(w0["head.weight"], a["head.weight"], atol=1e-4)


def test_a_kill_between_the_first_best_and_the_first_last_checkpoint_loses_nothing(tmp_path):
    """best.pt comes at the first validation, last.pt at the end of the first chunk; a kill in between used to
    leave a folder that --resume refused. Iteration 0 is written as last.pt, so the run resumes, exactly; the
    temporary files a kill leaves are removed by the next run of the folder."""
    kw = dict(max_iters=20, ckpt_every=10, val_every=5)
    cfg_a = synth_cfg(tmp_path / "a", **kw)
    full = train(cfg_a, progress=False, data=synth_data(), model=_model(cfg_a))
    cfg_b = synth_cfg(tmp_path / "b", **kw)
    with pytest.raises(RuntimeError, match="simulated crash"):  # dies in iteration 8, after best.pt at 5
        train(cfg_b, progress=False, data=synth_data(), model=_model(cfg_b, crash_at=8))
    run = Path(cfg_b.out_dir)
    assert (run / "best.pt").is_file() and load_checkpoint(run / "last.pt")["step"] == 0
    (run / ".last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # as a kill inside torch.save leaves it
    (run / ".test_scores_25x10.npz.z9.tmp").write_bytes(b"half a score file")
    resumed = train(replace(cfg_b, resume=True), progress=False, data=synth_data(), model=_model(cfg_b))
    a, b = state_of(full["last_checkpoint"]), state_of(resumed["last_checkpoint"])
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-6, msg=k)
    assert not list(run.glob(".*.tmp"))


def test_a_corrupted_checkpoint_is_refused_naming_the_file(tmp_path):
    """Flipped bytes inside the tensor data used to load as other weights; the archive's CRCs catch them."""
    from twostream_lib.checkpoint import CheckpointError

    r = train(synth_cfg(tmp_path, max_iters=10, val_every=10), progress=False, data=synth_data())
    last = Path(r["last_checkpoint"])
    data = bytearray(last.read_bytes())
    at = data.index(b"data/0") + 200  # inside the first tensor's bytes
    data[at:at + 64] = bytes(b ^ 0xFF for b in data[at:at + 64])
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{last}.*CRC"):
        load_checkpoint(last)
    with pytest.raises(CheckpointError, match="CRC"):
        train(synth_cfg(tmp_path, max_iters=20, val_every=10, resume=True), progress=False, data=synth_data())


def test_a_full_disk_says_so_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import shutil as shutil_mod

    from twostream_lib import checkpoint

    r = train(synth_cfg(tmp_path, max_iters=10, val_every=10), progress=False, data=synth_data())
    last = Path(r["last_checkpoint"])
    before = last.read_bytes()

    def full(obj, f, *a, **kw):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4480 vs 4376")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                        lambda p: shutil_mod._ntuple_diskusage(10 * 2**30, 10 * 2**30, 0))
    with pytest.raises(checkpoint.CheckpointError, match=r"disk is full \(0 MiB free.*previous checkpoint, untouched"):
        checkpoint.save_checkpoint(last, {"model": {}, "config": {}})
    assert last.read_bytes() == before and not list(last.parent.glob(".*.tmp"))
    monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                        lambda p: shutil_mod._ntuple_diskusage(10 * 2**30, 0, 10 * 2**30))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # not a full disk: torch's own error, unchanged
        checkpoint.save_checkpoint(last, {"model": {}, "config": {}})


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = synth_cfg(tmp_path, max_iters=30, ckpt_every=5, val_every=0)
    bad = Poisoned(nan_at=12 * 8)  # iteration 13's inputs are NaN
    with pytest.raises(FloatingPointError, match=r"non-finite training loss at iteration 13.*last\.pt.*iteration 10"):
        train(cfg, progress=False, data=synth_data(bad, val=False))
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 10
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_cli_main_rejects_unknown_key(tmp_path):
    """``python -m twostream_lib train`` names the bad key (the successful CLI path: test_evaluate end to end)."""
    from twostream_lib.train import main

    p = tmp_path / "c.yaml"
    p.write_text("stream: spatial\nlr_rate: 1\n")
    with pytest.raises(ConfigError, match="lr_rate"):
        main([str(p)])


DDP_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    sys.path.insert(0, sys.argv[1])
    from test_train import synth_cfg, synth_data
    from pathlib import Path
    from twostream_lib.train import train
    torch.set_num_threads(1)
    cfg = synth_cfg(Path(sys.argv[2]), dropout=0.0, max_iters=12, ckpt_every=6, val_every=6, batch_size=8)
    train(cfg, progress=False, data=synth_data(fixed_noise=True))
""")


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one(tmp_path):
    """2 processes x 4 samples (DDP, gloo) = 1 process x 8 samples: the same weights (no dropout, no BN,
    per-sample deterministic data), up to float summation order."""
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(Path(__file__).parent), str(tmp_path / "ddp")]
    # own process group, so that a hang kills the launcher AND its workers (no orphaned gloo ranks)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail("DDP run timed out after 180 s:\n" + out[-2000:] + err[-2000:])
    assert proc.returncode == 0, out[-3000:] + err[-3000:]

    one = train(synth_cfg(tmp_path / "one", dropout=0.0, max_iters=12, ckpt_every=6, val_every=6, batch_size=8),
                progress=False, data=synth_data(fixed_noise=True))
    a, b = state_of(one["last_checkpoint"]), state_of(tmp_path / "ddp" / "run" / "last.pt")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=k)
    ddp_ckpt = load_checkpoint(tmp_path / "ddp" / "run" / "last.pt")
    assert ddp_ckpt["best_val"] == pytest.approx(one["final"]["best_val"])  # sharded validation, summed
    assert ddp_ckpt["step"] == 12


def test_resume_with_other_settings_refused(tmp_path):
    """Resuming a checkpoint trained with other settings is a stale run: refused, naming the difference;
    a finished run resumed with the same settings returns at once with its history (how chapters reuse runs)."""
    from twostream_lib.config import ConfigError

    r = train(synth_cfg(tmp_path, max_iters=10, val_every=10), progress=False, data=synth_data())
    for _ in range(2):  # reusing a finished run twice (chapter 3, then chapter 6) reads back its own log
        again = train(synth_cfg(tmp_path, max_iters=10, val_every=10, resume=True), progress=False,
                      data=synth_data())
        assert again["final"]["step"] == 10
        assert [h["step"] for h in again["history"]] == [h["step"] for h in r["history"]]
    with pytest.raises(ConfigError, match=r"cannot resume.*lr: checkpoint 0.01, now 0.02"):
        train(synth_cfg(tmp_path, max_iters=10, val_every=10, lr=0.02, resume=True), progress=False,
              data=synth_data())
    # finished_run: the one test of "this very run, finished" (the stills pre-training reuses it too)
    assert finished_run(synth_cfg(tmp_path, max_iters=10, val_every=10, resume=True))["step"] == 10
    assert finished_run(synth_cfg(tmp_path, max_iters=10, val_every=10, resume=True, workers=3)) is not None
    assert finished_run(synth_cfg(tmp_path, max_iters=10, val_every=10, resume=False)) is None
    assert finished_run(synth_cfg(tmp_path, max_iters=20, val_every=10, resume=True)) is None  # not finished
    assert finished_run(synth_cfg(tmp_path, max_iters=10, val_every=10, resume=True, lr=0.02)) is None
    assert finished_run(synth_cfg(tmp_path / "elsewhere", max_iters=10, val_every=10, resume=True)) is None


def test_resume_compares_places_not_spellings(tmp_path, monkeypatch):
    """The same run named by a relative and by an absolute path, or moved to another folder, is the same run:
    reused and resumed; a dataset root that is another place is another experiment."""
    import shutil

    from twostream_lib.config import ConfigError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    kw = dict(max_iters=10, val_every=10, roots=["data"], caches=["./data/../data"])
    first = synth_cfg(tmp_path, **kw)
    train(replace(first, out_dir="run"), progress=False, data=synth_data())  # relative out_dir
    same = dict(kw, roots=[str(tmp_path / "data")], caches=[str(tmp_path / "data")], resume=True)
    for out in (str(tmp_path / "run"), "./run", "data/../run"):
        assert finished_run(replace(synth_cfg(tmp_path, **same), out_dir=out))["step"] == 10, out
    shutil.move(tmp_path / "run", tmp_path / "moved")
    longer = replace(synth_cfg(tmp_path, **dict(same, max_iters=20)), out_dir=str(tmp_path / "moved"))
    assert train(longer, progress=False, data=synth_data())["final"]["step"] == 20  # resumed, not refused
    other = replace(synth_cfg(tmp_path, **dict(same, roots=[str(tmp_path)], max_iters=30)), out_dir="moved")
    with pytest.raises(ConfigError, match="cannot resume.*roots"):
        train(other, progress=False, data=synth_data())
    # relative paths start where the run was trained: the command line's data/ is the book's ../data/
    (tmp_path / "book").mkdir()
    monkeypatch.chdir(tmp_path / "book")
    from_book = replace(synth_cfg(tmp_path, **dict(same, roots=["../data"], caches=["../data"], max_iters=20)),
                        out_dir="../moved")
    assert finished_run(from_book)["step"] == 20


def test_run_config_names_data_and_runs_for_lab_and_real_data(tmp_path):
    from twostream_lib.config import run_config

    cfg = run_config("lab_multitask", ["datasets=[lab-hmdb,lab-ucf]", "L=6"], variant="mt", data_dir=tmp_path / "d",
                     scale="tiny", runs_dir=tmp_path / "r")
    assert cfg.roots == [str(tmp_path / "d/lab/tiny/lab-hmdb"), str(tmp_path / "d/lab/tiny/lab-ucf")]
    assert cfg.caches == [str(tmp_path / "d/cache/tiny/lab-hmdb-dis"), str(tmp_path / "d/cache/tiny/lab-ucf-dis")]
    assert cfg.out_dir == str(tmp_path / "r/tiny/lab_multitask_mt") and cfg.resume and cfg.L == 6
    assert cfg.name == "lab_multitask_mt"
    two = run_config("lab_temporal", ["datasets=[lab-hmdb,lab-ucf]"], data_dir=tmp_path / "d")  # 1 -> 2 datasets
    assert len(two.roots) == len(two.caches) == 2
    real = run_config("multitask_temporal", ["split=2", "seed=3"], data_dir=tmp_path / "d", runs_dir=tmp_path / "r")
    assert real.roots == [str(tmp_path / "d/ucf101"), str(tmp_path / "d/hmdb51")]
    assert real.caches == [str(tmp_path / "d/cache/ucf101-tvl1"), str(tmp_path / "d/cache/hmdb51-tvl1")]
    assert real.out_dir == str(tmp_path / "r/multitask_temporal_split2_seed3")
    q75 = run_config("lab_temporal", [f"caches=[{tmp_path / 'q75'}]"], variant="q75", data_dir=tmp_path / "d")
    assert q75.caches == [str(tmp_path / "q75")] and q75.roots == [str(tmp_path / "d/lab/small/lab-ucf")]


def test_every_config_file_names_its_run_folder_by_the_rule():
    """The out_dir each YAML file gives is run_folder's for that config as it is (the lab's under their scale,
    small), so the command line and the chapters name one run alike."""
    from twostream_lib.config import run_folder

    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_config(path)
        lab = all(d.startswith("lab-") for d in cfg.datasets)
        scale = Path(cfg.roots[0]).parent.name if lab else None
        assert cfg.name == path.stem, path.name
        assert Path(cfg.out_dir) == run_folder(path.stem, scale=scale), path.name


def test_command_line_and_chapters_share_runs(lab_root_tiny, tmp_path, monkeypatch, capsys):
    """A run the command line trains (the command a chapter prints for it) is the chapter's: reused, not trained
    again; and a chapter's variant is found finished by its printed command with --resume. The config as its file
    gives it is the bare command, from the project's root or the book's folder alike."""
    import shlex
    import shutil

    from twostream_lib import cli
    from twostream_lib.book import Chapter
    from twostream_lib.config import command_line, run_config
    from twostream_lib.prepare import prepare

    data = tmp_path / "data"
    shutil.copytree(lab_root_tiny / "lab-ucf", data / "ucf101", symlinks=True)
    prepare("ucf101", data / "ucf101", data / "cache/ucf101-tvl1", flow="dis", short_side=None, progress=False)
    tiny = ["crop_size=48", "width=0.125", "batch_size=4", "max_iters=3", "lr_steps=[2]", "ckpt_every=3",
            "val_every=3", "val_frames=2", "log_every=1", "tensorboard=false", "channels_last=false", "workers=0"]
    ch = Chapter("x", data="ucf101", data_dir=data, runs_dir=tmp_path / "runs", device="cpu", overrides=tiny)
    cfg = ch.config("lab_temporal", "ucf101_temporal")
    assert cfg.out_dir == str(tmp_path / "runs/ucf101_temporal") and cfg.out_dir not in ch.reused
    words = shlex.split(ch.command(cfg))
    assert words[:5] == ["python", "-m", "twostream_lib", "train", "configs/ucf101_temporal.yaml"]
    monkeypatch.chdir(REPO)
    assert cli.main(words[3:] + ["--no-progress"]) == 0  # trained by the command line
    again = ch.config("lab_temporal", "ucf101_temporal")
    assert again.out_dir in ch.reused and finished_run(again) is not None  # ... and the chapter's
    with pytest.raises(ValueError, match="variant"):
        ch.config("lab_temporal", "ucf101_temporal", ["L=5"])  # other settings in the config's own folder
    variant = ch.config("lab_temporal", "ucf101_temporal", ["L=5"], variant="L5")
    assert variant.out_dir == str(tmp_path / "runs/ucf101_temporal_L5")
    train(variant, progress=False)  # trained by the chapter
    words = shlex.split(ch.command(variant))
    assert "L=5" in words and f"out_dir={tmp_path / 'runs/ucf101_temporal_L5'}" in words
    capsys.readouterr()
    assert cli.main(words[3:] + ["--resume", "--no-progress"]) == 0
    assert "finished" in capsys.readouterr().out.lower()
    # the paper's config as it is: the bare command, from the root (data, runs) or the book's folder (../data)
    plain = run_config("ucf101_temporal", data_dir="data", runs_dir="runs")
    assert command_line(plain, "ucf101_temporal") == "python -m twostream_lib train configs/ucf101_temporal.yaml"
    monkeypatch.chdir(REPO / "book")
    plain = run_config("ucf101_temporal", data_dir="../data", runs_dir="../runs")
    assert command_line(plain, "ucf101_temporal") == "python -m twostream_lib train configs/ucf101_temporal.yaml"


# ------------------------------------------------------------------------------------------- run folders
def test_a_new_run_never_touches_another_runs_folder(tmp_path):
    """A fresh run into a folder holding a run is refused before anything changes; resuming a folder with
    best.pt but no last.pt is refused too (it used to delete best.pt)."""
    r = train(synth_cfg(tmp_path, max_iters=10, val_every=10), progress=False, data=synth_data())
    run = Path(r["out_dir"])
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=r"already holds a run \(config\.yaml, log\.csv, last\.pt, best\.pt\); "
                                          r"nothing was changed.*--resume"):
        train(synth_cfg(tmp_path, max_iters=10, val_every=10, lr=0.5), progress=False, data=synth_data())
    (run / "last.pt").unlink()
    del before["last.pt"]
    with pytest.raises(ConfigError, match="best.pt but no last.pt"):
        train(synth_cfg(tmp_path, max_iters=10, val_every=10, resume=True), progress=False, data=synth_data())
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_one_process_per_run_folder(tmp_path):
    from twostream_lib.files import FolderLock, LockError

    cfg = synth_cfg(tmp_path, max_iters=10)
    with FolderLock(cfg.out_dir, "run folder"):  # as another training process would hold it
        with pytest.raises(LockError, match="run folder is in use by process"):
            train(cfg, progress=False, data=synth_data())


def test_nan_in_the_first_chunk_keeps_iteration_0(tmp_path):
    """A fresh run writes iteration 0 as last.pt, so even a NaN before the first chunk's end keeps a resumable
    (and untouched) last.pt, and says so."""
    cfg = synth_cfg(tmp_path, max_iters=30, ckpt_every=10, val_every=0)
    with pytest.raises(FloatingPointError, match=r"last good checkpoint is kept: .*last\.pt \(iteration 0\)"):
        train(cfg, progress=False, data=synth_data(Poisoned(nan_at=3 * 8), val=False))
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 0


@pytest.mark.parametrize("override, message", [
    ("batch_size=0", "batch_size must be >= 1"), ("lr=-1", "lr must be a finite number > 0"),
    ("lr=nan", "lr must be a finite number > 0"), ("lr_gamma=0", "lr_gamma must be a finite number > 0"),
    ("val_crops=3", "val_crops must be 1"), ("momentum=1.5", "momentum must be in"),
    ("crop_size=40", "too small for cnn_m_2048"), ("stacking=bogus", "stacking must be one of"),
])
def test_config_values_are_checked_at_load_time(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "configs/lab_temporal.yaml", [override])


def _cli(*args, cwd=REPO):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "twostream_lib", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.mark.slow
def _cli_in_process(capsys, *args) -> tuple[int, str, str]:
    """``python -m twostream_lib ARGS`` run in this process (no interpreter and torch start-up per call): the exit
    status, stdout and stderr. A bug's exception propagates, and so fails the calling test."""
    from twostream_lib import cli

    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as e:  # argparse errors and --help exit
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_user_errors_are_one_line_exit_2(tmp_path, capsys, monkeypatch):
    """Every user error of `train` and `evaluate` is one line naming the file or flag, exit status 2; a
    traceback is for bugs only. Two cases run as real processes (the exit status a shell sees); the others in
    this process, through the same `cli.main`."""
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("stream: [spatial\n")
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(b"PK\x03\x04 not really")
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    cases = [
        (["train", bad_yaml], "not valid YAML"),
        (["train", "configs/lab_spatial.yaml", "lr_rate=1"], "unknown key(s) 'lr_rate'"),
        (["train", "configs/lab_spatial.yaml", "batch_size=0"], "batch_size must be >= 1"),
        (["train", "configs/lab_spatial.yaml", "lr=-0.1"], "lr must be a finite number > 0"),
        (["train", "configs/lab_spatial.yaml", f"caches=[{tmp_path / 'nocache'}]", f"roots=[{tmp_path}]",
          f"out_dir={tmp_path / 'r1'}"], "split folder not found"),
        (["evaluate", truncated], "trunc.pt"),
        (["evaluate", tmp_path / "missing.pt"], "missing.pt: no such checkpoint file"),
        (["evaluate", truncated, "--frames", "0"], "--frames"),
        (["prepare", "--dataset", "ucf101", "--root", tmp_path, "--cache", a_file], "--root"),  # checked first
    ]
    monkeypatch.chdir(REPO)  # the cases name configs/... as a user in the repository would
    for k, (args, message) in enumerate(cases):
        if k in (0, 6):
            r = _cli(*args)
            code, err = r.returncode, r.stderr
        else:
            code, _, err = _cli_in_process(capsys, *args)
        assert code == 2, (args, code, err[-2000:])
        assert "Traceback" not in err and message in err, (args, err)
        assert len(err.strip().splitlines()) == 1, (args, err)
    for command, words in (("train", ("config keys", "lr_gamma")), ("evaluate", ("default:",))):
        code, out, _ = _cli_in_process(capsys, command, "--help")
        assert code == 0 and all(w in out for w in words), (command, out[-2000:])


MT_DDP_SCRIPT = textwrap.dedent("""
    import os, sys
    import torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[1])
    from test_train import mt_batch, mt_model
    from twostream_lib.train import train_step
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = mt_model()
    net = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[100])
    for it in range(3):
        x, y, t = mt_batch(it)
        half = slice(rank * 4, rank * 4 + 4)  # rank 1's samples are all of task 0
        train_step(net, (x[half], y[half], t[half]), opt, sched, torch.device("cpu"), world_size=world)
    if rank == 0:
        torch.save(model.state_dict(), sys.argv[2])
    dist.destroy_process_group()
""")


def mt_model():
    from twostream_lib.models import build_model

    torch.manual_seed(0)
    return build_model("cnn_m_2048", in_channels=3, num_classes=[3, 2], dropout=0.0, width=0.125, input_size=48)


def mt_batch(it):
    g = torch.Generator().manual_seed(it)
    x = torch.randn(8, 3, 48, 48, generator=g)
    t = torch.tensor([0, 1, 0, 1, 0, 0, 0, 0])
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    return x, y, t


@pytest.mark.slow
def test_ddp_multitask_with_a_rank_lacking_a_task_matches_one_process(tmp_path):
    """Multitask under DDP: a process whose local batch holds no sample of a task used to crash DDP (that head
    got no gradient) and averaged per-process task losses. Now 2 gloo processes = 1 process with the whole batch."""
    script = tmp_path / "mt_ddp.py"
    script.write_text(MT_DDP_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(Path(__file__).parent), str(tmp_path / "ddp.pt")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail("DDP run timed out:\n" + out[-2000:] + err[-2000:])
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    from twostream_lib.train import train_step

    model = mt_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[100])
    for it in range(3):
        train_step(model, mt_batch(it), opt, sched, torch.device("cpu"))
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(ddp[k], v, rtol=0, atol=1e-5, msg=k)


def test_chapter_profiles_set_the_runs(tmp_path):
    """book.Chapter: the cpu profile keeps the lab configs, the gpu profile scales schedules and the net, real
    data takes the paper's configs; OVERRIDES apply to every run."""
    from twostream_lib.book import Chapter

    real = Chapter("x", data="ucf101", data_dir=tmp_path / "d", runs_dir=tmp_path / "r", overrides=["max_iters=7"])
    cfg = real.config("lab_spatial", "ucf101_spatial_scratch")
    assert cfg.datasets == ["ucf101"] and cfg.crop_size == 224 and cfg.max_iters == 7
    assert cfg.out_dir == str(tmp_path / "r/ucf101_spatial_scratch")
    assert cfg.caches == [str(tmp_path / "d/cache/ucf101-tvl1")]
    gpu = Chapter.__new__(Chapter)  # the gpu profile's settings, without generating the lab's full scale here
    gpu.__dict__.update(real.__dict__, data="lab", profile="gpu", scale="full", device="cpu")
    g = gpu.config("lab_temporal", variant="t", schedule=0.5)
    base = load_config(REPO / "configs/lab_temporal.yaml")
    assert g.max_iters == 7 and g.crop_size == 224 and g.width == 1.0 and g.amp  # OVERRIDES win over the profile
    assert g.lr_steps == [2 * s for s in base.lr_steps]  # 4x (gpu) * 0.5 (this run)
    assert g.roots == [str(tmp_path / "d/lab/full/lab-ucf")] and g.out_dir == str(tmp_path / "r/full/lab_temporal_t")
    assert gpu.config("lab_temporal").out_dir == str(tmp_path / "r/full/lab_temporal")  # the profile's run as is
    with pytest.raises(ValueError, match="variant"):
        gpu.config("lab_temporal", schedule=0.5)
    with pytest.raises(ValueError, match="lab data only"):
        real.config("lab_spatial", None)


def test_chapter_device_rule(tmp_path, monkeypatch, capsys):
    """DEVICE 'auto' is CUDA when present, else the CPU, printed by the set-up; the profile never changes the
    device; the gpu profile with 'auto' on a machine without CUDA stops with a clear error, and runs on the CPU
    when asked to (the rehearsal)."""
    from twostream_lib.book import Chapter

    kw = dict(data="ucf101", data_dir=tmp_path / "d", runs_dir=tmp_path / "r")  # real data: nothing generated
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ch = Chapter("x", **kw)
    assert ch.device == "cpu" and "device cpu (DEVICE = 'auto')" in capsys.readouterr().out
    assert ch.config("lab_spatial", "ucf101_spatial_scratch").device == "cpu"
    with pytest.raises(ValueError, match="PROFILE = 'gpu' needs a GPU"):
        Chapter("x", profile="gpu", **kw)
    rehearsal = Chapter("x", profile="gpu", device="cpu", **kw)
    assert rehearsal.device == "cpu" and rehearsal.scale == "full"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert Chapter("x", **kw).device == "cuda" and Chapter("x", profile="gpu", **kw).device == "cuda"
    assert Chapter("x", device="cpu", **kw).device == "cpu"  # the profile (cpu) doesn't force it either


def test_chapter_plan_before_training(tmp_path, capsys):
    """The plan lists each run with its iterations, whether it is reused or resumed, and a measured expected time
    with the total; PLAN_ONLY stops there; the cpu profile's lab runs print nothing."""
    from twostream_lib.book import Chapter, PlanOnly

    real = Chapter("x", data="ucf101", data_dir=tmp_path / "d", runs_dir=tmp_path / "r", device="cpu",
                   overrides=["crop_size=64", "width=0.125", "batch_size=4", "max_iters=10"])
    new = real.config("lab_temporal", "ucf101_temporal")
    train(replace(synth_cfg(tmp_path), max_iters=10, val_every=10, out_dir=str(tmp_path / "done")), progress=False,
          data=synth_data())
    done = replace(synth_cfg(tmp_path), max_iters=10, val_every=10, out_dir=str(tmp_path / "done"), resume=True)
    more = replace(done, max_iters=25)
    capsys.readouterr()
    rows = real.plan([new, done, more])
    out = capsys.readouterr().out
    assert [r["state"] for r in rows] == ["new", "reused (finished)", "resumes at 10"]
    assert rows[0]["seconds"] > 0 and rows[1]["seconds"] == 0 and rows[2]["seconds"] > 0
    assert new.out_dir in out and "total ~" in out and "10 iterations" in out and real.command(new) in out
    with pytest.raises(PlanOnly, match="PLAN_ONLY"):
        real.plan([new], stop=True)
    lab = Chapter.__new__(Chapter)  # the cpu profile on the lab: no plan (minutes per run)
    lab.__dict__.update(real.__dict__, data="lab")
    assert lab.plan([new]) == [] and lab.plan([new], force=True)
    with pytest.raises(PlanOnly):  # PLAN_ONLY stops the cpu profile's lab chapters too, after printing
        lab.plan([new], stop=True)


def test_pretrained_spatial_config_for_lab_and_real_data(tmp_path, monkeypatch):
    """book.Chapter.pretrained_spatial_config: on the lab, lab_spatial started from the stills pre-training (its
    best.pt as init_from); on real data the ImageNet config; one folder per setting."""
    import twostream_lib.book as book

    real = book.Chapter("x", data="ucf101", data_dir=tmp_path / "d", runs_dir=tmp_path / "r")
    ft, last = real.pretrained_spatial_config("all"), real.pretrained_spatial_config("last")
    assert ft.pretrained and ft.finetune == "all" and last.finetune == "last" and not ft.init_from
    assert last.out_dir == str(tmp_path / "r/ucf101_spatial")  # the file's own choice (last layer): as it is
    assert ft.out_dir == str(tmp_path / "r/ucf101_spatial_ft")
    assert real.pretrained_spatial_config("all", variant="other").out_dir == str(tmp_path / "r/ucf101_spatial_other")
    with pytest.raises(ValueError, match="variant"):
        real.pretrained_spatial_config("all", overrides=["dropout=0.9"])
    with pytest.raises(ValueError, match="finetune"):
        real.pretrained_spatial_config("none")
    lab = book.Chapter.__new__(book.Chapter)  # the lab's settings, without generating the lab data here
    lab.__dict__.update(real.__dict__, data="lab")
    cfg = lab.pretrained_spatial_config("last")  # nothing trained: the pre-training's best.pt, to train first
    assert cfg.init_from == str(tmp_path / "r/small/lab_pretrain/best.pt") == str(
        Path(lab.pretrain_config().out_dir) / "best.pt") and cfg.finetune == "last"
    assert cfg.datasets == ["lab-ucf"] and cfg.out_dir == str(tmp_path / "r/small/lab_spatial_pretrained_last")


def test_a_run_fine_tuned_from_weights_that_changed_since_is_refused(tmp_path):
    """A finished run started from ``init_from``; that file now holds other weights (the run it names was trained
    again): reusing or resuming the fine-tuned run would mislabel it, so it is refused, naming the change."""
    kw = dict(max_iters=4, ckpt_every=2, val_every=0, lr_steps=[3])
    cfg_a = synth_cfg(tmp_path / "a", **kw)
    a = train(cfg_a, progress=False, data=synth_data(), model=_model(cfg_a))
    init = tmp_path / "init.pt"
    shutil.copy(a["best_checkpoint"], init)
    cfg_b = synth_cfg(tmp_path / "b", init_from=str(init), **kw)
    train(cfg_b, progress=False, data=synth_data(), model=_model(cfg_b))
    again = replace(cfg_b, resume=True)
    assert finished_run(again) is not None  # the same weights: reused
    cfg_c = synth_cfg(tmp_path / "c", seed=1, **kw)
    shutil.copy(train(cfg_c, progress=False, data=synth_data(), model=_model(cfg_c))["best_checkpoint"], init)
    assert finished_run(again) is None
    with pytest.raises(ConfigError, match="init_from's weights"):
        train(again, progress=False, data=synth_data(), model=_model(again))
