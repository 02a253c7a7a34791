"""Read a sweep's child runs from MLflow (any store: the embedded one or a server) as plain records."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from analysis.aggregate import history_frame, trials_frame
from sweeps.tracking import EIGENVALUE_KEY, ERROR_TAG, child_runs

PER_EPOCH_KEYS = ["probe_means", "probe_means_variances", "probe_samples", "train_vr_bound_alpha", "val_vr_bound_0"]


def load_runs(client: MlflowClient, experiment_id: str, parent_run_id: str):
    """(trials frame, history frame) of the sweep's child runs."""
    runs = child_runs(client, experiment_id, parent_run_id)
    records = [{"run_id": r.info.run_id, "status": r.info.status, "alpha": r.data.tags.get("alpha"),
                "k": r.data.tags.get("k"), "seed": r.data.tags.get("seed"), "error": r.data.tags.get(ERROR_TAG, ""),
                **r.data.metrics} for r in runs]
    rows = [(r.info.run_id, key, m.step, m.value)
            for r in runs for key in [*PER_EPOCH_KEYS, EIGENVALUE_KEY]
            for m in client.get_metric_history(r.info.run_id, key)]
    return trials_frame(records), history_frame(rows)
