"""Safe file writing shared by every module that writes results: atomic writes and folder locks.

* **Atomic writes** — a file is written to a temporary name in its own folder and renamed into place
  (``os.replace``), so a crash or ``kill -9`` never leaves a half-written checkpoint, cache index or score file
  under the final name.
* **Folder locks** — one writer at a time per run folder or cache (:class:`FolderLock`, an ``fcntl`` lock on
  ``<folder>/.lock``). The lock dies with its process, so a killed run never leaves a stale lock behind.
* **Path checks** of an option before any work (:func:`existing_file`, :func:`existing_folder`,
  :func:`writable_file`, :func:`writable_folder`): a missing input, a folder given for a file (or the reverse), a
  place nothing can be written is one :class:`~twostream_lib.errors.OptionError` naming the option.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .errors import OptionError, UserError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "FolderLock",
           "LockError", "FolderError", "existing_file", "existing_folder", "writable_file", "writable_folder"]


class LockError(UserError, RuntimeError):
    """Another process is writing into the same folder; the message names it."""


class FolderError(UserError, OSError):
    """A folder to write into can't be used (it is a file, or can't be created there); the message names it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------------------------- path checks
def existing_file(path: str | os.PathLike, option: str, what: str = "file") -> Path:
    """``path`` is an existing file (``what`` says which, in the message), else :class:`OptionError`."""
    p = Path(path)
    if p.is_dir():
        raise OptionError(f"{option} {p}: is a folder; give a {what}")
    if not p.is_file():
        raise OptionError(f"{option} {p}: no such {what}" + _missing_part(p))
    return p


def existing_folder(path: str | os.PathLike, option: str, what: str = "folder") -> Path:
    """``path`` is an existing folder (``what`` says which), else :class:`OptionError`."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OptionError(f"{option} {p}: is a file; give a {what}")
    if not p.is_dir():
        raise OptionError(f"{option} {p}: no such {what}" + _missing_part(p))
    return p


def writable_file(path: str | os.PathLike, option: str, what: str = "file") -> Path:
    """``path`` can be written as a file: not a folder, and its folder exists or can be created, with room for
    new files (checked by creating and removing a temporary file: nothing is left behind)."""
    p = Path(path)
    if p.is_dir():
        raise OptionError(f"{option} {p}: is a folder; give a {what} name")
    _check_can_create(p.parent, option, p)
    return p


def writable_folder(path: str | os.PathLike, option: str, what: str = "folder") -> Path:
    """``path`` is a folder, or can be created as one, where files can be written (nothing is left behind)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OptionError(f"{option} {p}: is a file; give a {what}")
    _check_can_create(p, option, p)
    return p


def _missing_part(p: Path) -> str:
    """Where a missing path stops existing, when a file stands in the way (``a_file/x``)."""
    for anc in p.parents:
        if anc.exists():
            return f" ({anc} is a file, not a folder)" if not anc.is_dir() else ""
    return ""


def _check_can_create(folder: Path, option: str, path: Path) -> None:
    """Files can be created in ``folder`` (or in the folder it would be created in)."""
    anc = folder
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise OptionError(f"{option} {path}: {anc} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".write-check-", dir=anc)
    except OSError as e:
        raise OptionError(f"{option} {path}: nothing can be written in {anc} ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(tmp)


def sha256sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The SHA-256 of the file at ``path``, as hexadecimal."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


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
    file), at once or, with ``wait`` seconds, once it has waited that long for it (saying so on stderr when it
    starts waiting). The lock is released when the block ends or the process dies (``kill -9`` included).
    """

    def __init__(self, folder: str | os.PathLike, what: str = "folder", wait: float = 0.0):
        self.folder, self.what, self.wait = Path(folder), what, float(wait)
        self._f = None

    def __enter__(self) -> "FolderLock":
        if self.folder.exists() and not self.folder.is_dir():
            raise FolderError(f"{self.folder}: is a file, not a folder; it can't be the {self.what}")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            f = open(self.folder / ".lock", "a+")
        except OSError as e:
            raise FolderError(f"{self.folder}: can't use it as the {self.what} "
                              f"({e.strerror or type(e).__name__}: {e.filename or self.folder})") from None
        deadline, told = time.monotonic() + self.wait, False
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                if time.monotonic() >= deadline:
                    f.close()
                    raise LockError(f"{self.folder}: this {self.what} is in use by {holder}; wait for it to finish, "
                                    f"or use another folder") from None
                if not told:
                    print(f"{self.folder}: waiting for {holder} to finish with this {self.what}", file=sys.stderr,
                          flush=True)
                    told = True
                time.sleep(0.2)
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
