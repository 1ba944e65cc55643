"""Real-data helpers that run offline: checksums, dry run, and safe extraction of crafted archives."""
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from twostream_lib.download import ExtractError, get_dataset, safe_extract, unsafe_members, verify


def _zip(path, names):
    with zipfile.ZipFile(path, "w") as z:
        for n in names:
            z.writestr(n, b"data")
    return path


def _tar(path, names, link=None):
    with tarfile.open(path, "w") as t:
        for n in names:
            info = tarfile.TarInfo(n)
            info.size = 4
            t.addfile(info, io.BytesIO(b"data"))
        if link:
            info = tarfile.TarInfo(link[0])
            info.type = tarfile.SYMTYPE
            info.linkname = link[1]
            t.addfile(info)
    return path


@pytest.mark.parametrize("evil", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt"])
def test_zip_traversal_refused(tmp_path, evil):
    a = _zip(tmp_path / "a.zip", ["UCF-101/x.avi", evil])
    assert unsafe_members(a) == [evil]
    with pytest.raises(ExtractError, match=r"a\.zip: refusing to extract"):
        safe_extract(a, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()


def test_tar_traversal_and_link_refused(tmp_path):
    a = _tar(tmp_path / "a.tar", ["ok/x.avi", "../evil.txt"])
    with pytest.raises(ExtractError, match="refusing"):
        safe_extract(a, tmp_path / "out")
    b = _tar(tmp_path / "b.tar", ["ok/x.avi"], link=("ok/link", "../../etc/passwd"))
    assert unsafe_members(b) == ["ok/link"]


def test_safe_archives_extract(tmp_path):
    safe_extract(_zip(tmp_path / "a.zip", ["ucfTrainTestlist/classInd.txt"]), tmp_path / "o")
    safe_extract(_tar(tmp_path / "b.tar", ["UCF-101/A/v.avi"]), tmp_path / "o")
    assert (tmp_path / "o/ucfTrainTestlist/classInd.txt").read_bytes() == b"data"
    assert (tmp_path / "o/UCF-101/A/v.avi").exists()


@pytest.mark.skipif(shutil.which("lsar") is None, reason="Debian's unar/lsar not installed")
def test_lsar_path_on_crafted_archive(tmp_path, monkeypatch):
    # lsar lists zip too: exercise the RAR code path (listing via lsar) on a crafted archive
    import twostream_lib.download as d
    a = _zip(tmp_path / "a.bin", ["fine.txt", "../evil.txt"])
    assert d._lsar_names(a) == ["fine.txt", "../evil.txt"]


def test_checksum_recorded_then_verified(tmp_path):
    f = tmp_path / "UCF101.rar"
    f.write_bytes(b"abc")
    d = verify(f)
    assert (tmp_path / "UCF101.rar.sha256").read_text().startswith(d)
    f.write_bytes(b"abd")
    with pytest.raises(IOError, match="does not match"):
        verify(f)
    with pytest.raises(IOError, match="does not match"):
        verify(tmp_path / "UCF101.rar.sha256", expected="00")


def test_dry_run(tmp_path):
    steps = get_dataset("hmdb51", tmp_path / "hmdb", dry_run=True)
    assert any("hmdb51_org.rar" in s for s in steps) and any("per-class RAR" in s for s in steps)
    assert not (tmp_path / "hmdb").exists()
    out = subprocess.run([sys.executable, "data_scripts/get_dataset.py", "--dataset", "ucf101", "--root",
                          str(tmp_path / "u"), "--dry-run"], capture_output=True, text=True,
                         cwd=__import__("pathlib").Path(__file__).parents[1])
    assert out.returncode == 0 and "would download https://www.crcv.ucf.edu/data/UCF101/UCF101.rar" in out.stdout


def _zip_with_link(path, target):
    import stat
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("fine.txt", "x")
        zi = zipfile.ZipInfo("ln")
        zi.external_attr, zi.create_system = (stat.S_IFLNK | 0o777) << 16, 3
        z.writestr(zi, target)
    return path


@pytest.mark.skipif(shutil.which("lsar") is None, reason="Debian's unar/lsar not installed")
def test_rar_path_refuses_link_members_before_extracting(tmp_path, monkeypatch):
    """The lsar/unar path (RAR) lists every member first and refuses links, as zip/tar refuse outward ones."""
    import twostream_lib.download as d

    a = _zip_with_link(tmp_path / "a.bin", "../dest2/x")
    monkeypatch.setattr(d.zipfile, "is_zipfile", lambda p: False)  # take the RAR code path on this archive
    ran = []
    monkeypatch.setattr(d.subprocess, "run", lambda cmd, **kw: ran.append(cmd) or _real_run(cmd, **kw))
    with pytest.raises(ExtractError, match=r"1 member\(s\) would land outside.*'ln'"):
        safe_extract(a, tmp_path / "dest")
    assert all(c[0] == "lsar" for c in ran), "unar ran before the members were checked"


_real_run = subprocess.run


def test_containment_is_by_path_not_string_prefix(tmp_path):
    import twostream_lib.download as d

    dest = tmp_path / "dest"
    assert not d._inside("../dest2/x", dest) and d._inside("a/../b", dest)
    assert not d._inside("x", dest, base="../dest2")
    (tmp_path / "dest2").mkdir()
    dest.mkdir()
    (dest / "ln").symlink_to(tmp_path / "dest2")  # a sibling whose name starts with the destination's
    with pytest.raises(ExtractError, match="link pointing outside"):
        d.check_extracted(dest)
    assert not (dest / "ln").exists()


def test_get_dataset_errors_are_one_line(tmp_path):
    script = Path(__file__).parents[1] / "data_scripts" / "get_dataset.py"
    bad = subprocess.run([sys.executable, str(script), "--dataset", "ucf101", "--root", str(tmp_path / "u"),
                          "--sha256", "UCF101.rar=xyz"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "64-digit hexadecimal" in bad.stderr
    env = {**os.environ, "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    off = subprocess.run([sys.executable, str(script), "--dataset", "ucf101", "--root", str(tmp_path / "u")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert off.returncode == 2 and "Traceback" not in off.stderr
    assert off.stderr.count("\n") == 1 and "cannot download" in off.stderr
