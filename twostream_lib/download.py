"""Getting the real datasets: resumable download, checksums, safe archive extraction, then the official layout.

UCF-101 (Soomro et al. 2012) and HMDB-51 (Kuehne et al. 2011) are distributed as RAR archives (HMDB-51 as a RAR
of per-class RARs) plus split files. This module

* downloads each file with HTTP range requests, so an interrupted download continues where it stopped;
* checks each archive's SHA-256: the providers publish no checksums, so the first complete download records its
  digest in ``<file>.sha256`` and every later run verifies against it (or against ``--sha256 NAME=HEX`` you give);
* extracts archives with a maintained tool — Python's ``zipfile``/``tarfile`` for zip/tar and Debian's
  ``unar``/``lsar`` for RAR — after listing every member and **refusing any that would land outside the target
  folder** (absolute paths, ``..`` components, links pointing out);
* arranges the result in the layout :mod:`twostream_lib.splits` parses, and checks it parses.

Nothing here can run without the network; everything after the download is tested on the lab data and on
crafted archives.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import re
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import OptionError, UserError
from .files import sha256sum, writable_folder

__all__ = ["Remote", "UCF101_FILES", "HMDB51_FILES", "ExtractError", "DownloadError", "download", "sha256sum",
           "verify", "safe_extract", "unsafe_members", "check_extracted", "parse_sha256", "get_dataset"]


@dataclass(frozen=True)
class Remote:
    name: str  # file name on disk
    url: str


UCF101_FILES = [
    Remote("UCF101.rar", "https://www.crcv.ucf.edu/data/UCF101/UCF101.rar"),
    Remote("UCF101TrainTestSplits-RecognitionTask.zip",
           "https://www.crcv.ucf.edu/data/UCF101/UCF101TrainTestSplits-RecognitionTask.zip"),
]
HMDB51_FILES = [
    Remote("hmdb51_org.rar", "http://serre-lab.clps.brown.edu/wp-content/uploads/2013/10/hmdb51_org.rar"),
    Remote("test_train_splits.rar",
           "http://serre-lab.clps.brown.edu/wp-content/uploads/2013/10/test_train_splits.rar"),
]


class ExtractError(UserError, RuntimeError):
    """An archive is unsafe or could not be extracted. Names the archive and the member."""


class DownloadError(UserError, IOError):
    """A download failed (no network, a server error) or a file's checksum doesn't match; names the file."""


def parse_sha256(items: list[str]) -> dict[str, str]:
    """``["UCF101.rar=<64 hex digits>", ...]`` -> ``{name: digest}``; a malformed item is a :class:`DownloadError`."""
    out = {}
    for item in items:
        name, sep, digest = item.partition("=")
        if not sep or not name or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise DownloadError(f"--sha256 {item!r}: expected NAME=HEX with a 64-digit hexadecimal SHA-256, "
                                f"e.g. UCF101.rar=" + "0" * 64)
        out[name] = digest.lower()
    return out


def download(remote: Remote, dest_dir: str | os.PathLike, progress: bool = True, timeout: float = 60) -> Path:
    """Download ``remote`` into ``dest_dir``, continuing a partial ``<name>.part`` with an HTTP Range request."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final, part = dest_dir / remote.name, dest_dir / (remote.name + ".part")
    if final.exists():
        return final
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(remote.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{remote.url}: cannot download ({reason}); check the network connection, or put the "
                            f"file there by hand as {final}") from None
    with resp:
        if have and resp.status != 206:  # server ignored the range: start again
            have = 0
        total = int(resp.headers.get("Content-Length", 0)) + have
        from tqdm import tqdm
        with open(part, "ab" if have else "wb") as f, tqdm(total=total or None, initial=have, unit="B",
                                                           unit_scale=True, desc=remote.name,
                                                           disable=not progress) as bar:
            for block in iter(lambda: resp.read(1 << 20), b""):
                f.write(block)
                bar.update(len(block))
    if total and part.stat().st_size != total:
        raise DownloadError(f"{part}: download incomplete ({part.stat().st_size} of {total} bytes); run again to resume")
    os.replace(part, final)
    return final


def verify(path: str | os.PathLike, expected: str | None = None) -> str:
    """Check ``path``'s SHA-256 against ``expected`` or the digest recorded at its first download.

    Records the digest in ``<path>.sha256`` when there is none yet. Raises ``IOError`` on a mismatch."""
    path = Path(path)
    digest = sha256sum(path)
    record = path.with_name(path.name + ".sha256")
    want = expected or (record.read_text().split()[0] if record.exists() else None)
    if want and want.lower() != digest:
        raise DownloadError(f"{path}: SHA-256 {digest} does not match the expected {want}; "
                      f"the file is corrupt or changed — delete it and download again")
    if not record.exists():
        record.write_text(f"{digest}  {path.name}\n")
    return digest


_DEST = Path("/dest")  # where member paths are checked against when no destination is given


