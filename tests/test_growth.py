"""A sweep grows under its name: new seeds and alphas train alone, finished grid points keep their runs and
epoch records, readers see every point, and a failure a retry repeats stays failed. Real CLI, Ray, MLflow
and MNIST. Marked slow."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from sweeps.mlflow_server import LocalMlflowServer
from sweeps.readers.runs import newest_per_step
from sweep_helpers import children, epoch_steps, start_sweep, tracking, trial_results, vaesweep, write_config

pytestmark = pytest.mark.slow


def grid(config: Path, **axes: list) -> None:
    settings = yaml.safe_load(config.read_text())
    settings["grid"].update(axes)
    config.write_text(yaml.safe_dump(settings))


def runs_by_label(sweep_dir: Path) -> dict[str, tuple[str, list[int]]]:
    return {run.info.run_name: (run.info.run_id, epoch_steps(sweep_dir, run.info.run_id)) for run in children(sweep_dir)}


def trained_labels(sweep_dir: Path, before: set[str]) -> set[str]:
    """Grid points a trial folder created since ``before`` trained (reported more than its last epoch again)."""
    return {label for folder, results in trial_results(sweep_dir).items() if folder not in before
            for result in results[:-1] for label in result.get("members", {})}


def test_a_sweep_grows_by_a_seed_and_an_alpha_training_only_the_new_grid_points(tmp_path, mnist_dir):
    config = write_config(tmp_path, "grow", [0.0, 1.0])
    sweep_dir = tmp_path / "runs" / "grow"
    first = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert first.returncode == 0 and "2 of 2 grid points finished, 0 failed" in first.stdout, first.stderr[-3000:]
    before_runs = runs_by_label(sweep_dir)
    parent = tracking(sweep_dir)["parent_run_id"]
    before_folders = set(trial_results(sweep_dir))

    grid(config, alpha=[0.0, 0.5, 1.0], seed=[0, 1])
    dry = vaesweep("run", str(config), "--data-dir", str(mnist_dir), "--dry-run")
    assert dry.returncode == 0 and "grows sweep grow: 2 grid points kept (2 finished), 4 new" in dry.stdout, dry.stderr
    grown = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert grown.returncode == 0 and "6 of 6 grid points finished, 0 failed" in grown.stdout, grown.stderr[-3000:]
    assert "grows sweep grow: 2 grid points kept (2 finished), 4 new" in grown.stderr
    assert grown.stdout.count("finished before, not trained again") == 2, grown.stdout

    after = runs_by_label(sweep_dir)
    assert tracking(sweep_dir)["parent_run_id"] == parent and len(after) == 6
    assert {label: after[label] for label in before_runs} == before_runs, "finished runs: same ids, each epoch once"
    assert all(steps == [1, 2] for _, steps in after.values())
    assert trained_labels(sweep_dir, before_folders) == set(after) - set(before_runs), "only the new points train"
    grown_trials = [results for folder, results in trial_results(sweep_dir).items() if folder not in before_folders]
    assert len({results[0]["pid"] for results in grown_trials}) < len(grown_trials) == 6, \
        "a trial that follows another on its slot runs in the same worker (reuse_actors)"
    assert {run.info.status for run in children(sweep_dir)} == {"FINISHED"}

    status = json.loads(vaesweep("status", "grow", "--storage", str(tmp_path / "runs"), "--json").stdout)
    assert len(status["trials"]) == 6 and {t["state"] for t in status["trials"]} == {"TERMINATED"}
    report = vaesweep("report", "grow", "--storage", str(tmp_path / "runs"), "--out", str(tmp_path / "report"))
    assert report.returncode == 0 and "6 of 6 grid points finished" in report.stdout, report.stderr[-3000:]

    again = vaesweep("run", str(config), "--data-dir", str(mnist_dir))  # the same command: nothing to do
    assert again.returncode == 0 and "6 of 6 grid points finished" in again.stdout, again.stderr[-3000:]
    assert runs_by_label(sweep_dir) == after


def test_a_grid_point_that_diverged_stays_failed_on_a_rerun_unless_retried(tmp_path, mnist_dir):
    config = write_config(tmp_path, "diverge", [-float("inf")], train={"epochs": 2, "train_subset": 300,
                                                                        "test_subset": 100, "lr": 10.0})
    failed = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert failed.returncode == 1 and "0 of 1 grid points finished, 1 failed" in failed.stdout, failed.stdout
    rerun = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert rerun.returncode == 1 and "1 of them failed so before and were not retried" in rerun.stdout, rerun.stdout
    status = json.loads(vaesweep("status", "diverge", "--storage", str(tmp_path / "runs"), "--json").stdout)
    assert "non-finite loss" in status["trials"][0]["error"] and "--retry-failed" in status["trials"][0]["error"]
    retried = vaesweep("run", str(config), "--data-dir", str(mnist_dir), "--retry-failed")
    assert retried.returncode == 1 and "not retried" not in retried.stdout, retried.stdout
    assert "non-finite loss" in retried.stdout


def final_metrics(sweep_dir: Path) -> dict[str, dict[str, float]]:
    """Each run's last value of every metric but wall times, and its PCA spectrum as the report reads it."""
    client = MlflowClient(tracking(sweep_dir)["tracking_uri"])
    return {run.info.run_name: {**{key: value for key, value in run.data.metrics.items()
                                   if not key.endswith("_seconds") and key != "pca_eigenvalue"},
                                "spectrum": newest_per_step("pca_eigenvalue", [
                                    (run.info.run_id, m.step, m.timestamp, m.value)
                                    for m in client.get_metric_history(run.info.run_id, "pca_eigenvalue")])}
            for run in children(sweep_dir)}


