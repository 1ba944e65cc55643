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
import numbers
import os
import re
import shlex
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import MAX_WORKERS, UserError
from .flow import STACK_MODES
from .models import CNN_M_MIN_INPUT
from .protocol import CROP_CHOICES
from .splits import DATASETS

__all__ = ["TrainConfig", "ConfigError", "load_config", "run_config", "run_folder", "command_line", "same_place",
           "anchor_paths",
           "dataset_paths", "CONFIG_DIR", "LAB_FLOW", "REAL_FLOW", "PATH_KEYS", "apply_overrides", "config_from_dict",
           "save_config"]


class ConfigError(UserError, ValueError):
    """A config file or override is invalid; the message names the key and the file."""


#: dataset names a config may give: :data:`twostream_lib.splits.DATASETS` and the lab's pre-training stills
#: (:mod:`twostream_lib.lab.stills`, generated in memory)
DATASET_NAMES = (*DATASETS, "lab-stills")
#: the largest integer setting (int64: checkpoints and torch keep them as 64-bit integers)
MAX_INT = 2**63 - 1
#: upper bounds of the settings whose larger values only exhaust memory or processes (documented in TrainConfig)
MAX_CROP_SIZE, MAX_L, MAX_BATCH_SIZE, MAX_WIDTH, MAX_LR = 1024, 50, 65536, 4.0, 10.0
MAX_VAL_FRAMES, MAX_VAL_BATCH_VIDEOS = 100, 1024
#: ckpt_every x batch_size: one data chunk's sample indices are drawn at once (data.BalancedSampler)
MAX_CHUNK_SAMPLES = 10**7


