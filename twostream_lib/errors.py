"""The one base class of the errors a user can cause (a bad file, flag, setting or folder).

Every module raises its own subclass (``ConfigError``, ``CacheError``, ``SplitError``, ``VideoError``,
``CheckpointError``, ...), whose message names the file or setting and what is wrong. The command line
(:mod:`twostream_lib.cli`) prints such an error as one line and exits with status 2; any other exception is a bug
and keeps its traceback.
"""
from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """A problem with the user's input, files or settings (not a bug in the library)."""