def _inside(name: str, dest: Path = _DEST, base: str = "") -> bool:
    """Whether ``name`` (an archive member path, or a link target relative to member folder ``base``) stays
    inside ``dest``: path containment after normalising ``..``, never a string-prefix test (``dest2`` is not
    inside ``dest``)."""
    name = name.replace("\\", "/")
    if PurePosixPath(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
        return False
    dest = Path(os.path.abspath(dest))
    return Path(os.path.normpath(dest / base / name)).is_relative_to(dest)


def unsafe_members(archive: str | os.PathLike, dest: str | os.PathLike = _DEST) -> list[str]:
    """Members of a zip/tar/rar archive that would be written outside ``dest``: absolute paths, ``..`` escapes,
    links pointing outside (tar), any link or device member (RAR, via ``lsar``)."""
    archive, dest = Path(archive), Path(dest)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            return [n for n in z.namelist() if not _inside(n, dest)]
    if tarfile.is_tarfile(archive):
        bad = []
        with tarfile.open(archive) as t:
            for m in t.getmembers():
                parent = str(PurePosixPath(m.name).parent)
                if (not _inside(m.name, dest) or m.isdev()
                        or ((m.issym() or m.islnk()) and not _inside(m.linkname, dest, "" if m.islnk() else parent))):
                    bad.append(m.name)
        return bad
    return [e.get("XADFileName", "") for e in _lsar_entries(archive)
            if not _inside(e.get("XADFileName", ""), dest) or e.get("XADIsLink") or e.get("XADIsHardLink")
            or e.get("XADIsCharacterDevice") or e.get("XADIsBlockDevice") or e.get("XADIsFIFO")]


def _lsar_entries(archive: Path) -> list[dict]:
    if shutil.which("lsar") is None:
        raise ExtractError(f"{archive}: not zip/tar; RAR needs Debian's 'unar' package (apt-get install unar)")
    out = subprocess.run(["lsar", "-j", str(archive)], capture_output=True, text=True)
    try:
        listing = json.loads(out.stdout)
    except json.JSONDecodeError:
        listing = None
    entries = listing.get("lsarContents") if isinstance(listing, dict) else None
    if out.returncode != 0 or not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        detail = " ".join((out.stderr or "").split())[:200]
        raise ExtractError(f"{archive}: not a zip, tar or RAR archive that lsar can list (lsar exit status "
                           f"{out.returncode}{': ' + detail if detail else ''}); the file is incomplete or corrupt: "
                           f"delete it (and its .sha256) and download it again")
    return entries


def _lsar_names(archive: Path) -> list[str]:
    return [e.get("XADFileName", "") for e in _lsar_entries(archive)]


def check_extracted(dest: str | os.PathLike, archive: str | os.PathLike = "archive") -> None:
    """After extraction: every link under ``dest`` resolves inside it (path containment); an outward link is
    removed and reported."""
    dest = Path(dest)
    root = dest.resolve()
    for p in dest.rglob("*"):
        if p.is_symlink() and not p.resolve().is_relative_to(root):
            p.unlink()
            raise ExtractError(f"{archive}: member {p} is a link pointing outside {dest}; removed")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract ``archive`` into ``dest`` after checking that no member lands outside it.

    Raises:
        ExtractError: an unsafe member (named), or an extraction failure.
    """
    archive, dest = Path(archive), Path(dest)
    bad = unsafe_members(archive, dest)
    if bad:
        raise ExtractError(f"{archive}: refusing to extract, {len(bad)} member(s) would land outside {dest}: "
                           f"{bad[:5]}")
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")  # the stdlib's own guard as a second line of defence
    else:
        out = subprocess.run(["unar", "-force-overwrite", "-no-directory", "-output-directory", str(dest),
                              str(archive)], capture_output=True, text=True)
        if out.returncode != 0:
            raise ExtractError(f"{archive}: unar failed: {out.stderr.strip() or out.stdout.strip()}")
    check_extracted(dest, archive)  # belt and braces: nothing resolves outside dest
    return dest


def get_dataset(dataset: str, root: str | os.PathLike, downloads: str | os.PathLike | None = None,
                dry_run: bool = False, sha256: dict[str, str] | None = None, progress: bool = True) -> list[str]:
    """Download (resumably), verify and extract ``ucf101`` or ``hmdb51`` into ``root`` in the official layout.

    Returns the list of steps (what would be done, with ``dry_run``)."""
    from .splits import load_split

    if dataset not in ("ucf101", "hmdb51"):
        raise OptionError(f"dataset {dataset!r}: expected ucf101 or hmdb51")
    files = {"ucf101": UCF101_FILES, "hmdb51": HMDB51_FILES}[dataset]
    root = writable_folder(root, "root", "dataset root")  # nothing is created yet (a dry run writes nothing)
    downloads = writable_folder(downloads, "downloads", "downloads folder") if downloads else root / "downloads"
    steps = [f"download {r.url} -> {downloads / r.name}" for r in files]
    steps += [f"verify SHA-256 of {downloads / r.name}" for r in files]
    steps += [f"extract {downloads / r.name} -> {root}" for r in files]
    if dataset == "hmdb51":
        steps.append(f"extract each per-class RAR of hmdb51_org.rar -> {root}/<class>/")
    steps.append(f"check {root} parses as {dataset} (splits 1-3)")
    if dry_run:
        return steps
    for r in files:
        path = download(r, downloads, progress=progress)
        verify(path, (sha256 or {}).get(r.name))
    for r in files:
        safe_extract(downloads / r.name, root)
    if dataset == "hmdb51":  # hmdb51_org.rar holds one RAR per class
        for inner in sorted(root.glob("*.rar")):
            safe_extract(inner, root)
            inner.unlink()
    for s in (1, 2, 3):
        load_split(dataset, root, s)
    return steps
