"""Shared fixtures: the real MNIST copy in ../shared/data/mnist (tests skip when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = Path(os.environ.get("VAESWEEP_TEST_MNIST", REPO.parent / "shared" / "data" / "mnist"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The shared gzipped idx files; skip with the reason if this checkout has no ../shared."""
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {SHARED_MNIST} (set VAESWEEP_TEST_MNIST to a folder of idx files)")
    return SHARED_MNIST
