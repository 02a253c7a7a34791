"""The process environment, written only here, and only for what reads it from there: third-party
libraries (Ray, Tune, MLflow) that take settings from it, and Ray's worker processes, which inherit
it. vaesweep's own objects never pass each other anything through it. Each variable says why."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

# Ray's local-only mode: the node IP is 127.0.0.1 and every Ray server binds loopback. Ray reads it when
# it is imported (sweeps/driver/local_ray.py).
RAY_LOCAL_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# A token the user set for Ray's authentication, left as it is.
RAY_TOKEN_SETTINGS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE")
# MLflow clients that give up on a dead server within seconds: MLflow's client would otherwise retry for
# minutes per call (7 retries with a doubling backoff: a report whose own server was killed mid-read
# waited 514 s).
FAIL_FAST_MLFLOW = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


@contextlib.contextmanager
def scoped(values: dict[str, str]) -> Iterator[None]:
    """``values`` set inside; each variable as it was afterwards (removed if it was unset)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def private_local_ray() -> dict[str, str]:
    """What a local sweep's Ray reads: local-only mode, and a fresh token for its authentication that its
    processes inherit and no file holds (unless the user set one)."""
    values = {RAY_LOCAL_ONLY: "0"}
    if not set(RAY_TOKEN_SETTINGS) & os.environ.keys():
        values |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    return values


def quiet_libraries(verbose: bool) -> None:
    """The driver's console keeps to vaesweep's lines: MLflow prints no "View run" link to a server gone a
    minute later; without ``verbose``, Tune's legacy reporter (silent at verbose=0) and no warning about
    the experiment snapshot Tune forces after every num_to_keep checkpoints (by design here)."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "1"
    no_artifact_progress_bars()  # the driver downloads a run's analysis.json to compare its epoch
    if not verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def tune_leaves_sigint_alone() -> None:
    """Tune installs no SIGINT handler of its own: the driver's (sweeps/driver/interruption.py) takes
    SIGINT and SIGTERM the same way, through Tune's stop handler on SIGUSR1."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"


def no_artifact_progress_bars() -> None:
    """MLflow draws no progress bar per artifact the report downloads."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def fail_fast_mlflow_clients() -> None:
    """``FAIL_FAST_MLFLOW`` for the MLflow clients of this process, unless the user set them."""
    os.environ.update({k: v for k, v in FAIL_FAST_MLFLOW.items() if k not in os.environ})
