"""A scratch copy of the book with one self-test notebook, to prove the browser check (book_tests/) works.

    .venv/bin/python tools/scratch_book.py [--dest /tmp/scratchbook] [--remote]
    .venv/bin/python -m pytest book_tests/ --book-source /tmp/scratchbook      # must pass
    # then break something and see it fail, e.g.
    rm /tmp/scratchbook/_build/html/_static/vendor/html-manager/embed-amd.js   # widgets: fail
    rm /tmp/scratchbook/_build/html/_images/*.png                              # images: fail

Copies _config.yml, _toc.yml, tools/book_offline.py and book/ (with the vendored JS) to DEST, adds ``book/99_scratch.ipynb`` (a
matplotlib figure, a jshtml animation from ``twostream_lib.viz.animate``, an ipywidgets slider with an
``interactive_output`` plot, display/inline math and a ``text/latex`` output) to its _toc.yml, executes it with
tools/execute_notebook.py (widget state saved) and builds it with tools/build_book.py. Nothing is written in the
repository. ``--remote`` adds an output that loads an image and a script from the network: the source check, the
network check, the image check and the console check must then fail.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

MD = r"""# Scratch: rendering self-test

Inline math $E = mc^2$ and $\alpha_t$, and display math:

$$
\mathcal{L} = -\sum_{c=1}^{C} y_c \log \frac{e^{s_c}}{\sum_k e^{s_k}}
$$
"""

FIGURE = """%matplotlib inline
import numpy as np
import matplotlib.pyplot as plt

x = np.linspace(0, 2 * np.pi, 200)
fig, ax = plt.subplots(figsize=(4, 2.5))
ax.plot(x, np.sin(x))
ax.set_title("a static figure")
plt.show()"""

ANIMATION = """from twostream_lib.viz import animate

t = np.arange(12)
frames = np.zeros((12, 24, 32, 3), np.uint8)
for i in t:
    frames[i, 8:16, 2 + 2 * i: 8 + 2 * i] = (255, 64, 0)
animate(frames, fps=6, title="a moving square")  # its CDN <link> is removed by tools/book_offline.py"""

REMOTE = """from IPython.display import HTML
HTML('<img src="https://example.com/remote.png"> <script src="https://cdn.example.com/x.js"></script>')"""

WIDGET = """import ipywidgets as widgets
from IPython.display import display

slider = widgets.IntSlider(value=2, min=1, max=6, description="k")

def plot(k):
    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.plot(x, np.sin(k * x))
    ax.set_title(f"sin({k} x)")
    plt.show()

display(widgets.VBox([slider, widgets.interactive_output(plot, {"k": slider})]))"""

LATEX = """from IPython.display import Math
Math(r"\\frac{\\partial I}{\\partial x} u + \\frac{\\partial I}{\\partial y} v + \\frac{\\partial I}{\\partial t} = 0")"""


def make(dest: Path, remote: bool = False) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, dest / name)
    subprocess.run(["bash", str(ROOT / "tools" / "vendor_js.sh"), str(ROOT / "book" / "_static" / "vendor")],
                   check=True)
    (dest / "tools").mkdir()
    shutil.copy(ROOT / "tools" / "book_offline.py", dest / "tools" / "book_offline.py")  # local_extensions
    shutil.copytree(ROOT / "book", dest / "book",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    nb = new_notebook(cells=[
        new_markdown_cell(MD),
        new_code_cell(FIGURE),
        new_code_cell(ANIMATION),
        new_code_cell(WIDGET),
        new_code_cell(LATEX),
    ] + ([new_code_cell(REMOTE)] if remote else []), metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = dest / "book" / "99_scratch.ipynb"
    nbformat.write(nb, path)
    toc = yaml.safe_load((dest / "_toc.yml").read_text())
    toc.setdefault("chapters", []).insert(0, {"file": "book/99_scratch"})
    (dest / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dest", type=Path, default=Path("/tmp/scratchbook"))
    ap.add_argument("--remote", action="store_true", help="add an output that loads remote URLs (checks must fail)")
    args = ap.parse_args(argv)
    path = make(args.dest, args.remote)
    py = sys.executable
    rc = subprocess.run([py, str(ROOT / "tools" / "execute_notebook.py"), str(path)]).returncode
    if rc and not args.remote:
        return rc
    rc = subprocess.run([py, str(ROOT / "tools" / "build_book.py"), "--source", str(args.dest)]).returncode
    if rc == 0:
        print(f"scratch book: {args.dest}/_build/html/index.html\n"
              f"check it:     {py} -m pytest {ROOT / 'book_tests'} --book-source {args.dest}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
