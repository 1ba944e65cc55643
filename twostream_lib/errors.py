"""The one base class of the errors a user can cause (a bad file, flag, setting or folder).

Every module raises its own subclass (``ConfigError``, ``CacheError``, ``SplitError``, ``VideoError``,
``CheckpointError``, ...), whose message names the file or setting and what is wrong. The command line
(:mod:`twostream_lib.cli`) prints such an error as one line and exits with status 2; any other exception is a bug
and keeps its traceback (:func:`run_cli`).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

__all__ = ["UserError", "ArgumentParser", "run_cli"]


class UserError(Exception):
    """A problem with the user's input, files or settings (not a bug in the library)."""


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
