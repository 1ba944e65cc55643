"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch


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


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (tiny nets train faster and identically), restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