@dataclass
class TrainConfig:
    """Every setting of a training run. Defaults are the paper's (§5 "Training"); the lab configs shrink them.

    Ranges are checked when a config is loaded (:meth:`validate`); a value out of range is a :class:`ConfigError`
    naming the key. Every integer setting is below 2**63; every float setting is finite.

    Data (one entry per dataset; two or more entries = multitask learning, §4):

    - name: the run's name (not empty).
    - datasets: dataset names, ``"ucf101" | "hmdb51" | "lab-ucf" | "lab-hmdb"`` (see :mod:`splits`; and
      ``"lab-stills"``, the lab's pre-training stills), each at most once.
    - roots: dataset roots (official layouts), one per dataset.
    - caches: frame/flow caches written by ``python -m twostream_lib prepare``, one per dataset.
    - split: 1, 2 or 3.
    - val_fraction: share of each class's *training* videos held out for validation / model selection, in
      [0, 1); 0 = no validation, the final net is kept as best.pt (the test split is never looked at during
      training).
    - heads: with several datasets, ``"per_dataset"`` — one softmax head per dataset, each loss on its own
      dataset's samples, losses summed (multitask, §4) — or ``"shared"`` — one softmax over the union of
      the datasets' classes (Table 2's "HMDB-51 + the UCF-101 classes that don't overlap"); validation and
      evaluation then score the first dataset (the target) over its own classes.
    - exclude_classes: class names of the *other* datasets (not the first) left out of training, e.g. the
      classes they share with the target.

    Input:

    - stream: ``"spatial"`` (one RGB frame, §2) or ``"temporal"`` (2L flow channels, §3).
    - crop_size: square crop side (paper: 224 from frames whose short side is 256); 1..1024, >= 41 for
      cnn_m_2048 (:data:`~twostream_lib.models.CNN_M_MIN_INPUT`), and it must fit in the cached frames.
    - L, stacking, bidirectional, mean_subtraction: temporal input (§3.1, Table 1b); L in 1..50 (the paper
      tries 1..10), even when bidirectional.
    - flip, jitter: training augmentation (§5: random crop + horizontal flip + RGB jitter for the spatial net;
      ``jitter`` is the brightness/contrast/saturation strength, in [0, 1) so that the factors 1 ± jitter stay
      positive, 0 = off — the paper gives no value).

    Network:

    - arch: ``"cnn_m_2048"`` (paper), ``"resnet18"`` or ``"resnet50"``; width: channel multiplier (lab < 1), in
      (0, 4], cnn_m_2048 only (1 for the ResNets).
    - dropout: 0.9 temporal / 0.5 spatial (Table 1), in [0, 1); 0 = none. conv2_norm: LRN after conv2;
      ``None`` = the paper's choice (spatial yes, temporal no, §5).
    - pretrained: ImageNet weights (ResNets only). init_from: a checkpoint whose weights start this run
      (layers whose shape differs, e.g. the classifier, stay freshly initialised) — e.g. Table 2's
      "fine-tuning a net trained on UCF-101"; empty = from scratch.
    - finetune: ``"all"`` or ``"last"`` (train only the classifier head(s), Table 1a).

    Optimisation (§5): SGD with ``momentum`` (in [0, 1); 0 = plain SGD), ``batch_size`` videos per iteration
    (global, over all processes; 1..65536), ``lr`` (in (0, 10]) multiplied by ``lr_gamma`` (in (0, 1]; 1 = no
    drop) at each iteration in ``lr_steps`` (strictly increasing, >= 1; empty = a constant lr; a step past
    ``max_iters`` is never reached), stop at ``max_iters`` (>= 1). ``weight_decay`` (in [0, 1]; 0 = none) is
    not stated in the paper; 5e-4 (Caffe's ImageNet value used by CNN-M) is our default.

    Bookkeeping:

    - val_every: iterations between validations (0, or more than max_iters = only at the end);
      val_frames/val_crops: views per held-out video during validation (test uses 25 x 10, §6; validation may
      use fewer for speed): val_frames in 1..100, val_crops 1, 5 or 10; val_batch_videos (1..1024): held-out
      videos per validation batch.
    - ckpt_every: iterations between checkpoints; also the length of a data "chunk": the sampler, the
      DataLoader and the RNGs are re-seeded from (seed, chunk) at each chunk start, which makes a resumed
      run continue exactly where the interrupted one stood. A chunk's sample indices are drawn at once:
      ckpt_every x batch_size <= 10**7.
    - log_every: iterations between log lines (>= 1; more than max_iters = only at validations and the end).
    - amp: bfloat16 autocast (GPU; also allowed on CPU). channels_last, compile: speed options.
    - loader: ``"cpu"`` — samples built by the datasets in DataLoader worker processes (``workers``) — or
      ``"device"`` — the cache's JPEG bytes read in bulk and decoded and augmented in batches on the training
      device (:mod:`twostream_lib.device_loader`; nvJPEG on CUDA). The same samples for the same random draws.
    - cache_memory_mb: MB of decoded frames / flow fields each dataset's cache keeps in memory, per process
      (:class:`twostream_lib.data.VideoCache` ``memory_mb``; 0 = decode every read; >= 0, more than the cache
      holds = no limit). The same samples, fewer JPEG decodes; the lab configs hold their whole small cache.
    - device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.
    - workers: DataLoader worker processes, 0..1024 (0 = samples built in the training process).
    - seed: any integer in [0, 2**63). out_dir: the run's folder (not empty). resume: continue ``out_dir``'s run.
      tensorboard: also write TensorBoard scalars (``out_dir/tb``).
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
        """Check values and cross-field consistency; raise :class:`ConfigError` naming ``source`` and the key.
        The ranges are those of the class docstring."""
        def bad(msg: str) -> None:
            raise ConfigError(f"{source}: {msg}")

        def integer(key: str, lo: int, hi: int = MAX_INT, extra: str = "") -> None:
            v = getattr(self, key)
            top = "< 2**63" if hi == MAX_INT else f"<= {hi}"
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or not lo <= v <= hi:
                bad(f"{key} must be >= {lo} and {top}{extra}, got {v!r}")

        def real(key: str, ok: typing.Callable[[float], bool], rng: str) -> None:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or not ok(v):
                bad(f"{key} must be {rng}, got {v!r}")

        def text(key: str, choices: tuple[str, ...] | None = None, empty: bool = True) -> None:
            v = getattr(self, key)
            if choices is not None and v not in choices:
                *first, last = map(repr, choices)
                bad(f"{key} must be {', '.join(first)} or {last}, got {v!r}")
            if not isinstance(v, (str, os.PathLike)):
                bad(f"{key} must be a string, got {v!r}")
            if not empty and not str(v).strip():
                bad(f"{key} must not be empty")

        # ---- each value on its own
        text("name", empty=False)
        text("out_dir", empty=False)
        text("init_from")
        text("stream", ("spatial", "temporal"))
        text("heads", ("per_dataset", "shared"))
        if self.stacking not in STACK_MODES:
            bad(f"stacking must be one of {', '.join(map(repr, STACK_MODES))}, got {self.stacking!r}")
        text("arch", ("cnn_m_2048", "resnet18", "resnet50"))
        text("finetune", ("all", "last"))
        text("loader", ("cpu", "device"))
        if not (isinstance(self.device, str) and (self.device in ("auto", "cpu", "cuda")
                                                   or re.fullmatch(r"cuda:[0-9]+", self.device))):
            bad(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {self.device!r}")
        for key in ("bidirectional", "mean_subtraction", "flip", "pretrained", "amp", "channels_last", "compile",
                    "tensorboard", "resume"):
            if not isinstance(getattr(self, key), bool):
                bad(f"{key} must be true or false, got {getattr(self, key)!r}")
        if self.conv2_norm is not None and not isinstance(self.conv2_norm, bool):
            bad(f"conv2_norm must be true, false or null (the paper's choice), got {self.conv2_norm!r}")
        for key in ("datasets", "roots", "caches", "exclude_classes", "lr_steps"):
            if not isinstance(getattr(self, key), (list, tuple)):
                bad(f"{key} must be a list, got {getattr(self, key)!r}")
        for key in ("datasets", "roots", "caches", "exclude_classes"):
            if not all(isinstance(v, (str, os.PathLike)) and str(v).strip() for v in getattr(self, key)):
                bad(f"{key} must be a list of non-empty strings, got {getattr(self, key)!r}")
        if not self.datasets:
            bad("datasets is empty")
        unknown = [d for d in self.datasets if d not in DATASET_NAMES]
        if unknown:
            bad(f"datasets: unknown dataset(s) {', '.join(map(repr, unknown))}; expected {', '.join(DATASET_NAMES)}")
        if len(set(self.datasets)) != len(self.datasets):
            bad(f"datasets lists a dataset more than once: {self.datasets}")
        if not isinstance(self.split, numbers.Integral) or isinstance(self.split, bool) or self.split not in (1, 2, 3):
            bad(f"split must be 1, 2 or 3, got {self.split!r}")
        integer("crop_size", 1, MAX_CROP_SIZE)
        integer("L", 1, MAX_L, " (the paper uses 1..10)")
        integer("batch_size", 1, MAX_BATCH_SIZE)
        for key in ("max_iters", "ckpt_every", "log_every"):
            integer(key, 1)
        integer("val_frames", 1, MAX_VAL_FRAMES, " (test uses 25)")
        integer("val_batch_videos", 1, MAX_VAL_BATCH_VIDEOS)
        if (not isinstance(self.val_crops, numbers.Integral) or isinstance(self.val_crops, bool)
                or self.val_crops not in CROP_CHOICES):
            bad(f"val_crops must be 1 (centre), 5 (corners + centre) or 10 (and their flips), got {self.val_crops!r}")
        integer("val_every", 0, extra=" (0 = only at the end)")
        integer("cache_memory_mb", 0, extra=" (0 = no memory cache)")
        integer("workers", 0, MAX_WORKERS)
        integer("seed", 0)
        real("val_fraction", lambda v: 0 <= v < 1, "in [0, 1)")
        real("jitter", lambda v: 0 <= v < 1, "in [0, 1) (0 = off; the factors 1 ± jitter must stay > 0)")
        real("width", lambda v: 0 < v <= MAX_WIDTH, f"a finite number > 0 and <= {MAX_WIDTH:g}")
        real("dropout", lambda v: 0 <= v < 1, "in [0, 1)")
        real("lr", lambda v: 0 < v <= MAX_LR, f"a finite number > 0 and <= {MAX_LR:g}")
        real("lr_gamma", lambda v: 0 < v <= 1, "a finite number > 0 and <= 1 (1 = no drop)")
        real("momentum", lambda v: 0 <= v < 1, "in [0, 1)")
        real("weight_decay", lambda v: 0 <= v <= 1, "a finite number >= 0 and <= 1")
        steps = list(self.lr_steps)
        if (not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and 1 <= s <= MAX_INT for s in steps)
                or any(a >= b for a, b in zip(steps, steps[1:]))):
            bad(f"lr_steps must be strictly increasing iteration numbers >= 1 and < 2**63, got {self.lr_steps!r}")

        # ---- across keys
        for key in ("roots", "caches"):
            if len(getattr(self, key)) != len(self.datasets):
                bad(f"{key} has {len(getattr(self, key))} entries but datasets has {len(self.datasets)} "
                    f"({self.datasets}); give one per dataset")
        if self.exclude_classes and len(self.datasets) < 2:
            bad("exclude_classes applies to the extra datasets of a multi-dataset run; this run has one dataset")
        if self.arch != "cnn_m_2048" and self.width != 1.0:
            bad(f"width={self.width} applies to cnn_m_2048 only; set width=1.0 for {self.arch}")
        if self.arch == "cnn_m_2048" and self.crop_size < CNN_M_MIN_INPUT:
            bad(f"crop_size={self.crop_size} is too small for cnn_m_2048 (its conv and pool layers need >= "
                f"{CNN_M_MIN_INPUT})")
        if self.arch == "cnn_m_2048" and self.pretrained:
            bad("pretrained=true: no ImageNet weights are bundled for cnn_m_2048 (ResNets only); start from a "
                "trained net with init_from=, or use arch=resnet18 / resnet50")
        if self.ckpt_every * self.batch_size > MAX_CHUNK_SAMPLES:
            bad(f"ckpt_every x batch_size = {self.ckpt_every} x {self.batch_size} must be <= 10**7 "
                f"(a data chunk's sample indices are drawn at once); lower ckpt_every")
        if self.bidirectional and self.L % 2:
            bad(f"bidirectional input takes L/2 forward + L/2 backward fields: L must be even, got {self.L}")
        return self


# ---------------------------------------------------------------------------------------------- coercion
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _yaml_problem(e: yaml.YAMLError) -> str:
    """The one-line gist of a YAML parse error (its ``problem``, without the multi-line context)."""
    return " ".join(str(getattr(e, "problem", None) or e).split())


def _coerce(value: Any, tp: Any, key: str, source: str, label: str | None = None) -> Any:
    """Convert ``value`` (from YAML or a ``key=value`` string) to the annotated type ``tp``; a value that isn't
    one is a :class:`ConfigError` naming ``key`` (ranges are checked by :meth:`TrainConfig.validate`)."""
    label = label or key

    def bad(what: str) -> ConfigError:
        return ConfigError(f"{source}: {label} must be {what}, got {value!r}")

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # Optional[X] / X | None
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "~", "")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key, source, label)
    if origin is list:
        (item_tp,) = args or (Any,)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith(("[", "{")):
                try:
                    value = yaml.safe_load(text)
                except yaml.YAMLError as e:
                    raise ConfigError(f"{source}: {key}: can't read {text!r} as a list [a, b, ...] "
                                      f"({_yaml_problem(e)})") from None
            else:
                value = [v.strip() for v in text.split(",") if v.strip()]
        if value is None:  # "key:" with no value in YAML: no entries
            value = []
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, dict):
            raise bad("a list [a, b, ...]")
        if not isinstance(value, list):
            value = [value]
        return [_coerce(v, item_tp, key, source, f"{key}: each entry") for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        s = str(value).strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        raise bad("true or false")
    if tp is int:
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            s = value.strip().replace("_", "")
            try:
                return int(s)
            except ValueError:
                pass
            try:
                value_f = float(s)
            except ValueError:
                raise bad("an integer") from None
        elif isinstance(value, float):
            value_f = value
        else:
            raise bad("an integer")
        if not (math.isfinite(value_f) and value_f.is_integer()):
            raise bad("an integer")
        return int(value_f)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad("a number")
        try:
            return float(value.strip().replace("_", "")) if isinstance(value, str) else float(value)
        except (ValueError, OverflowError):
            raise bad("a finite number") from None
    if tp is str:
        if isinstance(value, (dict, list, tuple, set)):
            raise bad("a string")
        return "" if value is None else str(value)
    return value


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def config_from_dict(d: dict[str, Any], source: str = "<dict>", base: TrainConfig | None = None) -> TrainConfig:
    """A :class:`TrainConfig` from a plain dict (e.g. a checkpoint's ``config``), on top of ``base``."""
    types_ = _field_types()
    unknown = sorted(set(d) - set(types_), key=str)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"valid keys: {', '.join(types_)}")
    values = asdict(base) if base is not None else {}
    for k, v in d.items():
        values[k] = _coerce(v, types_[k], k, source)
    return TrainConfig(**values)


