"""One training run = one :class:`TrainConfig` = one YAML file (paper §4-§6 settings).

A YAML config maps key for key onto the dataclass; ``key=value`` overrides (from the command line or a
notebook) are parsed with the same rules, coerced to the field's type::

    cfg = load_config("configs/lab_spatial.yaml", ["lr=0.05", "max_iters=200", "datasets=[lab-ucf]"])

Unknown keys are errors that name the key and the file. Paths are plain strings, relative to the current
directory unless absolute: no machine path is baked in.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError
from .flow import STACK_MODES
from .models import CNN_M_MIN_INPUT
from .protocol import CROP_CHOICES

__all__ = ["TrainConfig", "ConfigError", "load_config", "run_config", "dataset_paths", "CONFIG_DIR", "LAB_FLOW",
           "REAL_FLOW", "apply_overrides", "config_from_dict", "save_config"]


class ConfigError(UserError, ValueError):
    """A config file or override is invalid; the message names the key and the file."""


@dataclass
class TrainConfig:
    """Every setting of a training run. Defaults are the paper's (§5 "Training"); the lab configs shrink them.

    Data (one entry per dataset; two or more entries = multitask learning, §4):

    - datasets: dataset names, ``"ucf101" | "hmdb51" | "lab-ucf" | "lab-hmdb"`` (see :mod:`splits`).
    - roots: dataset roots (official layouts), one per dataset.
    - caches: frame/flow caches written by ``python -m twostream_lib prepare``, one per dataset.
    - split: 1, 2 or 3.
    - val_fraction: share of each class's *training* videos held out for validation / model selection
      (the test split is never looked at during training).
    - heads: with several datasets, ``"per_dataset"`` — one softmax head per dataset, each loss on its own
      dataset's samples, losses summed (multitask, §4) — or ``"shared"`` — one softmax over the union of
      the datasets' classes (Table 2's "HMDB-51 + the UCF-101 classes that don't overlap"); validation and
      evaluation then score the first dataset (the target) over its own classes.
    - exclude_classes: class names of the *other* datasets (not the first) left out of training, e.g. the
      classes they share with the target.

    Input:

    - stream: ``"spatial"`` (one RGB frame, §2) or ``"temporal"`` (2L flow channels, §3).
    - crop_size: square crop side (paper: 224 from frames whose short side is 256).
    - L, stacking, bidirectional, mean_subtraction: temporal input (§3.1, Table 1b).
    - flip, jitter: training augmentation (§5: random crop + horizontal flip + RGB jitter for the spatial net;
      ``jitter`` is the brightness/contrast/saturation strength, 0 = off — the paper gives no value).

    Network:

    - arch: ``"cnn_m_2048"`` (paper), ``"resnet18"`` or ``"resnet50"``; width: channel multiplier (lab < 1).
    - dropout: 0.9 temporal / 0.5 spatial (Table 1). conv2_norm: LRN after conv2; ``None`` = the paper's
      choice (spatial yes, temporal no, §5).
    - pretrained: ImageNet weights (ResNets only). init_from: a checkpoint whose weights start this run
      (layers whose shape differs, e.g. the classifier, stay freshly initialised) — e.g. Table 2's
      "fine-tuning a net trained on UCF-101".
    - finetune: ``"all"`` or ``"last"`` (train only the classifier head(s), Table 1a).

    Optimisation (§5): SGD with ``momentum``, ``batch_size`` videos per iteration (global, over all
    processes), ``lr`` multiplied by ``lr_gamma`` at each iteration in ``lr_steps``, stop at ``max_iters``.
    ``weight_decay`` is not stated in the paper; 5e-4 (Caffe's ImageNet value used by CNN-M) is our default.

    Bookkeeping:

    - val_every: iterations between validations (0 = only at the end); val_frames/val_crops: views per
      held-out video during validation (test uses 25 x 10, §6; validation may use fewer for speed).
    - ckpt_every: iterations between checkpoints; also the length of a data "chunk": the sampler, the
      DataLoader and the RNGs are re-seeded from (seed, chunk) at each chunk start, which makes a resumed
      run continue exactly where the interrupted one stood.
    - amp: bfloat16 autocast (GPU; also allowed on CPU). channels_last, compile: speed options.
    - loader: ``"cpu"`` — samples built by the datasets in DataLoader worker processes (``workers``) — or
      ``"device"`` — the cache's JPEG bytes read in bulk and decoded and augmented in batches on the training
      device (:mod:`twostream_lib.device_loader`; nvJPEG on CUDA). The same samples for the same random draws.
    - cache_memory_mb: MB of decoded frames / flow fields each dataset's cache keeps in memory, per process
      (:class:`twostream_lib.data.VideoCache` ``memory_mb``; 0 = decode every read). The same samples, fewer
      JPEG decodes; the lab configs hold their whole small cache.
    - device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    """

    name: str = "run"
    stream: str = "spatial"
    datasets: list[str] = field(default_factory=lambda: ["ucf101"])
    roots: list[str] = field(default_factory=lambda: ["data/ucf101"])
    caches: list[str] = field(default_factory=lambda: ["data/cache/ucf101-tvl1"])
    split: int = 1
    val_fraction: float = 0.1
    heads: str = "per_dataset"
    exclude_classes: list[str] = field(default_factory=list)

    crop_size: int = 224
    L: int = 10
    stacking: str = "stacking"
    bidirectional: bool = False
    mean_subtraction: bool = True
    flip: bool = True
    jitter: float = 0.2

    arch: str = "cnn_m_2048"
    width: float = 1.0
    dropout: float = 0.5
    conv2_norm: bool | None = None
    pretrained: bool = False
    init_from: str = ""
    finetune: str = "all"

    batch_size: int = 256
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_steps: list[int] = field(default_factory=lambda: [50_000, 70_000])
    lr_gamma: float = 0.1
    max_iters: int = 80_000

    val_every: int = 1000
    val_frames: int = 5
    val_crops: int = 1
    val_batch_videos: int = 4
    ckpt_every: int = 1000
    log_every: int = 20

    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    loader: str = "cpu"
    cache_memory_mb: int = 0
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    out_dir: str = "runs/run"
    tensorboard: bool = True
    resume: bool = False

    # ------------------------------------------------------------------ derived values
    @property
    def in_channels(self) -> int:
        """3 for the spatial stream; 2L flow channels (x1, y1, ..., xL, yL) for the temporal one (§3.1)."""
        return 3 if self.stream == "spatial" else 2 * self.L

    @property
    def num_tasks(self) -> int:
        """One task (softmax head) per dataset; more than one = multitask (§4). A shared head is one task."""
        return 1 if self.heads == "shared" else len(self.datasets)

    @property
    def use_conv2_norm(self) -> bool:
        """The paper drops conv2's LRN in the temporal net only (§5)."""
        return (self.stream == "spatial") if self.conv2_norm is None else bool(self.conv2_norm)

    def validate(self, source: str = "<config>") -> "TrainConfig":
        """Check values and cross-field consistency; raise :class:`ConfigError` naming ``source``."""
        def bad(msg: str) -> None:
            raise ConfigError(f"{source}: {msg}")

        if self.stream not in ("spatial", "temporal"):
            bad(f"stream must be 'spatial' or 'temporal', got {self.stream!r}")
        if not self.datasets:
            bad("datasets is empty")
        for key in ("roots", "caches"):
            if len(getattr(self, key)) != len(self.datasets):
                bad(f"{key} has {len(getattr(self, key))} entries but datasets has {len(self.datasets)} "
                    f"({self.datasets}); give one per dataset")
        if self.split not in (1, 2, 3):
            bad(f"split must be 1, 2 or 3, got {self.split}")
        if self.heads not in ("per_dataset", "shared"):
            bad(f"heads must be 'per_dataset' or 'shared', got {self.heads!r}")
        if self.exclude_classes and len(self.datasets) < 2:
            bad("exclude_classes applies to the extra datasets of a multi-dataset run; this run has one dataset")
        if self.stacking not in STACK_MODES:
            bad(f"stacking must be one of {', '.join(map(repr, STACK_MODES))}, got {self.stacking!r}")
        if self.arch not in ("cnn_m_2048", "resnet18", "resnet50"):
            bad(f"arch must be 'cnn_m_2048', 'resnet18' or 'resnet50', got {self.arch!r}")
        if self.arch != "cnn_m_2048" and self.width != 1.0:
            bad(f"width={self.width} applies to cnn_m_2048 only; set width=1.0 for {self.arch}")
        if self.arch == "cnn_m_2048" and self.crop_size < CNN_M_MIN_INPUT:
            bad(f"crop_size={self.crop_size} is too small for cnn_m_2048 (its conv and pool layers need >= "
                f"{CNN_M_MIN_INPUT})")
        if self.finetune not in ("all", "last"):
            bad(f"finetune must be 'all' or 'last', got {self.finetune!r}")
        if self.loader not in ("cpu", "device"):
            bad(f"loader must be 'cpu' or 'device', got {self.loader!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            bad(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for key in ("batch_size", "max_iters", "ckpt_every", "log_every", "crop_size", "L", "val_frames",
                    "val_batch_videos"):
            if getattr(self, key) < 1:
                bad(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.val_crops not in CROP_CHOICES:
            bad(f"val_crops must be 1 (centre), 5 (corners + centre) or 10 (and their flips), got {self.val_crops}")
        if self.val_every < 0 or self.workers < 0 or self.cache_memory_mb < 0:
            bad("val_every, workers and cache_memory_mb must be >= 0")
        if not 0.0 <= self.val_fraction < 1.0:
            bad(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not 0.0 <= self.dropout < 1.0:
            bad(f"dropout must be in [0, 1), got {self.dropout}")
        for key in ("lr", "lr_gamma"):
            if not (math.isfinite(getattr(self, key)) and getattr(self, key) > 0):
                bad(f"{key} must be a finite number > 0, got {getattr(self, key)}")
        if not (math.isfinite(self.momentum) and 0.0 <= self.momentum < 1.0):
            bad(f"momentum must be in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            bad(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if list(self.lr_steps) != sorted(self.lr_steps) or any(s < 1 for s in self.lr_steps):
            bad(f"lr_steps must be increasing iteration numbers >= 1, got {self.lr_steps}")
        if self.bidirectional and self.L % 2:
            bad(f"bidirectional input takes L/2 forward + L/2 backward fields: L must be even, got {self.L}")
        return self


# ---------------------------------------------------------------------------------------------- coercion
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Convert ``value`` (from YAML or a ``key=value`` string) to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # Optional[X] / X | None
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, source)
    if origin is list:
        (item_tp,) = args or (Any,)
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            value = [value]
        return [_coerce(v, item_tp, key, source) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        raise ConfigError(f"{source}: {key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(str(value).replace("_", ""))
        except ValueError:
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}") from None
        if f != int(f):
            raise ConfigError(f"{source}: {key} must be an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(str(value).replace("_", "")) if not isinstance(value, (int, float)) else float(value)
        except ValueError:
            raise ConfigError(f"{source}: {key} must be a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{source}: {key} must be a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def config_from_dict(d: dict[str, Any], source: str = "<dict>", base: TrainConfig | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a plain dict (e.g. a checkpoint's ``config``), on top of ``base``."""
    types_ = _field_types()
    unknown = sorted(set(d) - set(types_))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"valid keys: {', '.join(types_)}")
    values = asdict(base) if base is not None else {}
    for k, v in d.items():
        values[k] = _coerce(v, types_[k], k, source)
    return TrainConfig(**values)


def apply_overrides(cfg: TrainConfig, overrides: list[str] | None, source: str = "overrides") -> TrainConfig:
    """Apply ``["key=value", ...]`` to a copy of ``cfg``; values are parsed as YAML scalars/lists."""
    d: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} is not of the form key=value")
        k, v = item.split("=", 1)
        k = k.strip()
        if k == "dataset":  # convenience for the single-dataset case
            k = "datasets"
        if k in ("root", "cache"):
            k += "s"
        d[k] = v
    return config_from_dict(d, source, base=cfg)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (or start from the defaults when ``path`` is None), apply ``key=value``
    ``overrides``, check it. Unknown keys raise :class:`ConfigError` naming the key and the file."""
    source = str(path) if path is not None else "<defaults>"
    cfg = TrainConfig()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ConfigError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{p}: expected a mapping of key: value, got {type(d).__name__}")
        # singular spellings for one dataset
        for single, plural in (("dataset", "datasets"), ("root", "roots"), ("cache", "caches")):
            if single in d:
                if plural in d:
                    raise ConfigError(f"{p}: give either {single!r} or {plural!r}, not both")
                d[plural] = d.pop(single)
        cfg = config_from_dict(d, source)
    cfg = apply_overrides(cfg, overrides, source=f"{source} (overrides)")
    return cfg.validate(source)


#: the repository's configs/ folder (beside the package)
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
#: the flow method of the caches the book reads: DIS for the lab (fast on a CPU), TV-L1 for UCF-101/HMDB-51 (§3)
LAB_FLOW, REAL_FLOW = "dis", "tvl1"


def dataset_paths(dataset: str, data_dir: str | os.PathLike = "data", scale: str = "small",
                  flow: str | None = None) -> tuple[Path, Path]:
    """``(root, cache)`` of ``dataset`` in the book's data layout::

        lab:   <data_dir>/lab/<scale>/<dataset>     <data_dir>/cache/<scale>/<dataset>-<flow>   (flow: dis)
        real:  <data_dir>/<dataset>                 <data_dir>/cache/<dataset>-<flow>           (flow: tvl1)

    (``python -m twostream_lib lab`` and ``data_scripts/get_dataset.py --prepare`` write exactly these.)"""
    data_dir = Path(data_dir)
    if dataset.startswith("lab-"):
        return data_dir / "lab" / scale / dataset, data_dir / "cache" / scale / f"{dataset}-{flow or LAB_FLOW}"
    return data_dir / dataset, data_dir / "cache" / f"{dataset}-{flow or REAL_FLOW}"


def run_config(base: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), name: str | None = None,
               data_dir: str | os.PathLike = "data", scale: str = "small", runs_dir: str | os.PathLike = "runs",
               flow: str | None = None, resume: bool = True) -> TrainConfig:
    """Config ``base`` (``configs/<base>.yaml``, or a path) with ``overrides``, its datasets' roots and caches at
    :func:`dataset_paths`, and its ``out_dir`` at ``runs_dir/<scale>/<name>`` (lab data) or
    ``runs_dir/real/<name>`` (UCF-101 / HMDB-51): the one place that names a run's data and folder, for the lab
    and the real datasets alike.

    With ``resume`` (the default) a finished run with the same settings is reused as it is — chapters that share a
    run (e.g. the spatial net of chapter 3 in chapter 6) train it once — and a run of other settings in that
    folder is refused (:func:`twostream_lib.train.train`).
    """
    path = Path(base) if Path(base).suffix in (".yaml", ".yml") else CONFIG_DIR / f"{base}.yaml"
    # overrides first, unchecked: they may change the datasets (and so how many roots/caches there are)
    cfg = apply_overrides(load_config(path), list(overrides), source=f"{path} (overrides)")
    name = name or cfg.name
    paths = [dataset_paths(d, data_dir, scale, flow) for d in cfg.datasets]
    lab = all(d.startswith("lab-") for d in cfg.datasets)
    out_dir = Path(runs_dir) / (scale if lab else "real") / name
    return apply_overrides(cfg, [f"roots=[{','.join(str(r) for r, _ in paths)}]",
                                 f"caches=[{','.join(str(c) for _, c in paths)}]",
                                 f"out_dir={out_dir}", f"resume={str(resume).lower()}", f"name={name}"],
                           source=f"run_config({path.name})").validate(f"run_config({path.name})")


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML (the run directory keeps the exact config it ran with)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    os.replace(tmp, p)
