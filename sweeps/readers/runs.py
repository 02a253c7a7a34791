"""Read a sweep's child runs from an MLflow server as plain records, in few calls at any sweep size.

The runs come from ``sweeps.tracking.child_runs``, which reads every page of MLflow's search (a
single call would silently stop at 1,000). Metric histories come from the server's bulk endpoint,
the one the MLflow UI uses (up to 100 runs per call for one key), instead of one
``get_metric_history`` call per run and key: 2,400 runs x 4 keys take 96 calls, not 9,600. Only
the keys asked for are read (a 1000-epoch trial logs 1000 points of each per-epoch key). Every
``mlflow server`` serves the endpoint (the embedded sqlite store through the sweep's own server,
sweeps/readers/report.py), so a remote server and the embedded store take the same path.
"""

from __future__ import annotations

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.credentials import get_default_host_creds
from mlflow.utils.rest_utils import http_request_safe

from analysis.aggregate import history_frame, trials_frame
from sweeps.tracking import ERROR_TAG, STOPPED_TAG

BULK_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
BULK_RUNS = 100  # MLflow's ``mlflow.server.handlers`` refuses more run ids in one bulk call...
BULK_POINTS = 25_000  # ...and cuts an answer at this many points

HistoryRow = tuple[str, str, int, float]


def bulk_history(client: MlflowClient, run_ids: list[str], key: str,
                 max_points: int = BULK_POINTS) -> list[HistoryRow]:
    """Every (run_id, key, step, value) of ``key`` in up to BULK_RUNS runs of the server ``client``, in one
    call when the answer has fewer than ``max_points``; a full answer may be cut, so the runs are then
    read in halves (a single run through ``get_metric_history``, which pages)."""
    answer = http_request_safe(get_default_host_creds(client.tracking_uri), BULK_ENDPOINT, "GET",
                               params={"run_id": run_ids, "metric_key": key, "max_results": max_points})
    points = answer.json().get("metrics", [])
    if len(points) < max_points:
        return newest_per_step(key, [(p["run_id"], int(p["step"]), int(p.get("timestamp", 0)), float(p["value"]))
                                     for p in points])
    if len(run_ids) == 1:
        return newest_per_step(key, [(run_ids[0], m.step, m.timestamp, m.value)
                                     for m in client.get_metric_history(run_ids[0], key)])
    half = len(run_ids) // 2
    return bulk_history(client, run_ids[:half], key, max_points) + bulk_history(client, run_ids[half:], key, max_points)


def newest_per_step(key: str, points: list[tuple[str, int, int, float]]) -> list[HistoryRow]:
    """(run_id, key, step, value) rows, one per run and step: the newest value (a run trained longer logs its
    final PCA spectrum again over the same steps)."""
    newest = {(run_id, step): value for run_id, step, _, value in sorted(points, key=lambda point: point[2])}
    return [(run_id, key, step, value) for (run_id, step), value in newest.items()]


def histories(client: MlflowClient, run_ids: list[str], keys: list[str]) -> list[HistoryRow]:
    """The full histories of ``keys`` in every run, BULK_RUNS runs per call."""
    return [row for key in keys for start in range(0, len(run_ids), BULK_RUNS)
            for row in bulk_history(client, run_ids[start:start + BULK_RUNS], key)]


def run_frames(client: MlflowClient, runs: list[Run], keys: list[str]):
    """(trials frame, history frame of ``keys``) of ``runs``, the histories read from the server ``client``."""
    records = [{"run_id": r.info.run_id, "status": r.info.status, "alpha": r.data.tags.get("alpha"),
                "k": r.data.tags.get("k"), "seed": r.data.tags.get("seed"), "error": r.data.tags.get(ERROR_TAG, ""),
                "stopped_early": float(r.data.tags.get(STOPPED_TAG, "nan")),
                **r.data.metrics} for r in runs]
    rows = histories(client, [r.info.run_id for r in runs], keys)
    return trials_frame(records), history_frame(rows)
