"""Sphinx extension (loaded by _config.yml `local_extensions`): small fixes so the built pages work offline and
without console errors. Every fix is checked by book_tests/.

* matplotlib's ``Animation.to_jshtml()`` (our ``twostream_lib.viz.animate``) puts
  ``<link rel="stylesheet" href="https://maxcdn.bootstrapcdn.com/font-awesome/4.4.0/css/font-awesome.min.css">``
  in its output: a network request on every page with an animation. It is removed from the rendered HTML; the
  theme's own Font Awesome (served locally) draws the ``fa fa-play`` etc. button icons.
* Jupyter Book 1 ends up with sphinx-thebe's (and sphinx-togglebutton's) inline script twice on every page, once
  with filename None and once with "" (so Sphinx's own de-duplication misses it): ``const THEBE_JS_URL`` declared
  twice is "SyntaxError: Identifier 'THEBE_JS_URL' has already been declared". Identical scripts are written once.
* A build that executes the notebooks (``make book EXECUTE=force``) runs myst-nb's nbclient with the wake-up fix of
  tools/nbexec.py (a missed socket wake-up otherwise stalls a cell for the whole timeout).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from docutils import nodes

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbexec import install_wakeup_fix  # noqa: E402

JSHTML_CDN_LINK = re.compile(
    r"""<link\s+rel=["']stylesheet["']\s+href=["']https?://[^"']*font-awesome[^"']*["']\s*/?>""", re.I)


def strip_jshtml_cdn(app, doctree) -> None:
    for node in list(doctree.findall(nodes.raw)):
        if "html" in node.get("format", "").split() and JSHTML_CDN_LINK.search(node.astext()):
            text = JSHTML_CDN_LINK.sub("", node.astext())
            new = nodes.raw(text, text, **{k: v for k, v in node.attributes.items() if k not in ("ids",)})
            node.replace_self(new)


def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        attrs = getattr(js, "attributes", {}) or {}
        key = (getattr(js, "filename", None) or None, tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            kept.append(js)
    scripts[:] = kept


def setup(app):
    install_wakeup_fix()
    app.connect("doctree-read", strip_jshtml_cdn)
    app.connect("html-page-context", dedupe_scripts)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
