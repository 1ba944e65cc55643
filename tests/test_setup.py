"""The Debian set-up step (`make system`) as a fresh machine sees it.

On a machine where chromium, chromedriver and unar are installed, `make system` does nothing, so a broken install
command would pass unnoticed. Here they are hidden: a PATH of links to every command except those, an `apt-get`
that simulates (`apt-get -s`) instead of installing, and `sudo` that just runs its command. The set-up must then
ask apt-get for exactly the missing packages and the simulated install must succeed (no conflict with the Node.js
that ships its own npm).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = re.compile(r"^(chromium|chromium-browser|chromedriver|chromium-driver|lsar|unar)$")
PATH_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def _has_candidate(pkg: str) -> bool:
    out = subprocess.run(["apt-cache", "policy", pkg], capture_output=True, text=True).stdout
    m = re.search(r"Candidate:\s*(\S+)", out)
    return bool(m) and m.group(1) != "(none)"


def _shim_path(tmp_path: Path, log: Path) -> Path:
    """A folder of links to every command on the usual PATH except the hidden ones, with fake apt-get/sudo."""
    shim = tmp_path / "bin"
    shim.mkdir()
    for d in PATH_DIRS:
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            if HIDDEN.match(f) or (shim / f).exists() or f in ("apt-get", "sudo"):
                continue
            (shim / f).symlink_to(os.path.join(d, f))
    real_apt = shutil.which("apt-get")
    (shim / "apt-get").write_text(
        "#!/bin/bash\n"
        '[ "$1" = update ] && exit 0\n'
        f'echo "apt-get $*" >>{log}\n'
        'args=(); for a in "$@"; do [ "$a" = install ] || args+=("$a"); done\n'
        f'exec {real_apt} install -s "${{args[@]}}"\n')
    (shim / "sudo").write_text('#!/bin/bash\nexec "$@"\n')
    for f in ("apt-get", "sudo"):
        (shim / f).chmod(0o755)
    return shim


def _make_system(shim: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": str(shim)}
    return subprocess.run(["make", "-B", "--no-print-directory", "system"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


needs_apt = pytest.mark.skipif(shutil.which("apt-get") is None or shutil.which("make") is None,
                               reason="not a Debian machine with make")


@needs_apt
def test_fresh_machine_installs_only_what_is_missing(tmp_path):
    if not all(_has_candidate(p) for p in ("chromium", "chromium-driver", "unar")):
        pytest.skip("apt has no package lists here (run apt-get update): nothing to simulate against")
    log = tmp_path / "apt.log"
    r = _make_system(_shim_path(tmp_path, log))
    assert r.returncode == 0, f"make system fails on a fresh machine:\n{r.stdout}\n{r.stderr}"
    asked = log.read_text().split() if log.exists() else []
    assert {"chromium", "chromium-driver", "unar"} <= set(asked), asked
    if shutil.which("npm"):
        assert "npm" not in asked, "Debian's npm asked for although npm is installed (it conflicts with Node.js's)"


@needs_apt
def test_nothing_missing_runs_no_apt(tmp_path):
    for tool in ("chromium", "chromedriver", "lsar", "unar", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed here")
    log = tmp_path / "apt.log"
    shim = _shim_path(tmp_path, log)
    for tool in ("chromium", "chromedriver", "lsar", "unar"):  # put the real tools back
        (shim / tool).symlink_to(shutil.which(tool))
    r = _make_system(shim)
    assert r.returncode == 0, r.stderr
    assert not log.exists(), f"apt-get ran although nothing is missing: {log.read_text()}"
