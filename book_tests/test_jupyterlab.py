"""The book in JupyterLab, as a reader uses it: the set-up's JupyterLab serves a chapter, the project's kernel runs
it through the UI in headless Chromium, and the chapter-2 flow explorer answers its dropdown.

* JupyterLab starts on a free localhost port with a token, over a scratch copy of chapter 2 (a reader's autosave
  must not rewrite the committed notebook), the lab data linked beside it; Chromium may reach 127.0.0.1 only.
* Run > Run All Cells through the menu; the first figure must appear, every cell must finish (no ``[*]`` left)
  and no output may hold a traceback.
* The explorer's "method" dropdown is changed; the figure it draws must change.
* The server, its kernels and the browser are stopped whatever happens; every wait is bounded.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, chromium

JUPYTER = Path(sys.executable).parent / "jupyter"
CHAPTER = "02_flow.ipynb"
RUN_ALL_SECONDS = 300  # chapter 2 runs in ~25 s on 2 cores; its nbval per-cell timeout is 300 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server over a scratch copy of the chapter; yields its base URL and token."""
    if not (ROOT / "data" / "lab" / "small").is_dir():
        pytest.fail("no lab data in data/lab/small: `make lab` first (make test does)")
    (tmp_path / "book").mkdir()
    shutil.copy(ROOT / "book" / CHAPTER, tmp_path / "book" / CHAPTER)
    (tmp_path / "data").symlink_to(ROOT / "data")  # the chapter's DATA_DIR = "../data"
    tracker = tmp_path / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"windowingMode": "none"}')  # every cell in the page, so the test sees them all
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings")}
    cmd = [str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "jupyterlab.log", "w")
    server = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(tmp_path / 'jupyterlab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, token
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
            server.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(server.pid, signal.SIGKILL)
        finally:
            log.close()


def wait_for(driver, predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate(driver)
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"JupyterLab: {what} did not happen within {seconds:.0f} s")


def tracebacks(driver) -> list[str]:
    """The text of every output that shows a Python traceback."""
    texts = driver.execute_script(
        "return [...document.querySelectorAll('.jp-OutputArea-output')].map(e => e.textContent);")
    return [t for t in texts if "Traceback (most recent call last)" in t or "-" * 40 in t.split("\n")[0]]


def test_chapter_runs_in_jupyterlab_and_the_explorer_answers(jupyterlab):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    url, token = jupyterlab
    driver, profile = chromium("MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
    try:
        driver.get(f"{url}/lab/tree/book/{CHAPTER}?token={token}")
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell"), 90,
                 "the chapter opening")
        def kernel_name(d):
            name = d.execute_script("const e = document.querySelector("
                                    "'.jp-NotebookPanel-toolbar .jp-Toolbar-kernelName'); return e && e.innerText;")
            return name.strip() if name and name.strip() not in ("No Kernel", "Kernel") else None

        kernel = wait_for(driver, kernel_name, 60, "the chapter's kernel starting (a 'Select Kernel' dialog means "
                                                   "the project's kernel is not registered: make setup)")
        assert kernel == "Python (twostream_lib)", f"the chapter runs in {kernel!r}, not the project's kernel"
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel-toolbar "
                                                   "[data-status='idle'], .jp-Notebook-ExecutionIndicator"
                                                   "[data-status='idle']"), 90, "the kernel starting")
        driver.find_element(By.XPATH, "//li[contains(@class,'lm-MenuBar-item')][.//text()='Run']").click()
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "li[data-command='runmenu:run-all']"),
                 10, "the Run menu opening")[0].click()
        t0 = time.monotonic()
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output img"), RUN_ALL_SECONDS,
                 "the first figure")
        print(f"first figure after {time.monotonic() - t0:.0f} s")
        assert not tracebacks(driver), tracebacks(driver)[0][:2000]

        def finished(d):
            prompts = d.execute_script("return [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                                       ".map(e => e.textContent.trim());")
            return prompts and all(p and "*" not in p and p != "[ ]:" for p in prompts)

        wait_for(driver, finished, RUN_ALL_SECONDS, "every cell finishing")
        print(f"all cells ran in {time.monotonic() - t0:.0f} s")
        errors = tracebacks(driver)
        assert not errors, errors[0][:2000]

        method = wait_for(driver, lambda d: [s for s in d.find_elements(By.CSS_SELECTOR, ".widget-dropdown select")
                                             if "TV-L1" in [o.text for o in Select(s).options]], 30,
                          "the explorer's method dropdown")[0]
        output = ".widget-output img, .jupyter-widgets-output-area img"
        before = wait_for(driver, lambda d: [i.get_attribute("src") for i in d.find_elements(By.CSS_SELECTOR,
                                                                                             output)], 30,
                          "the explorer's figure")
        driver.execute_script("arguments[0].scrollIntoView();", method)
        Select(method).select_by_visible_text("DIS" if "DIS" in [o.text for o in Select(method).options]
                                              else Select(method).options[0].text)
        wait_for(driver, lambda d: [i.get_attribute("src") for i in d.find_elements(By.CSS_SELECTOR, output)]
                 not in ([], before), 60, "the explorer's figure changing with its dropdown")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
