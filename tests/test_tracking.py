"""The MLflow writer on a real sqlite store: paging, one run per trial, end states and tags."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from sweeps import tracking
from sweeps.config import load_sweep
from sweeps.layout import read_run_ids
from sweeps.tracking import STOPPED_TAG, child_runs, find_runs, logged_epochs
from sweeps.driver.run_writer import TrialRuns, close_sweep, ensure_parent_run, get_or_create_experiment


@pytest.fixture()
def store(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    sweep = load_sweep("smoke", storage=str(tmp_path / "runs"))
    experiment_id = get_or_create_experiment(client, "test")
    return client, experiment_id, ensure_parent_run(client, experiment_id, sweep.name, sweep.to_dict()), sweep


def test_find_runs_reads_every_page(store, monkeypatch):
    client, experiment_id, _, _ = store
    for index in range(7):
        client.create_run(experiment_id, tags={"batch": "b", "index": str(index)})
    monkeypatch.setattr(tracking, "SEARCH_PAGE", 3)  # three pages of at most 3 runs
    found = find_runs(client, experiment_id, {"batch": "b"})
    assert sorted(int(r.data.tags["index"]) for r in found) == list(range(7))


def test_one_run_per_grid_point_through_a_restart_and_a_new_trial_id_each_epoch_once(store):
    client, experiment_id, parent, sweep = store
    point = {"alpha": 0.5, "k": 10, "seed": 0}
    first = TrialRuns(client, experiment_id, parent, sweep)
    key = first.open("trial_a", point, "node1")
    run_id = first.run_ids[key]
    assert key == "a0.5_k10_s0", "a grid sweep's run is keyed by its grid point"
    assert first.log_epoch(key, {"epoch": 1, "train_vr_bound_alpha": -200.0, "training_iteration": 1})
    assert not first.log_epoch(key, {"epoch": 1, "train_vr_bound_alpha": -200.0})
    again = TrialRuns(client, experiment_id, parent, sweep)  # a new driver, as after a restore
    assert again.open("trial_a", point) == key and again.run_ids[key] == run_id
    assert again.created == 0 and first.created == 1
    assert not again.log_epoch(key, {"epoch": 1, "train_vr_bound_alpha": -200.0})
    assert again.log_epoch(key, {"epoch": 2, "train_vr_bound_alpha": -150.0})
    assert logged_epochs(client, run_id) == {1, 2}
    run = client.get_run(run_id)
    assert "training_iteration" not in run.data.metrics, "only the schema's metrics are logged"
    assert run.info.run_name == "a0.5_k10_s0" and run.data.tags["ray_node_id"] == "node1"
    assert read_run_ids(sweep.sweep_dir()) == {"a0.5_k10_s0": run_id}
    rebuilt = TrialRuns(client, experiment_id, parent, sweep)  # a rebuilt sweep: new Ray trial ids
    rebuilt.open("trial_b", point)
    assert rebuilt.run_ids[key] == run_id and rebuilt.created == 0
    assert client.get_run(run_id).data.tags["ray_trial_id"] == "trial_b", "tagged with the trial now training it"


def test_end_states_and_their_tags(store):
    client, experiment_id, parent, sweep = store
    runs = TrialRuns(client, experiment_id, parent, sweep)
    keys = {name: runs.open(name, {"alpha": alpha, "k": 10, "seed": 0}) for name, alpha in
            (("done", 0.0), ("stopped", 0.5), ("failed", 1.0), ("interrupted", 2.0), ("unknown", 3.0))}
    ids = {name: runs.run_ids[key] for name, key in keys.items()}
    runs.close(keys["done"], "FINISHED")
    runs.close(keys["stopped"], "FINISHED", stopped_at=3)
    runs.close(keys["failed"], "FAILED", "NonFiniteLossError: non-finite loss (nan) at epoch 1, step 7\nmore")
    closed = close_sweep(client, experiment_id, parent, "KILLED", {"interrupted": "PAUSED"})
    assert closed == 2
    status = {r.info.run_id: r for r in child_runs(client, experiment_id, parent)}
    assert {name: status[run_id].info.status for name, run_id in ids.items()} == {
        "done": "FINISHED", "stopped": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "unknown": "KILLED"}
    assert status[ids["stopped"]].data.tags[STOPPED_TAG] == "3" and STOPPED_TAG not in status[ids["done"]].data.tags
    assert status[ids["failed"]].data.tags["last_error"] == "NonFiniteLossError: non-finite loss (nan) at epoch 1, step 7"
    assert client.get_run(parent).info.status == "KILLED"


def test_a_running_child_whose_trial_finished_is_closed_finished(store):
    client, experiment_id, parent, sweep = store
    runs = TrialRuns(client, experiment_id, parent, sweep)
    run_id = runs.run_ids[runs.open("t1", {"alpha": 1.0, "k": 10, "seed": 0})]
    close_sweep(client, experiment_id, parent, "FINISHED", {"t1": "TERMINATED"})
    assert client.get_run(run_id).info.status == "FINISHED"
