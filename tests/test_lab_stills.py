"""The lab's pre-training stills (:mod:`twostream_lib.lab.stills`, Table 1a's ImageNet analogue): deterministic
generation, balanced classes unrelated to the actions, and a pre-trained checkpoint that starts a lab spatial
net with ``init_from`` (fine-tuning and last layer only)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from twostream_lib.checkpoint import load_checkpoint
from twostream_lib.config import TrainConfig
from twostream_lib.data import IMAGENET_MEAN, IMAGENET_STD, RunData
from twostream_lib.lab import LAB_HMDB_CLASSES, LAB_UCF_CLASSES
from twostream_lib.lab.stills import STILLS_CLASSES, make_stills, pretrain, stills_run_data
from twostream_lib.models import head_parameters
from twostream_lib.train import new_run_state

CROP = 44  # >= CNN-M's minimum input; stills at the tiny lab scale are 48x64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def pretrain_cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(name="pre", datasets=["lab-stills"], roots=[str(tmp_path / "lab" / "tiny" / "lab-stills")],
                caches=["unused"], crop_size=CROP, width=0.125, batch_size=8, lr=0.01, lr_steps=[2], max_iters=3,
                ckpt_every=3, val_every=3, log_every=1, val_frames=1, val_crops=1, out_dir=str(tmp_path / "pre"),
                tensorboard=False, device="cpu", workers=0, resume=True)
    base.update(kw)
    return TrainConfig(**base).validate()


def test_stills_are_deterministic_balanced_and_in_range():
    a, la = make_stills(3, (48, 64), seed=1)
    b, lb = make_stills(3, (48, 64), seed=1)
    c, _ = make_stills(3, (48, 64), seed=2)
    k = len(STILLS_CLASSES)
    assert a.shape == (3 * k, 48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and np.array_equal(la, lb) and not np.array_equal(a, c)
    assert la.min() == 0 and la.max() == k - 1
    assert np.array_equal(np.bincount(la, minlength=k), np.full(k, 3))
    assert len({im.tobytes() for im in a}) == len(a)  # no two images alike


def test_stills_labels_are_not_action_classes():
    def norm(s):
        return re.sub(r"[^a-z]", "", s.lower())
    actions = {norm(c) for c in LAB_UCF_CLASSES + LAB_HMDB_CLASSES}
    assert len(set(STILLS_CLASSES)) == len(STILLS_CLASSES)
    assert not {norm(c) for c in STILLS_CLASSES} & actions


def test_run_data_gives_the_spatial_streams_tensors(tmp_path):
    cfg = pretrain_cfg(tmp_path)
    d = stills_run_data(cfg, n_per_class=4)
    assert d.classes == [list(STILLS_CLASSES)] and len(d.labels) == len(d.train)
    x, y = d.train[0]
    assert x.shape == (3, CROP, CROP) and x.dtype == torch.float32 and 0 <= y < len(STILLS_CLASSES)
    lo, hi = (0 - IMAGENET_MEAN) / IMAGENET_STD, (1 - IMAGENET_MEAN) / IMAGENET_STD  # ImageNet-normalised
    assert torch.all(x >= torch.from_numpy(lo)[:, None, None] - 1e-4)
    assert torch.all(x <= torch.from_numpy(hi)[:, None, None] + 1e-4)
    views, y, v = d.val[0][0]
    assert views.shape == (1, 3, CROP, CROP) and v == 0


def test_pretrained_checkpoint_starts_a_lab_spatial_net(tmp_path):
    pre = pretrain(pretrain_cfg(tmp_path), progress=False, n_per_class=2)
    ck = load_checkpoint(pre)
    assert ck["step"] == 3 and ck["classes"] == [list(STILLS_CLASSES)]
    mtime = (tmp_path / "pre" / "last.pt").stat().st_mtime_ns
    assert pretrain(pretrain_cfg(tmp_path), progress=False, n_per_class=2) == pre  # reused, not retrained
    assert (tmp_path / "pre" / "last.pt").stat().st_mtime_ns == mtime
    ucf = RunData(None, [], [], [sorted(LAB_UCF_CLASSES)])
    for mode in ("all", "last"):
        cfg = TrainConfig(name="ft", datasets=["lab-ucf"], roots=["unused"], caches=["unused"], crop_size=CROP,
                          width=0.125, init_from=pre, finetune=mode, device="cpu").validate()
        state = new_run_state(cfg, ucf, None, torch.device("cpu"), verbose=False)
        own = state.model.state_dict()
        heads = {id(p) for p in head_parameters(state.model)}
        head_names = {n for n, p in state.model.named_parameters() if id(p) in heads}
        for n, v in ck["model"].items():
            if n in head_names:
                assert own[n].shape != v.shape  # 16 action classes, 11 stills classes: a fresh head
            else:
                assert torch.equal(own[n], v), n
        trainable = {id(p) for g in state.optimizer.param_groups for p in g["params"]}
        assert (trainable == heads) == (mode == "last")
        assert trainable >= heads
