"""Fixtures for the rendered-book check: which book to check, and one offline headless Chromium.

Options (or environment variables):
  --book-source DIR   book root with _config.yml and book/*.ipynb (env BOOK_SOURCE; default: this repository)
  --book-html DIR     the built HTML (env BOOK_HTML; default: <book-source>/_build/html)
  --screenshots DIR   full-page screenshots (env BOOK_SCREENSHOTS; default: <book-html>/../screenshots)

The browser is Debian's Chromium (/usr/bin/chromium) driven by Debian's chromedriver (/usr/bin/chromedriver),
both given explicitly so Selenium Manager never runs (and SE_OFFLINE forbids it to download anything). The network
is off three ways: DNS resolves nothing (--host-resolver-rules), DevTools emulates an offline network, and every
request the page makes is recorded from the performance log so a test can fail on any non-file URL.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))


def pytest_addoption(parser):
    g = parser.getgroup("book", "rendered-book check")
    g.addoption("--book-source", default=os.environ.get("BOOK_SOURCE"), help="book root (default: repository)")
    g.addoption("--book-html", default=os.environ.get("BOOK_HTML"), help="built HTML folder")
    g.addoption("--screenshots", default=os.environ.get("BOOK_SCREENSHOTS"), help="screenshot folder")


def _paths(config) -> tuple[Path, Path, Path]:
    src = Path(config.getoption("--book-source") or ROOT).resolve()
    html = Path(config.getoption("--book-html") or src / "_build" / "html").resolve()
    shots = Path(config.getoption("--screenshots") or html.parent / "screenshots").resolve()
    return src, html, shots


def built_pages(html: Path) -> list[Path]:
    """Every page of the book proper (html/book/**.html) and the root index.html (a redirect)."""
    return sorted((html / "book").rglob("*.html")) + [html / "index.html"]


def pytest_generate_tests(metafunc):
    if "page" in metafunc.fixturenames:
        _, html, _ = _paths(metafunc.config)
        pages = built_pages(html) if (html / "index.html").is_file() else []
        metafunc.parametrize("page", pages, ids=[str(p.relative_to(html)) for p in pages])


@pytest.fixture(scope="session")
def book_source(pytestconfig) -> Path:
    return _paths(pytestconfig)[0]


@pytest.fixture(scope="session")
def book_html(pytestconfig) -> Path:
    html = _paths(pytestconfig)[1]
    if not (html / "index.html").is_file():
        pytest.fail(f"no built book at {html} (build it first: `make book-html`, or pass --book-html)")
    return html


@pytest.fixture(scope="session")
def screenshot_dir(pytestconfig) -> Path:
    shots = _paths(pytestconfig)[2]
    shots.mkdir(parents=True, exist_ok=True)
    return shots


def chromium(resolver_rules: str = "MAP * ~NOTFOUND"):
    """Debian's headless Chromium under selenium, every host name resolving to nothing unless ``resolver_rules``
    lets it (the rendered book: none; JupyterLab: ``EXCLUDE 127.0.0.1``). Returns (driver, profile folder)."""
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not exe.is_file():
            pytest.fail(f"{exe} not found: install Debian's chromium and chromium-driver (`make system`)")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver or a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="book-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
                "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider",
                f"--host-resolver-rules={resolver_rules}",
                "--window-size=1280,900", "--hide-scrollbars", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    opts.add_experimental_option("perfLoggingPrefs", {"enableNetwork": True, "enablePage": False})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver, profile


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium with no network; yields a selenium WebDriver."""
    driver, profile = chromium()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions",
                           {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
