"""The lab's pre-training stills (:mod:`twostream_lib.lab.stills`, Table 1a's ImageNet analogue) and the
pre-training on them (:mod:`twostream_lib.pretrain`): deterministic generation, balanced classes unrelated to the
actions, a pre-trained checkpoint that starts a lab spatial net with ``init_from`` (fine-tuning and last layer
only), one clear line for a config that is not spatial, and the structure (the stills are data below the trainer;
no module reaches into another's private names)."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import twostream_lib
from twostream_lib import cli
from twostream_lib.checkpoint import load_checkpoint
from twostream_lib.config import CONFIG_DIR, ConfigError, TrainConfig
from twostream_lib.data import IMAGENET_MEAN, IMAGENET_STD, RunData
from twostream_lib.errors import run_cli
from twostream_lib.lab import LAB_HMDB_CLASSES, LAB_UCF_CLASSES
from twostream_lib.lab.stills import STILLS_CLASSES, make_stills, stills_run_data
from twostream_lib.models import head_parameters
from twostream_lib.pretrain import main as pretrain_main, pretrain
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


def test_pretrain_refuses_a_temporal_config_in_one_line(tmp_path, capsys):
    """Stills are single images: ``pretrain configs/lab_temporal.yaml`` is a user error naming the file (exit
    status 2, one line), not a traceback or a run of nonsense; so is the library call and the stills' run data."""
    temporal = str(CONFIG_DIR / "lab_temporal.yaml")
    for run in (lambda: run_cli(pretrain_main, [temporal, f"out_dir={tmp_path / 'x'}", "--no-progress"]),
                lambda: cli.main(["pretrain", temporal, f"out_dir={tmp_path / 'x'}"])):
        assert run() == 2
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and temporal in lines[0] and "stream: spatial" in lines[0], err
        assert "Traceback" not in err and not out
    assert not (tmp_path / "x").exists()  # nothing trained, nothing written
    assert run_cli(pretrain_main, [str(CONFIG_DIR / "lab_spatial.yaml"), f"out_dir={tmp_path / 'y'}"]) == 2
    assert "datasets: [lab-stills]" in capsys.readouterr().err and not (tmp_path / "y").exists()
    cfg = pretrain_cfg(tmp_path, stream="temporal")
    with pytest.raises(ConfigError, match="stream: spatial"):
        pretrain(cfg, progress=False, n_per_class=2)
    with pytest.raises(ConfigError, match="stream: spatial"):
        stills_run_data(cfg, n_per_class=2)
    assert not (tmp_path / "pre").exists()


def test_stills_do_not_import_the_trainer():
    """The stills are data: importing them (in a fresh interpreter) does not load the trainer, which sits above
    them (pre-training, :mod:`twostream_lib.pretrain`, imports both)."""
    code = ("import sys, twostream_lib.lab.stills; "
            "print(sorted(m for m in sys.modules if m.startswith('twostream_lib.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(twostream_lib.__file__).parent.parent).stdout
    loaded = set(ast.literal_eval(out.strip().splitlines()[-1]))
    assert "twostream_lib.lab.stills" in loaded
    assert not loaded & {"twostream_lib.train", "twostream_lib.pretrain", "twostream_lib.book"}, loaded


def _private_imports(package: Path) -> list[str]:
    """``file:line: module.name`` for each private name (``_x``, not ``__x__``) of a package module used by
    another module: ``from .mod import _x`` (any level, or absolute), or ``mod._x`` after ``from . import mod`` /
    ``import twostream_lib.mod as mod``."""
    top = package.name
    modules = {}
    for f in sorted(package.rglob("*.py")):
        parts = list(f.relative_to(package.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    found = []
    for name, f in modules.items():
        tree = ast.parse(f.read_text(encoding="utf-8"), str(f))
        here = f.relative_to(package.parent).with_suffix("").parts[:-1]   # the package holding this file
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = list(here[:len(here) - node.level + 1])
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] != top:
                    continue
                for a in node.names:
                    if f"{target}.{a.name}" in modules:
                        aliases[a.asname or a.name] = f"{target}.{a.name}"
                    elif a.name.startswith("_") and not a.name.startswith("__") and target != name:
                        found.append(f"{f}:{node.lineno}: from {target} import {a.name}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == top and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")
                    and aliases[node.value.id] != name):
                found.append(f"{f}:{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    return found


def test_no_module_imports_another_modules_private_names(tmp_path):
    """Private names stay in their module: the stills draw with :mod:`twostream_lib.lab.render`'s public API
    (``STYLE``, ``Part``, ``Scene``, ``background``, ``tileable_noise``, ``render_scene``), and no module of the
    library imports another's ``_name``."""
    assert _private_imports(Path(twostream_lib.__file__).parent) == []
    # the check itself: it sees both forms, relative and through a module alias, and lets a module's own names be
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("_x = 1\ny = _x\n")
    (pkg / "sub" / "b.py").write_text("from .a import _x, y\nfrom . import a as mod\nz = mod._x + mod.y\n")
    (pkg / "c.py").write_text("from .sub.a import _x\nfrom pkg.sub import a\nw = a._x\n")
    assert [r.split(": ", 1)[1] for r in _private_imports(pkg)] == [
        "from pkg.sub.a import _x", "pkg.sub.a._x", "from pkg.sub.a import _x", "pkg.sub.a._x"]
