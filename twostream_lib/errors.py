"""The one base class of the errors a user can cause (a bad file, flag, setting or folder).

Every module raises its own subclass (``ConfigError``, ``CacheError``, ``SplitError``, ``VideoError``,
``CheckpointError``, ...), whose message names the file or setting and what is wrong. The command line
(:mod:`twostream_lib.cli`) prints such an error as one line and exits with status 2; any other exception is a bug
and keeps its traceback (:func:`run_cli`).

Every command checks its options before any heavy work: numbers with :class:`IntRange` / :class:`FloatRange` (the
parser names the flag), devices with :func:`check_device`, paths with the checks of :mod:`twostream_lib.files`
(:func:`~twostream_lib.files.existing_file`, ...), each a one-line :class:`OptionError` naming the option.
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable

import torch

__all__ = ["UserError", "OptionError", "ArgumentParser", "run_cli", "IntRange", "FloatRange", "check_device",
           "MAX_WORKERS"]

#: the most worker processes an option accepts (more is a typo, and would start that many processes)
MAX_WORKERS = 1024


class UserError(Exception):
    """A problem with the user's input, files or settings (not a bug in the library)."""


class OptionError(UserError, ValueError):
    """A command-line option (or a function's argument) with a value it can't take; the message starts with the
    option's name and value."""


class IntRange:
    """``type=`` of an integer option in ``[lo, hi]`` (``hi=None``: no upper bound). A bad value is argparse's
    one-line error naming the flag: ``argument --workers: must be an integer in 1..1024, got '-1'``."""

    kind = "int"

    def __init__(self, lo: int, hi: int | None = None):
        self.lo, self.hi = lo, hi
        self.__name__ = "int"  # argparse's name for the type

    def _range(self) -> str:
        return f">= {self.lo}" if self.hi is None else f"in {self.lo}..{self.hi}"

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {self._range()}, got {text!r}") from None
        if value < self.lo or (self.hi is not None and value > self.hi):
            raise argparse.ArgumentTypeError(f"must be an integer {self._range()}, got {text!r}")
        return value


class FloatRange:
    """``type=`` of a finite number option in ``[lo, hi]`` (``lo_open``: ``lo`` itself excluded; ``hi=None``: no
    upper bound); NaN and infinities are refused."""

    kind = "float"

    def __init__(self, lo: float, hi: float | None = None, lo_open: bool = False):
        self.lo, self.hi, self.lo_open = lo, hi, lo_open
        self.__name__ = "float"

    def _range(self) -> str:
        low = f"> {self.lo:g}" if self.lo_open else f">= {self.lo:g}"
        return low if self.hi is None else f"{low} and <= {self.hi:g}"

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {self._range()}, got {text!r}") from None
        if (not math.isfinite(value) or value < self.lo or (self.lo_open and value == self.lo)
                or (self.hi is not None and value > self.hi)):
            raise argparse.ArgumentTypeError(f"must be a finite number {self._range()}, got {text!r}")
        return value


def check_device(option: str, value: str, several: bool = False, auto: bool = False) -> str:
    """``value`` names a device this machine has: ``cpu``, ``cuda`` or ``cuda:N`` (``auto`` too if allowed;
    ``several``: a comma-separated list of them). Otherwise an :class:`OptionError` naming ``option``."""
    names = value.split(",") if several else [value]
    expected = ("auto, " if auto else "") + "cpu, cuda or cuda:N" + (" (or several: cuda:0,cuda:1)" if several else "")
    for name in names:
        if auto and name == "auto" and len(names) == 1:
            continue
        try:
            dev = torch.device(name)
        except (RuntimeError, ValueError, TypeError):
            raise OptionError(f"{option} {value!r}: not a device; expected {expected}") from None
        if dev.type not in ("cpu", "cuda"):
            raise OptionError(f"{option} {value!r}: not a device; expected {expected}")
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise OptionError(f"{option} {value!r}: CUDA is not available on this machine; give cpu")
            if dev.index is not None and dev.index >= torch.cuda.device_count():
                raise OptionError(f"{option} {value!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                                  f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return value


class ArgumentParser(argparse.ArgumentParser):
    """The command line's parser: ``--help`` shows each flag's default, and a bad flag is reported in one line
    (``error: <prog>: <what is wrong>``, exit status 2) instead of argparse's usage block."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if action.option_strings and action.help is None and _shows_default(action):
            action.help = "(default: %(default)s)"  # a flag without help text still shows its default
        return action

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def _shows_default(action: argparse.Action) -> bool:
    """A default worth printing: a value (not a switch's False, not None, not argparse's SUPPRESS)."""
    return (action.default not in (None, argparse.SUPPRESS)
            and not isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)))


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each flag's default once: appended as ``(default: X)`` unless the help text already says it."""

    def _get_help_string(self, action):
        text = (action.help or "").strip()
        if not _shows_default(action) or "default" in text.lower():
            return text
        return f"{text} (default: %(default)s)".strip()


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a command's ``main(argv)``: a :class:`UserError` is printed as one line (exit status 2); any other
    exception is a bug and keeps its traceback."""
    try:
        return int(main(argv) or 0)
    except UserError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, whatever the message holds
        return 2
