"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lab_root_tiny(tmp_path_factory) -> Path:
    """The tiny lab datasets (seed 0, with GT flow), generated once per test session.

    Returns the lab root: ``<root>/lab-ucf`` (UCF-101 layout) and ``<root>/lab-hmdb``
    (HMDB-51 layout). Treat it as read-only: other tests share it.
    """
    from twostream_lib.lab import make_lab_datasets

    root = tmp_path_factory.mktemp("lab_tiny")
    make_lab_datasets(root, scale="tiny", seed=0, workers=1, gt_flow=True, progress=False)
    return root
