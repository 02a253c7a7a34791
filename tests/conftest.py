"""Shared fixtures: real MNIST, got the way the product gets it (``vaesweep data fetch``'s code).

Once per session the user's cache (``$VAESWEEP_DATA_DIR``, else ``~/.cache/vaesweep/mnist``) is
filled by ``vae.fetch.fetch_mnist``, unless it already holds verified files: from a local copy of
the idx files when there is one (``$VAESWEEP_TEST_MNIST``, default ``../shared/data/mnist``: CI has
no network), else by the download routes. Tests that need MNIST skip only if every route failed,
and then all of them with the same one-line reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vae.mnist import default_data_dir
from vae.errors import DataError
from vae.fetch import fetch_mnist

REPO = Path(__file__).resolve().parents[1]
# A local copy of the idx files (raw or .gz) to fill the cache from; the download routes when it is absent.
SHARED_MNIST = Path(os.environ.get("VAESWEEP_TEST_MNIST", REPO.parent / "shared" / "data" / "mnist"))
NO_MNIST = "MNIST unavailable, every test that needs it skips"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs two workers) each worker's torch gets its share of the
    cores, so that two workers' matrix products do not fight over the same ones."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The verified MNIST cache (torchvision layout, raw idx files); a user's filled cache is reused."""
    source = SHARED_MNIST if SHARED_MNIST.is_dir() else None
    cache = default_data_dir()
    try:
        try:
            return fetch_mnist(cache, source, log=lambda _: None)
        except OSError:  # a read-only home: the session gets a cache of its own
            return fetch_mnist(tmp_path_factory.mktemp("mnist-cache"), source, log=lambda _: None)
    except DataError as err:
        pytest.skip(f"{NO_MNIST}: {err}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Report every skip for want of MNIST at this file, so that the summary folds them into one line
    (pytest would report each at its own test, one line per test)."""
    report = yield
    if report.skipped and isinstance(report.longrepr, tuple) and NO_MNIST in report.longrepr[2]:
        report.longrepr = (__file__, None, report.longrepr[2])
    return report
