"""A sweep grows under its name: new seeds and alphas train alone, finished grid points keep their runs and
epoch records, readers see every point, and a failure a retry repeats stays failed. Real CLI, Ray, MLflow
and MNIST. Marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sweep_helpers import children, epoch_steps, tracking, trial_results, vaesweep, write_config

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
    grid(config, seed=[0, 1])
    sweep_dir = tmp_path / "runs" / "grow"
    first = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert first.returncode == 0 and "4 of 4 grid points finished, 0 failed" in first.stdout, first.stderr[-3000:]
    before_runs = runs_by_label(sweep_dir)
    parent = tracking(sweep_dir)["parent_run_id"]
    before_folders = set(trial_results(sweep_dir))

    grid(config, alpha=[0.0, 0.5, 1.0], seed=[0, 1, 2])
    dry = vaesweep("run", str(config), "--data-dir", str(mnist_dir), "--dry-run")
    assert dry.returncode == 0 and "grows sweep grow: 4 grid points kept (4 finished), 5 new" in dry.stdout, dry.stderr
    grown = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert grown.returncode == 0 and "9 of 9 grid points finished, 0 failed" in grown.stdout, grown.stderr[-3000:]
    assert "grows sweep grow: 4 grid points kept (4 finished), 5 new" in grown.stderr

    after = runs_by_label(sweep_dir)
    assert tracking(sweep_dir)["parent_run_id"] == parent and len(after) == 9
    assert {label: after[label] for label in before_runs} == before_runs, "finished runs: same ids, each epoch once"
    assert all(steps == [1, 2] for _, steps in after.values())
    assert trained_labels(sweep_dir, before_folders) == set(after) - set(before_runs), "only the new points train"
    assert {run.info.status for run in children(sweep_dir)} == {"FINISHED"}

    status = json.loads(vaesweep("status", "grow", "--storage", str(tmp_path / "runs"), "--json").stdout)
    assert len(status["trials"]) == 9 and {t["state"] for t in status["trials"]} == {"TERMINATED"}
    report = vaesweep("report", "grow", "--storage", str(tmp_path / "runs"), "--out", str(tmp_path / "report"))
    assert report.returncode == 0 and "9 of 9 grid points finished" in report.stdout, report.stderr[-3000:]

    again = vaesweep("run", str(config), "--data-dir", str(mnist_dir))  # the same command: nothing to do
    assert again.returncode == 0 and "9 of 9 grid points finished" in again.stdout, again.stderr[-3000:]
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
