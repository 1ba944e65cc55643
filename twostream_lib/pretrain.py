"""Pre-training the lab spatial net on the lab stills: the lab's ImageNet pre-training (paper §5, Table 1a).

Pre-training is training: one ordinary run of :func:`twostream_lib.train.train` (``configs/lab_pretrain.yaml``,
``stream: spatial``) on the still images of :mod:`twostream_lib.lab.stills`
(:func:`~twostream_lib.lab.stills.stills_run_data`). This module sits above both the trainer and the stills; the
stills themselves are data and do not depend on the trainer. The run's ``best.pt`` starts a lab spatial run with
``init_from=`` (``finetune=all``: fine-tuning; ``finetune=last``: the last layer only). In a chapter::

    pre = pretrain_run(ch)                       # trained once, reused while its settings are the same
    cfg = ch.config("lab_spatial", None, [f"init_from={pre}", "finetune=all"], name="spatial_pretrained_ft")

or from the command line: ``python -m twostream_lib pretrain configs/lab_pretrain.yaml [key=value ...]``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .config import CONFIG_DIR, ConfigError, TrainConfig, load_config
from .errors import ArgumentParser, run_cli
from .lab.stills import STILLS_CLASSES, STILLS_PER_CLASS, stills_run_data
from .train import check_run_folder, finished_run, train

__all__ = ["pretrain", "pretrain_run", "main"]


def _check_spatial(cfg: TrainConfig, source: str) -> None:
    """Stills are single images: they pre-train the spatial stream only (a :class:`ConfigError` naming
    ``source`` otherwise)."""
    if cfg.stream != "spatial":
        raise ConfigError(f"{source}: pre-training on the stills needs stream: spatial (stills are single images), "
                          f"got stream: {cfg.stream}")
    if list(cfg.datasets) != ["lab-stills"]:
        raise ConfigError(f"{source}: pre-training trains on the stills, datasets: [lab-stills] (as in "
                          f"configs/lab_pretrain.yaml), got datasets: {list(cfg.datasets)}")


def _finished(cfg: TrainConfig) -> bool:
    """Whether ``cfg.out_dir`` holds this very run, finished (then it is reused without regenerating data)."""
    ckpt = finished_run(cfg)
    return ckpt is not None and ckpt.get("classes") == [list(STILLS_CLASSES)]


def pretrain(cfg: TrainConfig, progress: bool = True, n_per_class: int = STILLS_PER_CLASS) -> str:
    """Pre-train the spatial net on the stills (``configs/lab_pretrain.yaml``) into ``cfg.out_dir``; returns
    the path of its ``best.pt``. With ``resume`` (as :func:`~twostream_lib.config.run_config` sets) a finished
    run with the same settings is reused as it is. A config that is not ``stream: spatial`` is a
    :class:`~twostream_lib.config.ConfigError`."""
    _check_spatial(cfg, f"config {cfg.name!r}")
    if _finished(cfg):
        return str(Path(cfg.out_dir) / "best.pt")
    check_run_folder(Path(cfg.out_dir), cfg.resume)  # a bad out_dir is said before the stills are drawn
    return train(cfg, progress=progress, data=stills_run_data(cfg, n_per_class))["best_checkpoint"]


def pretrain_run(ch, overrides=(), variant: str | None = None, progress: bool = True) -> str:
    """A chapter's pre-trained spatial net (:class:`~twostream_lib.book.Chapter` ``ch``: its scale, profile,
    seed and device; folder ``runs_dir/<scale>/lab_pretrain[_<variant>]``, where ``python -m twostream_lib
    pretrain configs/lab_pretrain.yaml`` trains it too), trained once: the ``init_from=`` of Table 1a's
    pre-trained rows."""
    return pretrain(ch.pretrain_config(overrides, variant), progress=progress)


def main(argv: list[str] | None = None) -> int:
    """``python -m twostream_lib pretrain [CONFIG.yaml] [key=value ...]``."""
    p = ArgumentParser(prog="python -m twostream_lib pretrain",
                       description="Pre-train the lab spatial net on the procedural stills (the lab's ImageNet, "
                                   "Table 1a); a finished run with the same settings is reused.")
    p.add_argument("config", nargs="?", default=str(CONFIG_DIR / "lab_pretrain.yaml"),
                   help="YAML config of a spatial run (default: configs/lab_pretrain.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value settings that replace the file's")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_intermixed_args(argv)
    if "=" in a.config:
        a.overrides, a.config = [a.config, *a.overrides], str(CONFIG_DIR / "lab_pretrain.yaml")
    cfg = load_config(a.config, a.overrides + ["resume=true"])
    _check_spatial(cfg, a.config + (" (with overrides)" if a.overrides else ""))
    print(f"done: pre-trained net {pretrain(cfg, progress=not a.no_progress)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
