"""Open every built page in offline headless Chromium and check that it renders (the README's "Tests").

Per page: no request to a non-file URL, no JS error or failed load in the console, every <img> loaded, figures
and jshtml animations present where the source notebook has them (animations: frames load and stepping changes the
image), ipywidgets rendered and visible where the notebook has widget outputs, math typeset by MathJax (no raw
TeX left), no error tracebacks; a full-page screenshot is saved per page.

Run: `make browser-check` (builds first), or on any build:
    .venv/bin/python -m pytest book_tests/ [--book-source DIR] [--book-html DIR] [--screenshots DIR]
"""
from __future__ import annotations

import base64
import importlib.util
import json
import re
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-error:", "devtools:")
WAIT_S = 20

_spec = importlib.util.spec_from_file_location("execute_notebook", ROOT / "tools" / "execute_notebook.py")
execute_notebook = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute_notebook)


# ---------------------------------------------------------------- what the source notebook says the page must show
def expected_from_source(src: Path, html: Path, page: Path) -> dict:
    """Counts of figures, animations and widget views in the page's source notebook (zeros for .md pages)."""
    exp = {"images": 0, "animations": 0, "widgets": 0, "notebook": None}
    rel = page.relative_to(html).with_suffix("")
    nb_path = src / rel.with_suffix(".ipynb")
    if not nb_path.is_file():
        return exp
    exp["notebook"] = nb_path
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if WIDGET_VIEW in data:  # myst-nb renders the widget, not its fallback image/text
                exp["widgets"] += 1
                continue
            if any(k in data for k in ("image/png", "image/jpeg", "image/svg+xml", "image/gif")):
                exp["images"] += 1
            html_out = data.get("text/html", "")
            html_out = "".join(html_out) if isinstance(html_out, list) else html_out
            exp["animations"] += html_out.count('class="animation"')
    return exp


# ---------------------------------------------------------------- browser helpers
def _drain(driver) -> None:
    driver.get_log("browser")
    driver.get_log("performance")


