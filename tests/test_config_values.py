"""Every bad config value gets one clear line (issue 22, §3).

The cases are generated from :class:`TrainConfig`'s fields: every key is tried with NaN, ±inf, zero, a negative, a
huge and a wrong-type value (and, for list keys, a list holding NaN), both as a ``key=value`` override and in a YAML
file. Each must either be accepted with a documented meaning (the :data:`ACCEPTED` table below, the only place
such pairs are listed) or be refused by a :class:`ConfigError` whose message is one line naming the key. No other
exception type (TypeError, OverflowError, a YAML error, ...) may escape.
"""
from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from twostream_lib.config import ConfigError, TrainConfig, load_config, save_config
from twostream_lib.errors import UserError

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "configs" / "lab_temporal.yaml"  # temporal, cnn_m_2048, one dataset: a valid starting point

NAN = float("nan")
#: value kind: (the text of a ``key=value`` override, the value written into a YAML file)
KINDS: dict[str, tuple[str, typing.Any]] = {
    "nan": ("nan", NAN),
    "inf": ("inf", math.inf),
    "-inf": ("-inf", -math.inf),
    "zero": ("0", 0),
    "negative": ("-1", -1),
    "huge_float": ("1e9", 1e9),
    "huge_int": (str(10**12), 10**12),
    "string": ("abc", "abc"),
    "list": ("[1, 2]", [1, 2]),
    "dict": ("{a: 1}", {"a": 1}),
    "empty": ("", None),  # `key=` / `key:` with no value
}
#: extra kinds for list-typed keys (a scalar for a list key is covered by the kinds above)
LIST_KINDS: dict[str, tuple[str, typing.Any]] = {"list_nan": ("[nan]", [NAN])}
SCALARS = ("nan", "inf", "-inf", "zero", "negative", "huge_float", "huge_int", "string")
HUGE = ("huge_float", "huge_int")

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
TYPES = typing.get_type_hints(TrainConfig)
BOOL_KEYS = [k for k, t in TYPES.items() if t is bool]
LIST_KEYS = [k for k, t in TYPES.items() if typing.get_origin(t) is list]

#: (key, value kind) pairs that are legitimately accepted, and what they mean; everything else must be refused.
ACCEPTED: dict[tuple[str, str], str] = {
    # free text: any single value is read as text (YAML numbers included)
    **{("name", k): "a run name is any text" for k in SCALARS},
    **{("out_dir", k): "a folder path is any text" for k in SCALARS},
    **{("init_from", k): "a checkpoint path is any text (the file is checked when training starts)" for k in SCALARS},
    ("init_from", "empty"): "no checkpoint: train from scratch (the default)",
    **{(key, k): "a path is any text; one entry = one per dataset" for key in ("roots", "caches")
       for k in (*SCALARS, "list_nan")},
    # switches: 0 = false
    **{(key, "zero"): "0 = false" for key in BOOL_KEYS},
    ("conv2_norm", "zero"): "0 = false: no LRN after conv2",
    ("conv2_norm", "empty"): "null = the paper's choice (LRN in the spatial net only, §5)",
    ("exclude_classes", "empty"): "no classes left out",
    # optimisation
    ("lr_steps", "empty"): "no drop: a constant lr",
    ("lr_steps", "list"): "[1, 2]: the lr drops at iterations 1 and 2",
    **{("lr_steps", k): "one step past max_iters: never reached, no drop" for k in HUGE},
    **{("max_iters", k): "a long run (stop it by hand, resume it later)" for k in HUGE},
    ("momentum", "zero"): "plain SGD",
    ("weight_decay", "zero"): "no weight decay",
    ("dropout", "zero"): "no dropout",
    ("jitter", "zero"): "no RGB jitter",
    # bookkeeping
    ("val_fraction", "zero"): "no held-out videos: no validation, the final net is kept as best.pt",
    ("val_every", "zero"): "validate only at the end",
    **{("val_every", k): "past max_iters: validate only at the end, as 0" for k in HUGE},
    **{("log_every", k): "past max_iters: log only at validations and at the end" for k in HUGE},
    ("cache_memory_mb", "zero"): "no memory cache: decode every read",
    **{("cache_memory_mb", k): "more than the cache holds: no limit" for k in HUGE},
    ("workers", "zero"): "samples built in the training process",
    ("seed", "zero"): "a seed: any integer in [0, 2**63)",
    **{("seed", k): "a seed: any integer in [0, 2**63)" for k in HUGE},
}


def _cases() -> list[tuple[str, str]]:
    return [(key, kind) for key in FIELDS
            for kind in (*KINDS, *(LIST_KINDS if key in LIST_KEYS else ()))]


CASES = _cases()


def _value(kind: str) -> tuple[str, typing.Any]:
    return {**KINDS, **LIST_KINDS}[kind]


def _check_refusal(e: ConfigError, key: str) -> None:
    msg = str(e)
    assert isinstance(e, UserError)
    assert "\n" not in msg and msg.strip(), f"message not one line: {msg!r}"
    assert key in msg, f"message doesn't name {key!r}: {msg!r}"


