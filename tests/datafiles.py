"""The shared real datasets for the data-driven tests: read from the folder named by
$W1OT_DATA (CI sets it), else ../shared/data beside the repository; a test that needs them
is skipped, saying why, when neither exists."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import anndata
import pytest


def data_dir() -> Path:
    """The folder with the shared .h5ad files: $W1OT_DATA, else ../shared/data beside the
    repository; skips the test when neither exists."""
    env = os.environ.get("W1OT_DATA")
    if env:
        path = Path(env)
        if not path.is_dir():
            pytest.skip(f"W1OT_DATA={env} is not a directory")
        return path
    fallback = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if fallback.is_dir():
        return fallback
    pytest.skip("real datasets not found: set W1OT_DATA to the folder with the .h5ad files")


def read_dataset(name: str):
    path = data_dir() / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # old-format notices of the files
        return anndata.read_h5ad(path)