def _remote_requests(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") in ("Network.requestWillBeSent", "Network.webSocketCreated"):
            url = (msg["params"].get("request") or {}).get("url") or msg["params"].get("url", "")
            if url and not url.startswith(LOCAL_SCHEMES):
                urls.append(url)
    return urls


def _wait(driver, js: str, what: str, failures: list[str], timeout: float = WAIT_S):
    """Poll a JS expression until truthy; record a failure on timeout. Returns the last value."""
    end = time.time() + timeout
    while True:
        value = driver.execute_script(js)
        if value or time.time() > end:
            break
        time.sleep(0.1)
    if not value:
        failures.append(f"timed out after {timeout:.0f} s waiting for {what}")
    return value


def _screenshot(driver, path: Path) -> None:
    m = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = m.get("cssContentSize") or m["contentSize"]
    w, h = min(int(size["width"]), 4000), min(int(size["height"]), 30000)
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


IMAGES_JS = """
return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))
            .map(i => (i.id ? '#' + i.id + ' ' : '') + (i.currentSrc || i.src || '(no src)').slice(0, 120));
"""
ANIMATIONS_JS = """
const out = [];
for (const div of document.querySelectorAll('.animation')) {
  const img = div.querySelector('img[id^="_anim_img"]');
  if (!img) { out.push({error: 'an .animation without its <img>'}); continue; }
  const id = img.id.replace('_anim_img', '');
  const anim = window['anim' + id];
  if (!anim) { out.push({error: 'animation ' + id + ' was never instantiated (its script did not run)'}); continue; }
  const bad = anim.frames.filter(f => !(f.complete && f.naturalWidth > 0)).length;
  anim.pause_animation();
  anim.set_frame(0); const first = img.src;
  anim.set_frame(Math.min(1, anim.frames.length - 1)); const second = img.src;
  out.push({id: id, frames: anim.frames.length, bad: bad, steps: first !== second,
            visible: img.offsetWidth > 0 && img.offsetHeight > 0});
}
return out;
"""
WIDGETS_JS = """
return Array.from(document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')).map(s => {
  const area = s.previousElementSibling;
  const ok = area && area.classList.contains('widget-subarea');
  const parts = ok ? Array.from(area.querySelectorAll('.jupyter-widgets, [class*="widget-"]')) : [];
  const visible = parts.filter(e => e.offsetWidth > 0 && e.offsetHeight > 0).length;
  return {rendered: ok, parts: parts.length, visible: visible,
          box: ok ? [area.offsetWidth, area.offsetHeight] : null,
          classes: parts.slice(0, 6).map(e => e.className).join(' | ')};
});
"""
MATH_JS = """
const nodes = Array.from(document.querySelectorAll('.math'));
const raw = [];
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode: n => {
  for (let e = n.parentElement; e; e = e.parentElement) {
    const t = e.tagName.toLowerCase();
    if (['script', 'style', 'pre', 'code', 'textarea', 'noscript'].includes(t) || t.startsWith('mjx-')
        || e.classList.contains('highlight')) return NodeFilter.FILTER_REJECT;
  }
  return NodeFilter.FILTER_ACCEPT; }});
while (walker.nextNode()) {
  const t = walker.currentNode.textContent;
  const m = t.match(/\\$\\$|\\\\\\(|\\\\\\[|\\\\begin\\{/);
  if (m) raw.push(t.trim().slice(0, 80));
}
return {math: nodes.length, typeset: nodes.filter(n => n.querySelector('mjx-container')).length,
        containers: document.querySelectorAll('mjx-container').length, raw: raw.slice(0, 5)};
"""


# ---------------------------------------------------------------- the tests
def test_book_was_built(book_html):
    pages = list((book_html / "book").rglob("*.html"))
    assert pages, f"no pages under {book_html / 'book'}"
    vendor = book_html / "_static" / "vendor"
    assert (vendor / "require.js").is_file() and (vendor / "mathjax" / "tex-chtml.js").is_file(), \
        f"vendored JS missing under {vendor} (tools/vendor_js.sh)"


def test_source_notebooks(book_source):
    """Executed notebooks carry their widget state and no remote resources (no browser needed)."""
    problems = []
    for nb_path in sorted((book_source / "book").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        problems += [f"{nb_path.name}: {p}" for p in execute_notebook.problems(nb)]
    assert not problems, "\n".join(problems)


def test_page_renders_offline(page, browser, book_html, book_source, screenshot_dir):
    failures: list[str] = []
    exp = expected_from_source(book_source, book_html, page)
    _drain(browser)
    browser.get(page.as_uri())
    if page == book_html / "index.html":
        _wait(browser, "return document.location.pathname.endsWith('/book/intro.html')",
              "the root index.html to redirect to book/intro.html", failures, timeout=10)
    _wait(browser, "return document.readyState === 'complete'", "the page to load", failures)
    page_source = browser.page_source

    # math: MathJax loaded and typeset every math node
    if "mathjax" in page_source.lower() and browser.execute_script("return document.querySelector('.math') !== null"):
        ok = _wait(browser, "return !!(window.MathJax && MathJax.startup && MathJax.startup.promise)",
                   "MathJax to load", failures)
        if ok:
            browser.execute_async_script(
                "const done = arguments[arguments.length - 1];"
                "MathJax.startup.promise.then(() => done(true), e => done(String(e)));")
    # widgets: one rendered, visible widget per widget-view output of the notebook
    n_views = browser.execute_script(
        "return document.querySelectorAll('script[type=\"application/vnd.jupyter.widget-view+json\"]').length")
    if exp["widgets"] and n_views != exp["widgets"]:
        failures.append(f"{exp['notebook'].name} has {exp['widgets']} widget outputs, the page {n_views} widget views")
    if n_views:
        _wait(browser, "return Array.from(document.querySelectorAll("
                       "'script[type=\"application/vnd.jupyter.widget-view+json\"]')).every("
                       "s => s.previousElementSibling && s.previousElementSibling.classList.contains('widget-subarea')"
                       " && s.previousElementSibling.querySelector('.jupyter-widgets'))",
              f"{n_views} ipywidgets to render (html-manager embed-amd.js)", failures)
        for i, w in enumerate(browser.execute_script(WIDGETS_JS)):
            if not w["rendered"] or not w["visible"]:
                failures.append(f"widget {i} not rendered/visible: {w}")
    # animations (to_jshtml): present, frames load, stepping changes the image
    if exp["animations"] or "_anim_img" in page_source:  # instantiated by a setTimeout(0); frames are data: URIs
        _wait(browser, "return Array.from(document.querySelectorAll('.animation img[id^=\"_anim_img\"]')).every("
                       "i => { const a = window['anim' + i.id.replace('_anim_img', '')];"
                       " return a && a.frames.every(f => f.complete); })",
              "jshtml animations to initialise", failures, timeout=10)
    anims = browser.execute_script(ANIMATIONS_JS) if exp["animations"] or "_anim_img" in page_source else []
    if len(anims) < exp["animations"]:
        failures.append(f"{exp['notebook'].name} has {exp['animations']} jshtml animations, the page {len(anims)}")
    for a in anims:
        if "error" in a:
            failures.append(a["error"])
        elif a["frames"] < 2 or a["bad"] or not a["steps"] or not a["visible"]:
            failures.append(f"animation {a['id']} broken: {a}")
    # images: scroll through the page (lazy images), then every <img> must have loaded
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    _wait(browser, "return Array.from(document.images).every(i => i.complete)", "images to finish loading",
          failures, timeout=10)
    browser.execute_script("window.scrollTo(0, 0)")
    broken = browser.execute_script(IMAGES_JS)
    if broken:
        failures.append(f"{len(broken)} images did not load: {broken[:5]}")
    n_fig = browser.execute_script("return document.querySelectorAll('.cell_output img').length")
    n_fig -= len(anims)  # the animation <img>s are counted separately
    if n_fig < exp["images"]:
        failures.append(f"{exp['notebook'].name} has {exp['images']} figure outputs, the page shows {n_fig}")
    # math typeset, no raw TeX
    m = browser.execute_script(MATH_JS)
    if m["typeset"] < m["math"]:
        failures.append(f"math not typeset by MathJax: {m['typeset']} of {m['math']} math elements ({m})")
    if m["raw"]:
        failures.append(f"raw TeX left in the page: {m['raw']}")
    # no error outputs
    n_tb = browser.execute_script("return document.querySelectorAll('.cell_output .traceback').length")
    if n_tb:
        failures.append(f"{n_tb} error tracebacks in cell outputs")

    time.sleep(0.2)  # let late console messages arrive
    shot = screenshot_dir / (str(page.relative_to(book_html)).replace("/", "__").replace(".html", ".png"))
    _screenshot(browser, shot)
    errors = [f"{e['level']}: {e['message'][:300]}" for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    if errors:
        failures.append("console errors:\n    " + "\n    ".join(errors))
    remote = _remote_requests(browser)
    if remote:
        failures.append("requests to non-file URLs (the page must work offline):\n    " + "\n    ".join(remote))
    assert not failures, f"{page.relative_to(book_html)} (screenshot {shot}):\n  " + "\n  ".join(failures)