def test_a_finished_sweep_trained_longer_equals_one_trained_that_long_from_the_start(tmp_path, mnist_dir):
    short = write_config(tmp_path, "longer", [0.0, 1.0])
    first = vaesweep("run", str(short), "--data-dir", str(mnist_dir))
    assert first.returncode == 0 and "2 of 2 grid points finished" in first.stdout, first.stderr[-3000:]
    sweep_dir = tmp_path / "runs" / "longer"
    ids = {name: run_id for name, (run_id, _) in runs_by_label(sweep_dir).items()}
    more = ["--set", "train.epochs=4", "--set", "eval.probe_epochs=[1,3]"]
    longer = vaesweep("run", str(short), "--data-dir", str(mnist_dir), *more)
    assert longer.returncode == 0 and "2 of 2 grid points finished" in longer.stdout, longer.stderr[-3000:]
    assert "train.epochs 2 -> 4: every grid point continues from its last checkpoint" in longer.stderr

    whole = write_config(tmp_path, "whole", [0.0, 1.0], epochs=4)
    reference = vaesweep("run", str(whole), "--data-dir", str(mnist_dir), "--set", "eval.probe_epochs=[1,3]")
    assert reference.returncode == 0, reference.stderr[-3000:]
    grown = runs_by_label(sweep_dir)
    assert {name: run_id for name, (run_id, _) in grown.items()} == ids, "the same MLflow runs go on"
    assert all(steps == [1, 2, 3, 4] for _, steps in grown.values()), grown
    trained_longer, from_the_start = final_metrics(sweep_dir), final_metrics(tmp_path / "runs" / "whole")
    assert [len(metrics["spectrum"]) for metrics in trained_longer.values()] == [5, 5]
    assert {name: {**m, "spectrum": [row[2:] for row in m["spectrum"]]} for name, m in trained_longer.items()} == \
        {name: {**m, "spectrum": [row[2:] for row in m["spectrum"]]} for name, m in from_the_start.items()}
    with LocalMlflowServer(sweep_dir) as server:  # the artifacts are served by the sweep's own server
        client = MlflowClient(server.wait())
        for name, (run_id, _) in grown.items():
            assert [m.step for m in client.get_metric_history(run_id, "probe_means")] == [1, 3]
            assert {a.path for a in client.list_artifacts(run_id)} >= {"analysis", "analysis-epoch-2", "checkpoint"}
            kept = json.loads(Path(client.download_artifacts(run_id, "analysis-epoch-2/analysis.json", str(tmp_path))).read_text())
            assert kept["epoch"] == 2


def test_a_sweep_interrupted_while_it_grows_resumes_with_the_same_command(tmp_path, mnist_dir):
    train = {"epochs": 4, "train_subset": 6000, "test_subset": 100}  # about a second per epoch
    config = write_config(tmp_path, "halt", [1.0], train=train)
    sweep_dir = tmp_path / "runs" / "halt"
    first = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert first.returncode == 0, first.stderr[-3000:]
    (kept_id, kept_steps), = runs_by_label(sweep_dir).values()
    before = set(trial_results(sweep_dir))

    grid(config, alpha=[0.0, 1.0])
    driver = start_sweep(config, mnist_dir, tmp_path / "grow.log")
    deadline = time.monotonic() + 300
    while not trained_labels(sweep_dir, before) and time.monotonic() < deadline:
        assert driver.poll() is None, (tmp_path / "grow.log").read_text()[-3000:]
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=300) == 130, (tmp_path / "grow.log").read_text()[-3000:]

    resumed = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert resumed.returncode == 0 and "2 of 2 grid points finished, 0 failed" in resumed.stdout, resumed.stderr[-3000:]
    runs = runs_by_label(sweep_dir)
    assert runs["a1_k5_s0"] == (kept_id, kept_steps) and runs["a0_k5_s0"][1] == [1, 2, 3, 4], runs
    assert {run.info.status for run in children(sweep_dir)} == {"FINISHED"}
