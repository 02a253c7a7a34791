"""MLflow records of a sweep as every side reads them: one parent run per sweep (tag ``vaesweep.sweep``),
exactly one child run per grid point (or search trial), the tags that identify them and the searches
that find them. The driver's writing side is sweeps/driver/run_writer.py.

- a child run is found in a grid sweep by its grid point (tags ``alpha``/``k``/``seed``, so a sweep
  rebuilt with new Ray trial ids keeps it), in a search by its Ray trial id (tag ``ray_trial_id``);
- runs end FINISHED (every epoch ran, or a scheduler stopped the trial: tag ``stopped_early``),
  FAILED (an exception; tag ``last_error``) or KILLED (the sweep was interrupted).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlflow.tracking import MlflowClient

from analysis.metrics import MetricName
from sweeps.packs import STEP_MODE_KEY


SWEEP_TAG = "vaesweep.sweep"  # carried by the parent run only (children carry mlflow.parentRunId)
TRIAL_TAG = "ray_trial_id"
PARENT_TAG = "mlflow.parentRunId"
HISTORY_KEY = MetricName.train_vr_bound_alpha  # logged every epoch: its steps say which epochs a run holds
ERROR_TAG = "last_error"  # why a run failed (the exception's first line)
STOPPED_TAG = "stopped_early"  # the epoch at which a scheduler (ASHA) stopped a trial
STEP_MODE_TAG = STEP_MODE_KEY  # how the run's training steps ran (the result's key names the run's tag)
ESTIMATE_TAG = "vaesweep.estimate"  # on the parent run: the cost estimate the run started with


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {'train.k': '30', ...} (MLflow params are strings)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat
SEARCH_PAGE = 1000  # runs per search call: MLflow answers at most this many by default, then a page token


def find_runs(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> list:
    """Every run of the experiment whose tags equal ``tags`` (oldest first), page after page: one
    search call would silently stop at 1,000 runs."""
    clause = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=clause, max_results=SEARCH_PAGE,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def child_runs(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list:
    return find_runs(client, experiment_id, {PARENT_TAG: parent_run_id})


def logged_epochs(client: MlflowClient, run_id: str) -> set[int]:
    """Epochs a run already holds (each epoch's metrics are one log_batch, so one key tells)."""
    return {int(m.step) for m in client.get_metric_history(run_id, HISTORY_KEY)}
