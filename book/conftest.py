"""nbval on the chapters (``pytest --nbval-lax book/``): a per-cell timeout sized to each chapter, and a stall that
fails at once with the cell named.

* Each notebook's cells get :func:`nbexec.cell_timeout` of that notebook (its longest recorded cell x 3, at least
  5 minutes) instead of nbval's one value for every notebook (2000 s). An explicit ``--nbval-cell-timeout N``
  still wins.
* nbval lets a timed-out cell *pass* when the interrupted kernel then reports idle, and marks the rest xfail, so a
  stall could end green. Here a cell that timed out fails, naming the notebook, the cell and its first line, and
  the notebook's kernel is stopped (nbval stops it at the end of the notebook in any case).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from nbexec import cell_timeout, describe  # noqa: E402

NBVAL_DEFAULT_TIMEOUT = 2000  # nbval's own default for --nbval-cell-timeout


def _notebook_timeout(nb_item) -> int:
    if not hasattr(nb_item, "_cell_timeout"):
        nb_item._cell_timeout = cell_timeout(nb_item.nb)
    return nb_item._cell_timeout


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    nb_item = item.parent
    if not hasattr(nb_item, "nb") or not hasattr(item, "cell"):  # not an nbval cell
        return (yield)
    option = item.config.option
    explicit = float(option.nbval_cell_timeout) != NBVAL_DEFAULT_TIMEOUT
    timeout = float(option.nbval_cell_timeout) if explicit else _notebook_timeout(nb_item)
    saved, option.nbval_cell_timeout = option.nbval_cell_timeout, timeout
    timed_out_before = nb_item.timed_out
    try:
        result = yield
    finally:
        option.nbval_cell_timeout = saved
    if nb_item.timed_out and not timed_out_before:
        if nb_item.kernel is not None and nb_item.kernel.is_alive():
            nb_item.kernel.stop()
        index = next(i for i, c in enumerate(nb_item.nb.cells) if c is item.cell)  # nbval counts code cells only
        pytest.fail(f"{describe(nb_item.fspath, index, item.cell.source)} (nbval's Cell {item.cell_num}): no reply "
                    f"after {timeout:g} s, the per-cell timeout (a stalled kernel or a cell that never ends); "
                    "the kernel was stopped", pytrace=False)
    return result
