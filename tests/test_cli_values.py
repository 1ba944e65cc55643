"""Every bad value of every command-line option gets one clear line (exit status 2), never a traceback.

The cases are generated from each command's own argparse parser (``python -m twostream_lib <command>``, and
``data_scripts/get_dataset.py``): every option that takes a value gets the bad values of its kind —

* integers: -1, 0, nan, inf, 1e12, abc, and 10**12 written out (an integer option can't refuse it by parsing alone);
* numbers: -1, 0, nan, inf, 1e12, abc;
* choices: a value outside them;
* devices: a name that is no device, a GPU this machine doesn't have;
* ``key=value`` items: no ``=``, an unknown key;
* paths, by what the option expects (an input file or folder, a file or folder to write): a missing path, a folder
  where a file is expected, a file where a folder is expected, a path under a file, a place nothing can be
  written (``/proc/x``: permission bits don't stop root, /proc refuses everyone).

Each case runs the command's ``main(argv)`` as the command line does (:func:`twostream_lib.errors.run_cli`), the
other arguments valid (tiny lab data, a tiny checkpoint and score files), and must exit with status 2, printing one
line on stderr that names the option — or, where the value means something (:data:`ACCEPTED`, with why), pass the
checks. A command's heavy work is replaced by :class:`Reached` (raised where the work would start), so a case
never trains, prepares, renders or downloads: the checks must come first.

An option without a kind (a new string option) fails :func:`test_every_option_has_a_kind`: say what it is in
:data:`STRING_KINDS`.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from twostream_lib import cli
from twostream_lib.errors import run_cli

REPO = Path(__file__).resolve().parents[1]
GET_DATASET = REPO / "data_scripts" / "get_dataset.py"
HUGE = str(10 ** 12)


# ---------------------------------------------------------------------------------------------- the commands
def _load_get_dataset():
    spec = importlib.util.spec_from_file_location("get_dataset_script", GET_DATASET)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GET_DATASET_MODULE = _load_get_dataset()


def _mains() -> dict:
    out = {}
    for name, target in cli.COMMANDS.items():
        module, _, func = target.partition(":")
        out[name] = getattr(importlib.import_module(module), func or "main")
    out["get_dataset"] = GET_DATASET_MODULE.main
    return out


MAINS = _mains()


class _Captured(Exception):
    pass


def _parser_of(main) -> argparse.ArgumentParser:
    """The parser ``main`` builds: its first parse call is intercepted (as in test_project's --help test)."""
    def capture(self, *args, **kwargs):
        raise _Captured(self)

    saved = {n: getattr(argparse.ArgumentParser, n) for n in ("parse_args", "parse_known_args",
                                                             "parse_intermixed_args")}
    try:
        for n in saved:
            setattr(argparse.ArgumentParser, n, capture)
        main(["--help"])
    except _Captured as e:
        return e.args[0]
    finally:
        for n, f in saved.items():
            setattr(argparse.ArgumentParser, n, f)
    raise AssertionError(f"{main} parsed no arguments")


PARSERS = {name: _parser_of(main) for name, main in MAINS.items()}


# ---------------------------------------------------------------------------------------------- kinds of values
#: what each option that takes a plain string is (typed options are known by their type, choices by their choices)
STRING_KINDS = {
    ("lab", "data"): "out-dir",
    ("prepare", "root"): "in-dir",
    ("prepare", "cache"): "out-dir",
    ("prepare", "device"): "device",
    ("train", "config"): "in-file",
    ("train", "overrides"): "key=value",
    ("pretrain", "config"): "in-file",
    ("pretrain", "overrides"): "key=value",
    ("evaluate", "checkpoint"): "in-file",
    ("evaluate", "out"): "out-file",
    ("evaluate", "device"): "device",
    ("evaluate", "root"): "in-dir",
    ("evaluate", "cache"): "in-dir",
    ("fuse", "scores"): "in-file",
    ("fuse", "train"): "in-file",
    ("fuse", "out"): "out-file",
    ("get_dataset", "root"): "out-dir",
    ("get_dataset", "downloads"): "out-dir",
    ("get_dataset", "sha256"): "key=value",
    ("get_dataset", "cache"): "out-dir",
    ("get_dataset", "device"): "device",
}
#: config keys given as ``key=value`` overrides that name a place (checked by the command itself)
CONFIG_KEYS = {("train", "out_dir="): "out-dir"}

_PATHS = {  # label -> template (resolved in each case's own tmp folder)
    "missing": "{tmp}/new/x",
    "folder": "{folder}",
    "file": "{file}",
    "under-file": "{file}/x",
    "/proc/x": "/proc/x",
}
BAD_VALUES = {
    "int": ["-1", "0", "nan", "inf", "1e12", "abc", HUGE],
    "float": ["-1", "0", "nan", "inf", "1e12", "abc"],
    "device": ["bogus", "cuda:99"] + ([] if torch.cuda.is_available() else ["cuda"]),
    "key=value": ["abc", "bogus=1"],
    "in-file": ["missing", "folder", "under-file", "/proc/x"],
    "in-dir": ["missing", "file", "under-file", "/proc/x"],
    "out-file": ["missing", "folder", "under-file", "/proc/x"],
    "out-dir": ["missing", "file", "under-file", "/proc/x"],
}

#: values that mean something: (command, option, value) -> why. Every other generated case must be refused.
ACCEPTED = {
    ("lab", "--data", "missing"): "a new data folder is created",
    ("lab", "--seed", "0"): "the default seed",
    ("lab", "--seed", HUGE): "any integer >= 0 is a seed (NumPy takes arbitrarily large ones)",
    ("prepare", "--cache", "missing"): "a new cache folder is created",
    ("train", "out_dir=", "missing"): "a new run folder is created",
    ("evaluate", "--out", "missing"): "the score file's folder is created",
    ("evaluate", "--task", "0"): "the first head (every checkpoint has one)",
    ("evaluate", "--workers", "0"): "test items built in the evaluating process (the default on a CPU)",
    ("fuse", "--out", "missing"): "the fused score file's folder is created",
    ("fuse", "--weights", "1e12"): "weights are relative (normalised to sum to 1): equal weights",
    ("fuse", "--C", "1e12"): "a very large C: a (nearly) hard-margin SVM",
    ("get_dataset", "--root", "missing"): "a new dataset root is created",
    ("get_dataset", "--downloads", "missing"): "a new downloads folder is created",
    ("get_dataset", "--cache", "missing"): "a new cache folder is created",
}

# ---------------------------------------------------------------------------------------------- valid arguments
#: each command's valid arguments (dest -> tokens, True for a switch); {placeholders} are resolved per case
BASE = {
    "lab": {"data": ["{tmp}/data"], "scale": ["tiny"], "workers": ["1"]},
    "prepare": {"dataset": ["lab-ucf"], "root": ["{lab}/lab-ucf"], "cache": ["{tmp}/cache"], "flow": ["gt"],
                "short_side": ["none"], "workers": ["1"], "no_progress": True},
    "train": {"config": [str(REPO / "configs/lab_spatial.yaml")],
              "overrides": ["roots=[{lab}/lab-ucf]", "caches=[{cache}]", "crop_size=44", "device=cpu",
                            "out_dir={tmp}/run"], "no_progress": True},
    "pretrain": {"config": [str(REPO / "configs/lab_pretrain.yaml")],
                 "overrides": ["device=cpu", "out_dir={tmp}/run"], "no_progress": True},
    "evaluate": {"checkpoint": ["{ckpt}"], "device": ["cpu"], "frames": ["1"], "crops": ["1"], "no_progress": True},
    "fuse": {"scores": ["{s1}", "{s2}"]},
    "get_dataset": {"dataset": ["ucf101"], "root": ["{tmp}/ucf101"]},
}
_SVM = {"method": ["svm"], "train": ["{t1}", "{t2}"]}
_GD_PREPARE = {"prepare": True, "cache": ["{tmp}/gd-cache"]}
#: what some options need beside them to mean anything (added to BASE for their cases)
CONTEXT = {
    ("prepare", "device"): {"flow": ["tvl1-torch"]},
    ("prepare", "batch"): {"flow": ["tvl1-torch"]},
    ("fuse", "train"): _SVM,
    ("fuse", "C"): _SVM,
    ("fuse", "weights"): {"weights": ["1", "1"]},
    ("get_dataset", "cache"): _GD_PREPARE,
    ("get_dataset", "workers"): _GD_PREPARE,
    ("get_dataset", "device"): {**_GD_PREPARE, "flow": ["tvl1-torch"]},
    ("get_dataset", "batch"): {**_GD_PREPARE, "flow": ["tvl1-torch"]},
}


def _kind(command: str, action: argparse.Action) -> str:
    if action.choices is not None:
        return "choice"
    typed = getattr(action.type, "kind", None) or {int: "int", float: "float"}.get(action.type)
    return typed or STRING_KINDS.get((command, action.dest), "")


def _value_options(command: str) -> list[argparse.Action]:
    """The parser's arguments that take a value (not --help, not switches)."""
    return [a for a in PARSERS[command]._actions if a.nargs != 0 and not isinstance(a, argparse._HelpAction)]


def _name(action: argparse.Action) -> str:
    return max(action.option_strings, key=len) if action.option_strings else action.dest


def _generate() -> list[tuple]:
    """``(command, option name, dest, kind, value label)`` for every bad value of every option of every command."""
    cases = []
    for command in PARSERS:
        for action in _value_options(command):
            kind = _kind(command, action)
            if kind == "choice":
                values = ["bogus"]
                if action.type is int:
                    values.append(str(max(action.choices) + 1))
            else:
                values = BAD_VALUES.get(kind, [])
            cases += [(command, _name(action), action.dest, kind, v) for v in values]
    for (command, key), kind in CONFIG_KEYS.items():
        cases += [(command, key, "overrides", kind, v) for v in BAD_VALUES[kind]]
    return cases


CASES = _generate()


# ---------------------------------------------------------------------------------------------- running a case
class Reached(Exception):
    """Raised where a command's heavy work would start: its checks let the arguments through."""


def _reached(original):
    """``original`` replaced: raises :class:`Reached` (its docstring kept: a parser's description may be it)."""
    def reached(*args, **kwargs):
        raise Reached

    reached.__doc__ = original.__doc__
    return reached


@pytest.fixture(autouse=True)
def no_heavy_work(monkeypatch):
    """Training, preparing, rendering and downloading replaced by :class:`Reached`; torch's threads restored."""
    import twostream_lib.download
    import twostream_lib.lab.stills
    import twostream_lib.lab.writer
    import twostream_lib.prepare
    import twostream_lib.train

    monkeypatch.setattr(twostream_lib.lab.writer, "prepare_lab", _reached(twostream_lib.lab.writer.prepare_lab))
    monkeypatch.setattr(twostream_lib.prepare, "_prepare_locked", _reached(twostream_lib.prepare._prepare_locked))
    monkeypatch.setattr(twostream_lib.train, "build_datasets", _reached(twostream_lib.train.build_datasets))
    monkeypatch.setattr(twostream_lib.lab.stills, "make_stills", _reached(twostream_lib.lab.stills.make_stills))
    monkeypatch.setattr(twostream_lib.download, "download", _reached(twostream_lib.download.download))
    monkeypatch.setattr(GET_DATASET_MODULE, "prepare", _reached(GET_DATASET_MODULE.prepare))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def env(lab_root_tiny, tmp_path_factory) -> dict:
    """The valid inputs: tiny lab-ucf, its cache, a tiny checkpoint trained on nothing, score files, a plain file
    and a folder."""
    from twostream_lib.checkpoint import make_checkpoint, save_checkpoint
    from twostream_lib.config import load_config
    from twostream_lib.models import build_model_for
    from twostream_lib.prepare import prepare
    from twostream_lib.scores import save_scores
    from twostream_lib.splits import load_split

    base = tmp_path_factory.mktemp("cli_values")
    cache = base / "cache-lab-ucf"
    prepare("lab-ucf", lab_root_tiny / "lab-ucf", cache, flow="gt", short_side=None, progress=False)
    cfg = load_config(REPO / "configs/lab_spatial.yaml", [f"roots=[{lab_root_tiny / 'lab-ucf'}]", f"caches=[{cache}]",
                                                          "crop_size=44", "device=cpu", f"out_dir={base / 'run'}"])
    classes = list(load_split("lab-ucf", lab_root_tiny / "lab-ucf", 1).classes)
    torch.manual_seed(0)
    save_checkpoint(base / "best.pt", make_checkpoint(build_model_for(cfg, [len(classes)]), cfg, 0, [classes]))
    rng = np.random.default_rng(0)
    paths = {}
    for name, subset, ids in (("s1", "test", "v"), ("s2", "test", "v"), ("t1", "train", "u"), ("t2", "train", "u")):
        n = 6 if subset == "test" else 9
        paths[name] = base / f"{name}.npz"
        save_scores(paths[name], rng.dirichlet(np.ones(3), n), np.arange(n) % 3, [f"{ids}{i}" for i in range(n)],
                    ["a", "b", "c"], {"subset": subset})
    (base / "a_file.txt").write_text("not what any option wants\n")
    (base / "a_folder").mkdir()
    return {"lab": str(lab_root_tiny), "cache": str(cache), "ckpt": str(base / "best.pt"),
            "file": str(base / "a_file.txt"), "folder": str(base / "a_folder"),
            **{k: str(v) for k, v in paths.items()}}


def _argv(command: str, args: dict) -> list[str]:
    """``args`` (dest -> tokens / True) as a command line, positionals first, in the parser's order."""
    actions = [a for a in PARSERS[command]._actions if a.dest in args]
    argv = [t for a in actions if not a.option_strings for t in args[a.dest]]
    for a in (a for a in actions if a.option_strings):
        if args[a.dest] is True:
            argv.append(_name(a))
        elif isinstance(a, argparse._AppendAction):
            argv += [t for v in args[a.dest] for t in (_name(a), v)]
        else:
            argv += [_name(a), *args[a.dest]]
    return argv


def _resolve(tokens, fill: dict):
    return tokens if tokens is True else [t.format(**fill) for t in tokens]


def _run(command: str, argv: list[str], capsys) -> tuple[int, str]:
    """``main(argv)`` as the command line runs it -> (exit status, stderr); a traceback fails the test."""
    try:
        rc = run_cli(MAINS[command], argv)
    except SystemExit as e:  # argparse's one-line error (errors.ArgumentParser.error)
        rc = e.code
    except Reached:
        rc = 0
    except Exception as e:  # noqa: BLE001 - a traceback at the command line
        pytest.fail(f"{command} {' '.join(argv)}: {type(e).__name__}: {e} (a traceback, not a one-line error)")
    return rc, capsys.readouterr().err


def _case_args(command: str, dest: str, option: str, label: str, fill: dict) -> tuple[dict, list[str]]:
    args = {**BASE[command], **CONTEXT.get((command, dest), {})}
    args = {k: _resolve(v, fill) for k, v in args.items()}
    value = _PATHS[label].format(**fill) if label in _PATHS else label
    if option.endswith("="):  # a config key, given as an override
        args[dest] = [t for t in args[dest] if not t.startswith(option)] + [option + value]
        return args, [value]
    action = next(a for a in PARSERS[command]._actions if a.dest == dest)
    n = len(args.get(dest, [])) if action.nargs in ("+", "*") and args.get(dest) is not True else 1
    args[dest] = [value] * max(1, n)
    return args, [value]


@pytest.mark.parametrize("command,option,dest,kind,label", CASES,
                         ids=[f"{c[0]} {c[1]} {c[4]}" for c in CASES])
def test_bad_value_is_one_line(command, option, dest, kind, label, env, tmp_path, capsys):
    fill = {**env, "tmp": str(tmp_path)}
    args, value = _case_args(command, dest, option, label, fill)
    argv = _argv(command, args)
    rc, err = _run(command, argv, capsys)
    why = ACCEPTED.get((command, option, label))
    if why is not None:
        assert rc == 0, f"{command} {' '.join(argv)}: accepted ({why}), but exit status {rc}: {err}"
        return
    assert rc == 2, f"{command} {' '.join(argv)}: exit status {rc}, not 2 (stderr: {err!r})"
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"{command} {' '.join(argv)}: stderr is not one line: {err!r}"
    names = [option.rstrip("=")] if option.startswith("-") else [dest, option.rstrip("="), *value]
    assert any(n in lines[0] for n in names), f"{command} {' '.join(argv)}: {lines[0]!r} doesn't name {option}"


# ---------------------------------------------------------------------------------------------- the table itself
def test_every_option_has_a_kind():
    """A new option that takes a string needs a kind in STRING_KINDS (and so gets its generated cases)."""
    missing = [f"{c} {_name(a)}" for c in PARSERS for a in _value_options(c) if not _kind(c, a)]
    assert not missing, f"options with no kind of value: {missing}; add them to STRING_KINDS"


def test_the_case_count_and_the_accepted_table():
    keys = {(c, o, v) for c, o, _, _, v in CASES}
    assert set(ACCEPTED) <= keys, f"stale ACCEPTED entries: {set(ACCEPTED) - keys}"
    assert {k for k in STRING_KINDS if k[0] in PARSERS} == set(STRING_KINDS), "STRING_KINDS names no command"
    assert len(CASES) >= 180, len(CASES)  # 7 commands x every option: a drop means options lost their kind


@pytest.mark.parametrize("command,dest", [(c, None) for c in BASE] + list(CONTEXT))
def test_the_valid_arguments_pass(command, dest, env, tmp_path, capsys):
    """The arguments every case starts from are valid (so a case's error is its value's)."""
    fill = {**env, "tmp": str(tmp_path)}
    args = {k: _resolve(v, fill) for k, v in {**BASE[command], **CONTEXT.get((command, dest), {})}.items()}
    if command in ("prepare", "get_dataset") and "tvl1-torch" in args.get("flow", []):
        args["device"] = ["cpu"]
    rc, err = _run(command, _argv(command, args), capsys)
    assert rc == 0, err


# ---------------------------------------------------------------------------------------------- damaged files
_REAL_PREPARE_LOCKED = importlib.import_module("twostream_lib.prepare")._prepare_locked  # before any stub


@pytest.mark.parametrize("name", ["settings.json", "manifest.json"])
@pytest.mark.parametrize("content", ["", "{not json", "[]"])
def test_damaged_cache_json_is_named(name, content, env, tmp_path, capsys, monkeypatch):
    """prepare over a cache whose settings.json / manifest.json was emptied, cut short or edited: one line naming
    the file and what to do."""
    import twostream_lib.prepare as prep

    monkeypatch.setattr(prep, "_prepare_locked", _REAL_PREPARE_LOCKED)
    cache = tmp_path / "cache"
    shutil.copytree(env["cache"], cache)
    (cache / name).write_text(content)
    argv = ["--dataset", "lab-ucf", "--root", f"{env['lab']}/lab-ucf", "--cache", str(cache), "--flow", "gt",
            "--short-side", "none", "--workers", "1", "--no-progress"]
    rc, err = _run("prepare", argv, capsys)
    assert rc == 2 and err.count("\n") == 1 and str(cache / name) in err, err


def test_damaged_video_index_is_prepared_again(env, tmp_path, monkeypatch):
    """A video folder whose index.json was emptied is prepared again (as a half-written one is)."""
    import twostream_lib.prepare as prep

    monkeypatch.setattr(prep, "_prepare_locked", _REAL_PREPARE_LOCKED)
    cache = tmp_path / "cache"
    shutil.copytree(env["cache"], cache)
    manifest = json.loads((cache / "manifest.json").read_text())
    vid = sorted(manifest["videos"])[0]
    del manifest["videos"][vid]
    (cache / "manifest.json").write_text(json.dumps(manifest))
    (cache / "videos" / vid / "index.json").write_text("")
    m = prep.prepare("lab-ucf", Path(env["lab"]) / "lab-ucf", cache, flow="gt", short_side=None, progress=False)
    assert vid in m["videos"] and m["prepared_now"] == 1 and not m["failed"]


@pytest.mark.skipif(shutil.which("lsar") is None, reason="Debian's unar/lsar not installed")
def test_junk_rar_is_one_line(tmp_path, capsys, monkeypatch):
    """An archive named .rar that is no RAR (an error page saved under the name, a truncated file): one line naming
    it and what to do, from safe_extract and from get_dataset.py."""
    import twostream_lib.download as d
    from twostream_lib.download import ExtractError, safe_extract

    junk = tmp_path / "x.rar"
    junk.write_text("<html>not found</html>\n")
    with pytest.raises(ExtractError, match=r"x\.rar: not a zip, tar or RAR archive"):
        safe_extract(junk, tmp_path / "out")
    monkeypatch.setattr(d, "download", lambda remote, dest, **kw: Path(dest) / remote.name)  # "already downloaded"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for r in d.UCF101_FILES:
        shutil.copy(junk, downloads / r.name)
    rc, err = _run("get_dataset", ["--dataset", "ucf101", "--root", str(tmp_path / "ucf"), "--downloads",
                                   str(downloads)], capsys)
    assert rc == 2 and err.count("\n") == 1 and "UCF101.rar: not a zip, tar or RAR archive" in err, err


def test_check_run_folder_refuses_a_file(tmp_path):
    from twostream_lib.config import ConfigError
    from twostream_lib.train import check_run_folder

    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_run_folder(tmp_path / "f", resume=False)


if __name__ == "__main__":  # the number of generated cases
    print(len(CASES))
    sys.exit(0)
