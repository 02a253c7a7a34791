"""Test hooks: environment variables that only the test suite sets, unset in normal use. They travel
through the environment because they must reach Ray's worker processes (the first two) or a driver
that a test starts as a command (the third); each is read where it acts, through the function here."""

from __future__ import annotations

import os

# The first attempt of every trial raises after this epoch (a marker file in the trial directory makes
# the retry pass): tests/test_faults.py, tests/test_sweep.py.
FAIL_ONCE_ENV = "VAESWEEP_FAIL_ONCE_AT_EPOCH"
# "1": a CPU trial's steps go through EagerGraphs (the GPU path's calls, each step eager); "fail": its first
# capture raises as well, so the sweep tests see graphs, and their fallback, without a GPU.
EAGER_GRAPHS_ENV = "VAESWEEP_EAGER_GRAPHS"
# Seconds between the driver's MLflow writer rounds (MLflow's lag behind Ray at most); default 10.
FLUSH_ENV = "VAESWEEP_MLFLOW_FLUSH_S"


def fail_once_at() -> int | None:
    value = os.environ.get(FAIL_ONCE_ENV)
    return int(value) if value else None


def eager_graphs() -> str | None:
    """None, "1" or "fail"."""
    return os.environ.get(EAGER_GRAPHS_ENV) if os.environ.get(EAGER_GRAPHS_ENV) in ("1", "fail") else None


def flush_seconds() -> float:
    return float(os.environ.get(FLUSH_ENV, "10"))
