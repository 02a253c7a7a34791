"""The driver's side of a sweep's MLflow records: the driver is their only writer. ``TrialRuns`` turns
Ray's trial records (per-epoch results, the final checkpoint folder, the error) into child runs, called
live by the driver's Tune callback (sweeps/driver/mlflow_callback.py) and afterwards by ``vaesweep sync``
(sweeps/driver/sync.py) through the same code. Ray's MLflow helpers neither nest runs nor survive
``Tuner.restore`` without duplicating them, so the logging is ours, through ``MlflowClient``: a
retried, restored or rebuilt trial keeps one run (found by the tags of sweeps/tracking.py), and epochs
a run already holds are not logged again.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from analysis.metrics import ANALYSIS_FILE, EIGENVALUE_KEY, GRID, SCHEMA
from sweeps.config import SweepConfig
from sweeps.driver.epoch_batches import EpochBatches
from sweeps.layout import ANALYSIS_DIR, add_run_id
from sweeps.packs import NODE_KEY, STEP_MODE_KEY
from sweeps.tracking import (ERROR_TAG, PARENT_TAG, STEP_MODE_TAG, STOPPED_TAG, SWEEP_TAG, TRIAL_TAG, child_runs,
                             find_runs, flatten, logged_epochs)
from vae.checkpoint import CHECKPOINT_NAME
from vae.config import TrainConfig, grid_point_label
from vae.data_spec import spec_title


def schema_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The metrics of a trial result (analysis/metrics.py's schema), without the keys Ray adds."""
    return {k: float(v) for k, v in result.items() if k in SCHEMA}


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """The flattened config as params (values cut to MLflow's 6000-character limit)."""
    client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in flatten(params).items()])


# Without this tag MLflow 3's UI guesses the experiment's kind and may open it in GenAI mode, on an
# empty "Traces" page; with it, the experiment opens on its runs.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """The experiment's id: created, or adopted (restored if deleted); either way tagged as model development."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, tags=dict([EXPERIMENT_KIND]))
        except Exception:  # noqa: BLE001 - another process created it first
            experiment = client.get_experiment_by_name(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    key, kind = EXPERIMENT_KIND
    if experiment.tags.get(key) != kind:
        client.set_experiment_tag(experiment.experiment_id, key, kind)
    return experiment.experiment_id


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


def epoch_metrics(epoch: int, metrics: Mapping[str, Any]) -> list[Metric]:
    """One epoch's schema metrics as MLflow metrics with step = epoch."""
    now = int(time.time() * 1000)
    return [Metric(k, v, now, epoch) for k, v in schema_metrics(metrics).items()]


def log_final(client: MlflowClient, run_id: str, checkpoint_dir: Path, analysis: Mapping[str, Any]) -> bool:
    """A finished trial's PCA spectrum (metric, step = component), its analysis folder and final
    checkpoint (artifacts); each only if the run lacks it, so a replay adds nothing twice. A run whose
    analysis is of an earlier epoch (a sweep trained longer) gets them anew: the spectrum logged again
    (readers keep each step's newest value), the earlier analysis kept as ``analysis-epoch-E``. True if
    anything was added."""
    present = {a.path for a in client.list_artifacts(run_id)}
    earlier = logged_analysis_epoch(client, run_id) if ANALYSIS_DIR in present else None
    if earlier is not None and earlier < analysis["epoch"]:
        with tempfile.TemporaryDirectory() as tmp:
            kept = client.download_artifacts(run_id, ANALYSIS_DIR, tmp)
            client.log_artifacts(run_id, kept, f"{ANALYSIS_DIR}-epoch-{earlier}")
        present -= {ANALYSIS_DIR, "checkpoint"}
    added = False
    if earlier is not None and earlier < analysis["epoch"] or not client.get_metric_history(run_id, EIGENVALUE_KEY):
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(EIGENVALUE_KEY, float(v), now, step)
                                          for step, v in enumerate(analysis["eigenvalues"], start=1)])
        added = True
    if ANALYSIS_DIR not in present:
        client.log_artifacts(run_id, str(checkpoint_dir / ANALYSIS_DIR), ANALYSIS_DIR)
        added = True
    if "checkpoint" not in present:
        client.log_artifact(run_id, str(checkpoint_dir / CHECKPOINT_NAME), "checkpoint")
        added = True
    return added


def logged_analysis_epoch(client: MlflowClient, run_id: str) -> int | None:
    """The epoch of the analysis a run holds (None when it cannot be read)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, f"{ANALYSIS_DIR}/{ANALYSIS_FILE}", tmp)
            return int(json.loads(Path(path).read_text())["epoch"])
        except (OSError, ValueError, KeyError, MlflowException):
            return None


def run_identity(sweep: SweepConfig, config: TrainConfig, node_id: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(run name, tags, params) of a trial's MLflow run (the node tag only when the node is known)."""
    tags = {"sweep": sweep.name, "data": spec_title(config.data), "alpha": f"{config.alpha:g}", "k": str(config.k),
            "seed": str(config.seed), **({NODE_KEY: node_id} if node_id else {})}
    return grid_point_label(config.alpha, config.k, config.seed), tags, {"trial": config.model_dump(), "eval": sweep.eval.model_dump()}


