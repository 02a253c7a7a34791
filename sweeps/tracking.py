"""MLflow records of a sweep: one parent run per sweep, exactly one child run per trial.

Ray's MLflow helpers neither nest runs nor survive ``Tuner.restore`` without duplicating them
(shared/reference/systems.md), so the logging is ours, through ``MlflowClient``:

- the driver finds or creates the parent run (tag ``vaesweep.sweep``) and the experiment;
- a trial finds its child run by its Ray trial id (tag ``ray_trial_id``) or creates it, so a
  retried or restored trial keeps one run, and it skips epochs that run already holds;
- every call is guarded: a tracking outage prints one warning and training goes on; the results
  stay in Ray's trial results and ``vaesweep sync`` (sweeps/sync.py) replays them later.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from vae.checkpoint import CHECKPOINT_NAME

SWEEP_TAG = "vaesweep.sweep"  # carried by the parent run only (children carry mlflow.parentRunId)
TRIAL_TAG = "ray_trial_id"
PARENT_TAG = "mlflow.parentRunId"
FAILED = object()  # what a guarded call returns when MLflow failed
HISTORY_KEY = "train_vr_bound_alpha"  # logged every epoch: its steps say which epochs a run holds
EIGENVALUE_KEY = "pca_eigenvalue"  # a trial's PCA spectrum as a metric with step = component
ERROR_TAG = "last_error"  # why a run failed (the exception's first line)
ANALYSIS_DIR = "analysis"  # the final analysis: a folder of the final checkpoint and an artifact folder
# Fail fast when the server is down: MLflow's client would otherwise retry for minutes per call.
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
              "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {'train.k': '30', ...} (MLflow params are strings)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The float-valued entries (MLflow metrics are numbers)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """The flattened config as params (values cut to MLflow's 6000-character limit)."""
    client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in flatten(params).items()])


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # noqa: BLE001 - another process created it first
        return client.get_experiment_by_name(name).experiment_id


def find_runs(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> list:
    """Runs of the experiment whose tags equal ``tags`` (oldest first)."""
    clause = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return client.search_runs([experiment_id], filter_string=clause, order_by=["attributes.start_time ASC"])


def adopt_or_create_run(client: MlflowClient, experiment_id: str, key_tags: Mapping[str, str], run_name: str,
                        tags: Mapping[str, str], params: Mapping[str, Any]) -> tuple[str, bool]:
    """(run id, adopted): the oldest run carrying ``key_tags`` set RUNNING again, else a new run with
    ``key_tags`` + ``tags`` and the params. Keys are exact, so a restart never duplicates a run."""
    existing = find_runs(client, experiment_id, key_tags)
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        if tags:
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        return run_id, True
    run = client.create_run(experiment_id, run_name=run_name, tags={**tags, **key_tags})
    log_params(client, run.info.run_id, params)
    return run.info.run_id, False


def ensure_parent_run(client: MlflowClient, experiment_id: str, sweep: str, params: Mapping[str, Any]) -> str:
    """The sweep's parent run id: the existing one (set RUNNING again) or a new one with the config."""
    return adopt_or_create_run(client, experiment_id, {SWEEP_TAG: sweep}, sweep, {}, params)[0]


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list:
    return find_runs(client, experiment_id, {PARENT_TAG: parent_run_id})


def epoch_metrics(epoch: int, metrics: Mapping[str, Any]) -> list[Metric]:
    """One epoch's numeric metrics as MLflow metrics with step = epoch."""
    now = int(time.time() * 1000)
    return [Metric(k, v, now, epoch) for k, v in numeric(metrics).items()]


def logged_epochs(client: MlflowClient, run_id: str) -> set[int]:
    """Epochs a run already holds (each epoch's metrics are one log_batch, so one key tells)."""
    return {int(m.step) for m in client.get_metric_history(run_id, HISTORY_KEY)}


def log_final(client: MlflowClient, run_id: str, checkpoint_dir: Path, eigenvalues: list[float]) -> bool:
    """A finished trial's PCA spectrum (metric, step = component), its analysis folder and final
    checkpoint (artifacts); each only if the run lacks it, so a replay adds nothing twice. True if
    anything was added."""
    added = False
    if not client.get_metric_history(run_id, EIGENVALUE_KEY):
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(EIGENVALUE_KEY, float(v), now, step)
                                          for step, v in enumerate(eigenvalues, start=1)])
        added = True
    present = {a.path for a in client.list_artifacts(run_id)}
    if ANALYSIS_DIR not in present:
        client.log_artifacts(run_id, str(checkpoint_dir / ANALYSIS_DIR), ANALYSIS_DIR)
        added = True
    if "checkpoint" not in present:
        client.log_artifact(run_id, str(checkpoint_dir / CHECKPOINT_NAME), "checkpoint")
        added = True
    return added


class TrialTracker:
    """The child run of one trial, written from inside the trial.

    MLflow failing never fails the trial: the first error prints one warning and the tracker stops
    calling MLflow for the rest of this attempt (each call to a dead server would stall the epoch).
    Ray's trial results keep everything; ``vaesweep sync`` replays what MLflow missed.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str, sweep: str) -> None:
        os.environ.update({k: v for k, v in CLIENT_ENV.items() if k not in os.environ})
        self.client = MlflowClient(tracking_uri)
        self.experiment_id, self.parent_run_id, self.trial_id, self.sweep = experiment_id, parent_run_id, trial_id, sweep
        self.run_id: str | None = None  # kept after an outage: Ray's results still name the run
        self.down = False
        self.logged: set[int] = set()

    def _guard(self, action: str, fn, *args, **kwargs) -> Any:
        """``fn(*args, **kwargs)``, or FAILED (and no more MLflow calls) after one warning."""
        if self.down or (self.run_id is None and action != "start"):
            return FAILED
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - tracking must never kill a trial
            print(f"vaesweep: MLflow unavailable ({action}: {str(err).splitlines()[0][:200]}); training goes on "
                  f"untracked; the results stay in Ray's trial results: run `vaesweep sync {self.sweep}` "
                  "once the server is back", file=sys.stderr)
            self.down = True
            return FAILED

    def start(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> None:
        """Adopt this trial's run (after a retry or restore) or create it."""
        key = {TRIAL_TAG: self.trial_id, PARENT_TAG: self.parent_run_id}
        started = self._guard("start", adopt_or_create_run, self.client, self.experiment_id, key, run_name, tags, params)
        if started is not FAILED:
            self.run_id = started[0]
            logged = self._guard("read history", logged_epochs, self.client, self.run_id)
            self.logged = set() if logged is FAILED else logged

    def log_epoch(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Per-epoch metrics with step = epoch, once per epoch even across retries."""
        if epoch in self.logged:
            return
        if self._guard("log metrics", self.client.log_batch, self.run_id, metrics=epoch_metrics(epoch, metrics)) is not FAILED:
            self.logged.add(epoch)

    def log_final(self, checkpoint_dir: Path, eigenvalues: list[float]) -> None:
        self._guard("log final artifacts", log_final, self.client, self.run_id, checkpoint_dir, eigenvalues)

    def fail(self, message: str) -> None:
        """Mark the run FAILED with the error's first line as the ``last_error`` tag."""
        self._guard("set error", self.client.set_tag, self.run_id, ERROR_TAG, message.splitlines()[0][:500] if message else "")
        self.end("FAILED")

    def end(self, status: str) -> None:
        self._guard("end run", self.client.set_terminated, self.run_id, status)