def _check_accepted(cfg: TrainConfig, key: str, tmp_path: Path) -> None:
    """An accepted value has its field's type and survives save_config -> load_config."""
    v = getattr(cfg, key)
    tp = TYPES[key]
    if tp is float:
        assert isinstance(v, float) and math.isfinite(v)
    elif tp is int:
        assert isinstance(v, int) and not isinstance(v, bool)
    elif typing.get_origin(tp) is list:
        assert isinstance(v, list)
    saved = tmp_path / "saved.yaml"
    save_config(cfg, saved)
    assert load_config(saved) == cfg


def _run(load, key: str, kind: str, tmp_path: Path) -> None:
    if (key, kind) in ACCEPTED:
        _check_accepted(load(), key, tmp_path)
    else:
        with pytest.raises(ConfigError) as info:
            cfg = load()
            pytest.fail(f"{key} {kind}: accepted as {getattr(cfg, key)!r}; refuse it or add it to ACCEPTED")
        _check_refusal(info.value, key)


@pytest.mark.parametrize("key, kind", CASES, ids=[f"{k}-{v}" for k, v in CASES])
def test_override_value(key, kind, tmp_path):
    text, _ = _value(kind)
    _run(lambda: load_config(BASE, [f"{key}={text}"]), key, kind, tmp_path)


@pytest.mark.parametrize("key, kind", CASES, ids=[f"{k}-{v}" for k, v in CASES])
def test_yaml_value(key, kind, tmp_path):
    _, value = _value(kind)
    d = yaml.safe_load(BASE.read_text())
    d[key] = value
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    _run(lambda: load_config(path), key, kind, tmp_path)


def test_accepted_table_names_real_cases():
    """No stale entries: every ACCEPTED pair is a generated case."""
    assert set(ACCEPTED) <= set(CASES), sorted(set(ACCEPTED) - set(CASES))
    print(f"\n{len(CASES)} (key, kind) pairs x 2 (override, YAML) = {2 * len(CASES)} generated cases; "
          f"{len(ACCEPTED)} pairs accepted")


@pytest.mark.parametrize("override, names", [
    ("lr_steps=[1,", "lr_steps"), ("=3", "'=3'"), ("lr", "'lr'"), ("lr==1", "lr"),
    ("datasets=[lab-ucf", "datasets"), ("roots={", "roots"), ("roots={a: 1}", "roots"), ("lr_steps={", "lr_steps"),
    ("lr_steps=[1, [2]]", "lr_steps"), ("name=[run", "name"), ("out_dir={x}", "out_dir"), (" = 1", "' = 1'"),
    ("nope=1", "'nope'"), ("datasets=[lab-ucf, lab-ucf]", "datasets"), ("datasets=[lab-ucf, '']", "datasets"),
    ("device=cuda:x", "device"), ("lr_steps=[5, 5]", "lr_steps"), ("lr_steps=[9, 3]", "lr_steps"),
    ("L=51", "L"), ("pretrained=true", "pretrained"), ("ckpt_every=1000000", "ckpt_every"),
    ("crop_size=40", "crop_size"), ("lr=" + "9" * 400, "lr"), ("max_iters=1e400", "max_iters"),
    ("seed=" + str(2**63), "seed"), ("batch_size=1.5", "batch_size"), ("flip=2", "flip"), ("lr=true", "lr"),
])
def test_malformed_overrides_give_one_line(override, names):
    with pytest.raises(ConfigError) as info:
        load_config(BASE, [override])
    _check_refusal(info.value, names)


@pytest.mark.parametrize("text", [
    "lr: [1,\n", "- a\n- b\n", "1: 2\nfoo: 3\n", "lr: 0.1\n  bad indent: 1\n", "stream: !!python/name:os.system\n",
])
def test_malformed_yaml_gives_one_line(text, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    _check_refusal(info.value, "bad.yaml")


def test_non_utf8_file_gives_one_line(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"lr: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    _check_refusal(info.value, "bin.yaml")


@pytest.mark.parametrize("key", list(FIELDS))
def test_validate_of_a_built_config_raises_only_config_errors(key):
    """TrainConfig(...) built in code skips the coercion: validate() still refuses wrong types in one line."""
    for value in (None, "abc", [1], {"a": 1}, NAN, 10**30, True):
        try:
            TrainConfig(**{key: value}).validate()
        except ConfigError as e:
            _check_refusal(e, key)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_round_trip(path, tmp_path):
    cfg = load_config(path)
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_every_key_is_documented():
    """Each key (and so its range) appears in TrainConfig's docstring."""
    import re
    doc = TrainConfig.__doc__
    assert [k for k in FIELDS if not re.search(rf"\b{k}\b", doc)] == []


def test_cli_bad_value_exits_2_with_one_line():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-m", "twostream_lib", "train", "configs/lab_temporal.yaml", "jitter=-1"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "jitter" in lines[0] and "Traceback" not in r.stderr, r.stderr
