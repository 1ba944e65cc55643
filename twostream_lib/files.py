"""Safe file writing shared by every module that writes results: atomic writes and folder locks.

* **Atomic writes** — a file is written to a temporary name in its own folder and renamed into place
  (``os.replace``), so a crash or ``kill -9`` never leaves a half-written checkpoint, cache index or score file
  under the final name.
* **Folder locks** — one writer at a time per run folder or cache (:class:`FolderLock`, an ``fcntl`` lock on
  ``<folder>/.lock``). The lock dies with its process, so a killed run never leaves a stale lock behind.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .errors import UserError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "FolderLock",
           "LockError"]


class LockError(UserError, RuntimeError):
    """Another process is writing into the same folder; the message names it."""


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True))


class FolderLock:
    """``with FolderLock(folder, "training run"):`` — exclusive use of ``folder`` by this process.

    Raises :class:`LockError` naming the process that holds it (its pid and command line, written into the lock
    file). The lock is released when the block ends or the process dies (``kill -9`` included).
    """

    def __init__(self, folder: str | os.PathLike, what: str = "folder"):
        self.folder, self.what = Path(folder), what
        self._f = None

    def __enter__(self) -> "FolderLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        f = open(self.folder / ".lock", "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise LockError(f"{self.folder}: this {self.what} is in use by {holder}; wait for it to finish, or use "
                            f"another folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} ({' '.join(sys.argv)[:200]})")
        f.flush()
        self._f = f
        return self

    def __exit__(self, *exc) -> None:
        if self._f is not None:
            self._f.close()  # closing releases the lock; the file stays (harmless, reused next time)
            self._f = None