class TrialRuns:
    """The child runs of one sweep's grid points (or search trials): one run each through retries,
    restores, rebuilds and replays, whether a point trains alone or in a pack. The driver's Tune
    callback and ``vaesweep sync`` write through it, by the key ``open`` returns."""

    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str, sweep: SweepConfig,
                 batches: EpochBatches | None = None) -> None:
        """``batches``: queue epoch records for a writer thread (the live driver) instead of sending each."""
        self.client, self.experiment_id, self.parent_run_id, self.sweep = client, experiment_id, parent_run_id, sweep
        self.batches = batches
        self.run_ids: dict[str, str] = {}  # key -> run id
        self.logged: dict[str, set[int]] = {}  # epochs each run holds
        self.step_modes: dict[str, str] = {}  # the step mode each run's tag holds (as this writer set it)
        self.created = 0

    def open(self, trial_id: str, point: Mapping[str, Any], node_id: str = "") -> str:
        """The key of the point's run (its label in a grid sweep, the Ray trial id in a search): on
        first sight the run is adopted (set RUNNING again) or created. A grid point has one run whatever
        its Ray trial (a rebuilt sweep has new trial ids, a pack trains several points), so a grid
        sweep's runs are found by point and tagged with the current trial; a search's by trial id."""
        key = grid_point_label(point["alpha"], point["k"], point["seed"]) if self.sweep.search == "grid" else trial_id
        if key not in self.run_ids:  # (validating the point's config per result would cost the driver P times)
            name, tags, params = run_identity(self.sweep, self.sweep.point_config(point), node_id)
            if self.sweep.search == "grid":
                match = {PARENT_TAG: self.parent_run_id, **{k: tags[k] for k in GRID}}
                tags = {**tags, TRIAL_TAG: trial_id}
            else:
                match = {TRIAL_TAG: trial_id, PARENT_TAG: self.parent_run_id}
            run_id, adopted = adopt_or_create_run(self.client, self.experiment_id, match, name, tags, params)
            self.run_ids[key] = run_id
            add_run_id(self.sweep.sweep_dir(), key, run_id)
            self.logged[key] = logged_epochs(self.client, run_id) if adopted else set()
            self.created += not adopted
        return key

    def log_epoch(self, key: str, result: Mapping[str, Any]) -> bool:
        """One epoch's result (step = epoch) unless the run holds that epoch; True if logged. The trial's
        step mode goes into the same request as a tag whenever it differs from the last one set."""
        epoch = int(result["epoch"])
        if epoch in self.logged[key]:
            return False
        mode = result.get(STEP_MODE_KEY)
        tags = {STEP_MODE_TAG: mode} if mode and self.step_modes.get(key) != mode else {}
        if self.batches is not None:
            self.batches.add(self.run_ids[key], epoch_metrics(epoch, result), tags)
        else:
            self.client.log_batch(self.run_ids[key], metrics=epoch_metrics(epoch, result),
                                  tags=[RunTag(name, value) for name, value in tags.items()])
        if tags:
            self.step_modes[key] = mode
        self.logged[key].add(epoch)
        return True

    def log_final(self, key: str, checkpoint_dir: Path) -> bool:
        """The spectrum, analysis and checkpoint of a final checkpoint folder, if the run lacks them."""
        analysis = json.loads((checkpoint_dir / ANALYSIS_DIR / ANALYSIS_FILE).read_text())
        return log_final(self.client, self.run_ids[key], checkpoint_dir, analysis)

    def close(self, key: str, status: str, error: str | None = None, stopped_at: int | None = None,
              traceback: str | Path | None = None) -> None:
        """End the run as ``status``, with the error's first line (and Ray's error file with its traceback,
        as the artifact ``error.txt``) or the epoch a scheduler stopped it at (its queued epochs sent first)."""
        if self.batches is not None:
            self.batches.flush(self.run_ids[key])
        if traceback is not None and Path(traceback).is_file():
            self.client.log_artifact(self.run_ids[key], str(traceback))
        tags = [RunTag(ERROR_TAG, error.splitlines()[0][:500])] if error else []
        if stopped_at is not None:
            tags.append(RunTag(STOPPED_TAG, str(stopped_at)))
        if tags:
            self.client.log_batch(self.run_ids[key], tags=tags)
        self.client.set_terminated(self.run_ids[key], status)


# Ray's trial states -> MLflow run states (a trial that is neither done nor failed was interrupted).
RUN_STATUS = {"TERMINATED": "FINISHED", "ERROR": "FAILED"}


def close_sweep(client: MlflowClient, experiment_id: str, parent_run_id: str, status: str,
                trial_states: Mapping[str, str]) -> int:
    """End the parent run as ``status`` and any child run still RUNNING as its trial's Ray state says
    (``trial_states``: trial id -> Ray state; KILLED when unfinished or unknown); returns how many."""
    running = [r for r in child_runs(client, experiment_id, parent_run_id) if r.info.status == "RUNNING"]
    for run in running:
        state = trial_states.get(run.data.tags.get(TRIAL_TAG, ""), "")
        client.set_terminated(run.info.run_id, RUN_STATUS.get(state, "KILLED"))
    client.set_terminated(parent_run_id, status)
    return len(running)