def apply_overrides(cfg: TrainConfig, overrides: list[str] | None, source: str = "overrides") -> TrainConfig:
    """Apply ``["key=value", ...]`` to a copy of ``cfg``; values are parsed as YAML scalars/lists."""
    types_ = _field_types()
    d: dict[str, Any] = {}
    for item in overrides or []:
        if not isinstance(item, str) or "=" not in item:
            raise ConfigError(f"{source}: override {item!r} is not of the form key=value")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k:
            raise ConfigError(f"{source}: override {item!r} has no key before '='; expected key=value")
        if k == "dataset":  # convenience for the single-dataset case
            k = "datasets"
        if k in ("root", "cache"):
            k += "s"
        if types_.get(k) is str and v.strip().startswith(("[", "{")):  # as a YAML file would read it
            raise ConfigError(f"{source}: {k} must be a single value, not a list or mapping, got {v!r}")
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
            raise ConfigError(f"{p} is a folder, not a config file; give a YAML file" if p.is_dir()
                              else f"config file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise ConfigError(f"{p}: not valid YAML{where}: {_yaml_problem(e)}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: can't read the config ({e})") from None
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


#: settings that name files or folders: compared as places (a relative and an absolute path to one place agree)
PATH_KEYS = ("roots", "caches", "init_from")


def same_place(a, b, a_from: str | os.PathLike | None = None) -> bool:
    """Two paths (or lists of paths) naming the same place, however spelt (relative, absolute, ``./``, ``..``); a
    relative ``a`` starts from ``a_from`` (default: the current directory), a relative ``b`` from here."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_place(x, y, a_from) for x, y in zip(a, b))
    if not (isinstance(a, str) and isinstance(b, str)) or not (a and b):
        return a == b
    return os.path.realpath(os.path.join(a_from or ".", a)) == os.path.realpath(b)


def anchor_paths(settings: dict[str, Any], start: str | os.PathLike | None) -> dict[str, Any]:
    """``settings`` (a config as a dict, e.g. a checkpoint's) with its relative paths (:data:`PATH_KEYS`) made
    absolute from ``start``, the directory they were given in (``None``: left as they are)."""
    if not start:
        return dict(settings)

    def anchor(v):
        if isinstance(v, (list, tuple)):
            return [anchor(x) for x in v]
        return os.path.normpath(os.path.join(start, v)) if isinstance(v, str) and v else v

    return {k: anchor(v) if k in PATH_KEYS else v for k, v in settings.items()}


def run_folder(config_name: str, variant: str | None = None, *, scale: str | None = None, split: int = 1,
               seed: int = 0, runs_dir: str | os.PathLike = "runs") -> Path:
    """The one naming rule of run folders, for the command line and the chapters alike::

        <runs_dir>/[<lab scale>/]<config name>[_<variant>][_split<k>][_seed<s>]

    A config trained as its YAML file gives it is ``runs/<config name>`` (the lab's under their scale,
    ``runs/small/lab_temporal``): the ``out_dir`` its file names, so ``python -m twostream_lib train
    configs/ucf101_temporal.yaml`` and chapter 4 on UCF-101 train and reuse one folder. A variant with other
    settings has a name (``runs/small/lab_temporal_L5``: the command line gives it as ``out_dir=``), and a split
    other than 1 or a seed other than 0 is part of the name."""
    name = config_name + (f"_{variant}" if variant else "") + (f"_split{split}" if split != 1 else "") + \
        (f"_seed{seed}" if seed != 0 else "")
    return Path(runs_dir) / scale / name if scale else Path(runs_dir) / name


def run_config(base: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (), variant: str | None = None,
               data_dir: str | os.PathLike = "data", scale: str = "small", runs_dir: str | os.PathLike = "runs",
               flow: str | None = None, resume: bool = True) -> TrainConfig:
    """Config ``base`` (``configs/<base>.yaml``, or a path) with ``overrides``, its datasets' roots and caches at
    :func:`dataset_paths` (unless ``overrides`` name them: ``caches=[...]``, a cache of other settings), and its
    ``out_dir`` at :func:`run_folder` (``variant`` names a run whose settings differ from the file's): the one place
    that names a run's data and folder, for the lab and the real datasets alike.

    With ``resume`` (the default) a finished run with the same settings is reused as it is — chapters that share a
    run (e.g. the spatial net of chapter 3 in chapter 6) train it once, and so is a run the command line trained
    in that folder — and a run of other settings in that folder is refused (:func:`twostream_lib.train.train`).
    """
    path = Path(base) if Path(base).suffix in (".yaml", ".yml") else CONFIG_DIR / f"{base}.yaml"
    # overrides first, unchecked: they may change the datasets (and so how many roots/caches there are)
    cfg = apply_overrides(load_config(path), list(overrides), source=f"{path} (overrides)")
    paths = [dataset_paths(d, data_dir, scale, flow) for d in cfg.datasets]
    lab = all(d.startswith("lab-") for d in cfg.datasets)
    name = path.stem
    out_dir = run_folder(name, variant, scale=scale if lab else None, split=cfg.split, seed=cfg.seed,
                         runs_dir=runs_dir)
    given = {o.split("=", 1)[0].strip() for o in overrides}  # roots/caches named in overrides are kept
    found = {"roots": [r for r, _ in paths], "caches": [c for _, c in paths]}
    data = [f"{k}=[{','.join(map(str, v))}]" for k, v in found.items() if k not in given]
    return apply_overrides(cfg, [*data, f"out_dir={out_dir}", f"resume={str(resume).lower()}", f"name={out_dir.name}"],
                           source=f"run_config({path.name})").validate(f"run_config({path.name})")


def _override_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_text(v) for v in value) + "]"
    return str(value)


def _for_command(value: Any, start: Path, here: str | os.PathLike = ".") -> Any:
    """Paths (relative to ``here``) as a command line run from ``start`` names them (relative inside it,
    absolute outside)."""
    if isinstance(value, (list, tuple)):
        return [_for_command(v, start, here) for v in value]
    if not value:
        return value
    full = Path(os.path.realpath(os.path.join(here, value)))
    return os.path.relpath(full, start) if full.is_relative_to(start) else str(full)


def command_line(cfg: TrainConfig, base: str | os.PathLike) -> str:
    """The command that trains ``cfg`` from the project's root: ``python -m twostream_lib train
    configs/<base>.yaml`` and the ``key=value`` overrides in which ``cfg`` differs from that file (paths compared
    as places, so the chapters' ``../data`` is the command line's ``data``). Running it (with ``--resume``) finds
    the chapter's run, and the other way round."""
    path = Path(base) if Path(base).suffix in (".yaml", ".yml") else CONFIG_DIR / f"{base}.yaml"
    start = Path(os.path.realpath(CONFIG_DIR.parent))
    ref = load_config(path)
    words = ["python", "-m", "twostream_lib", "train", os.path.relpath(os.path.realpath(path), start)]
    for f in fields(TrainConfig):
        k, v, r = f.name, getattr(cfg, f.name), getattr(ref, f.name)
        paths = k in (*PATH_KEYS, "out_dir")
        if paths:  # the file's paths are the project root's, cfg's the current directory's
            v, r = _for_command(v, start), _for_command(r, start, start)
        if k in ("resume", "name") or v == r:
            continue
        if not (k == "device" and r == "auto"):
            words.append(f"{k}={_override_text(v)}")
    return " ".join(shlex.quote(w) for w in words)


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``cfg`` as YAML (the run directory keeps the exact config it ran with)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    os.replace(tmp, p)
