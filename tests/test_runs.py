"""Reading a sweep's runs (sweeps/readers/runs.py) with no silent cap: every search page, and every history point
even where the server cuts a bulk answer. Real MLflow: a sqlite store and ``mlflow server`` on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from sweeps import tracking
from sweeps.layout import backend_uri
from sweeps.mlflow_server import LocalMlflowServer
from sweeps.readers.runs import bulk_history, histories, run_frames
from sweeps.tracking import PARENT_TAG, child_runs

CHILDREN = 5
EPOCHS = 3


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, str, str, list[tuple[str, str, int, float]]]:
    """(sweep folder, experiment id, parent run id, every probe_means point logged): five child runs of
    one parent, and a run of the same experiment that is not a child."""
    sweep_dir = tmp_path_factory.mktemp("runs") / "sweep"
    sweep_dir.mkdir()
    client = MlflowClient(backend_uri(sweep_dir))
    experiment = client.create_experiment("sweep", artifact_location="mlflow-artifacts:/sweep")
    parent = client.create_run(experiment).info.run_id
    points = []
    for seed in range(CHILDREN):
        run_id = client.create_run(experiment, tags={PARENT_TAG: parent, "alpha": "0.5", "k": "5",
                                                     "seed": str(seed)}).info.run_id
        metrics = [Metric("probe_means", 0.5 + seed / 10 + epoch / 100, 0, epoch) for epoch in range(1, EPOCHS + 1)]
        client.log_batch(run_id, metrics=[*metrics, Metric("test_log_likelihood", -90.0 - seed, 0, EPOCHS)])
        client.set_terminated(run_id)
        points += [(run_id, m.key, m.step, m.value) for m in metrics]
    client.create_run(experiment)
    return sweep_dir, experiment, parent, points


def test_search_follows_every_page(store, monkeypatch):
    sweep_dir, experiment, parent, points = store
    client = MlflowClient(backend_uri(sweep_dir))
    monkeypatch.setattr(tracking, "SEARCH_PAGE", 2)  # 3 pages
    runs = child_runs(client, experiment, parent)
    assert sorted(r.info.run_id for r in runs) == sorted({row[0] for row in points})
    assert len(runs) == CHILDREN


def test_bulk_history_reads_every_point_even_where_the_server_cuts_an_answer(store):
    sweep_dir, experiment, parent, points = store
    with LocalMlflowServer(sweep_dir) as server:
        client = MlflowClient(server.wait())
        run_ids = sorted({row[0] for row in points})
        assert sorted(histories(client, run_ids, ["probe_means"])) == sorted(points)
        # the server stops each answer at max_points: 15 points in answers of at most 2 means halving down to
        # single runs (3 points), which are read through get_metric_history
        assert sorted(bulk_history(client, run_ids, "probe_means", max_points=2)) == sorted(points)
        trials, history = run_frames(client, child_runs(client, experiment, parent), ["probe_means"])
    assert sorted(trials["seed"]) == list(range(CHILDREN)) and set(trials["status"]) == {"FINISHED"}
    assert sorted(trials["test_log_likelihood"]) == [-94.0, -93.0, -92.0, -91.0, -90.0]
    assert sorted(history.itertuples(index=False, name=None)) == sorted(points)
