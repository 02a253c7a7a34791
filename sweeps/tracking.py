"""MLflow records of a sweep: one parent run per sweep, exactly one child run per trial.

Ray's MLflow helpers neither nest runs nor survive ``Tuner.restore`` without duplicating them
(shared/reference/systems.md), so the logging is ours, through ``MlflowClient``:

- the driver finds or creates the parent run (tag ``vaesweep.sweep``) and the experiment;
- a trial finds its child run by its Ray trial id (tag ``ray_trial_id``) or creates it, so a
  retried or restored trial keeps one run, and it skips epochs that run already holds;
- every call is guarded: a tracking outage prints one warning and training goes on (the results
  stay in Ray's trial results; replaying them into MLflow is not built yet).
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

SWEEP_TAG = "vaesweep.sweep"  # carried by the parent run only (children carry mlflow.parentRunId)
TRIAL_TAG = "ray_trial_id"
PARENT_TAG = "mlflow.parentRunId"
FAILED = object()  # what a guarded call returns when MLflow failed
HISTORY_KEY = "train_vr_bound_alpha"  # logged every epoch: its steps say which epochs a run holds
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


class TrialTracker:
    """The child run of one trial; every method is a no-op after printing a warning if MLflow fails."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, trial_id: str) -> None:
        os.environ.update({k: v for k, v in CLIENT_ENV.items() if k not in os.environ})
        self.client = MlflowClient(tracking_uri)
        self.experiment_id, self.parent_run_id, self.trial_id = experiment_id, parent_run_id, trial_id
        self.run_id: str | None = None
        self.logged_epochs: set[int] = set()
        self.warned = False

    def _guard(self, action: str, fn, *args, **kwargs) -> Any:
        """``fn(*args, **kwargs)``, or FAILED after a warning (printed once per trial)."""
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - tracking must never kill a trial
            if not self.warned:
                print(f"vaesweep: MLflow unavailable ({action}: {str(err).splitlines()[0][:200]}); "
                      "training continues; the results stay in Ray's trial results (vaesweep status)", file=sys.stderr)
                self.warned = True
            return FAILED

    def start(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> str | None:
        """Adopt this trial's run (after a retry or restore) or create it; returns its id."""
        run_id = self._guard("start", self._start, run_name, tags, params)
        self.run_id = None if run_id is FAILED else run_id
        return self.run_id

    def _start(self, run_name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
        key = {TRIAL_TAG: self.trial_id, PARENT_TAG: self.parent_run_id}
        run_id, adopted = adopt_or_create_run(self.client, self.experiment_id, key, run_name, tags, params)
        if adopted:
            self.logged_epochs = {int(m.step) for m in self.client.get_metric_history(run_id, HISTORY_KEY)}
        return run_id

    def log_epoch(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Per-epoch metrics with step = epoch, once per epoch even across retries."""
        if self.run_id is None or epoch in self.logged_epochs:
            return
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, epoch) for k, v in numeric(metrics).items()]
        if self._guard("log metrics", self.client.log_batch, self.run_id, metrics=batch) is not FAILED:
            self.logged_epochs.add(epoch)

    def log_series(self, key: str, values: list[float]) -> None:
        """A metric indexed by position (step 1..n), e.g. a PCA spectrum; logged once per run."""
        if self.run_id is None:
            return
        history = self._guard("read history", self.client.get_metric_history, self.run_id, key)
        if history is FAILED or history:
            return
        now = int(time.time() * 1000)
        batch = [Metric(key, float(v), now, step) for step, v in enumerate(values, start=1)]
        self._guard("log series", self.client.log_batch, self.run_id, metrics=batch)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        if self.run_id is not None:
            self._guard("log artifacts", self.client.log_artifacts, self.run_id, str(local_dir), artifact_path)

    def end(self, status: str) -> None:
        if self.run_id is not None:
            self._guard("end run", self.client.set_terminated, self.run_id, status)

