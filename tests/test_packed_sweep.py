"""Packed sweeps end to end (``resources.pack``): grid points trained together in one Ray trial keep
one MLflow run, one status row and their own results each, through a killed worker and a diverging
member. Real Ray, MLflow and MNIST through the CLI. Marked slow."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sweep_helpers import (NO_ESTIMATE, SMOKE_FAST, VAESWEEP, assert_every_run_finished_once, children, epoch_steps, start_sweep,
                           trial_results, vaesweep, wait_for_epochs, write_config)

pytestmark = pytest.mark.slow


def status_of(name: str, storage: Path) -> list[dict]:
    done = vaesweep("status", name, "--storage", str(storage), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)["trials"]


def test_the_smoke_grid_in_packs_of_three_matches_the_unpacked_sweep_through_a_killed_worker(mnist_dir, tmp_path):
    unpacked = vaesweep("run", "smoke", "--storage", str(tmp_path / "one"), "--data-dir", str(mnist_dir), *SMOKE_FAST)
    assert unpacked.returncode == 0, unpacked.stderr[-3000:]

    storage = tmp_path / "packed"
    sweep_dir = storage / "smoke"
    log = tmp_path / "packed.log"
    with open(log, "wb") as out:
        driver = subprocess.Popen([str(VAESWEEP), "run", "smoke", "--storage", str(storage), "--data-dir", str(mnist_dir),
                                   *SMOKE_FAST, "--set", "resources.pack=3", NO_ESTIMATE],
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not any(len(results) >= 2 for results in trial_results(sweep_dir).values()):
        assert driver.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.1)
    victim = next(results for results in trial_results(sweep_dir).values() if len(results) >= 2)[-1]["pid"]
    os.kill(victim, signal.SIGKILL)  # a pack's worker, mid-sweep
    assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert "sweep smoke: 6 of 6 grid points finished, 0 failed" in log.read_text()

    packs = trial_results(sweep_dir)
    assert len(packs) == 2, "6 grid points in 2 Ray trials"
    assert any(len({r["pid"] for r in results}) == 2 for results in packs.values()), "the killed pack was retried"
    assert_every_run_finished_once(sweep_dir, 6, 5)
    for run in children(sweep_dir):
        assert run.data.metrics["pca_eigenvalue"] is not None and "test_log_likelihood" in run.data.metrics

    rows = status_of("smoke", storage)
    alone = {(t["config"]["alpha"], t["config"]["k"]): t for t in status_of("smoke", tmp_path / "one")}
    assert len(rows) == 6 and {t["pack"] for t in rows} == {0, 1}
    runs = {r.info.run_id for r in children(sweep_dir)}
    for row in rows:
        assert row["state"] == "TERMINATED" and row["mlflow_run_id"] in runs
        twin = alone[(row["config"]["alpha"], row["config"]["k"])]
        assert abs(row["test_log_likelihood"] - twin["test_log_likelihood"]) < 1, (row, twin)

    report = vaesweep("report", "smoke", "--storage", str(storage))
    assert report.returncode == 0 and "6 of 6 grid points finished" in report.stdout, report.stderr[-3000:]


def test_a_diverging_member_fails_alone_while_its_pack_mate_finishes(mnist_dir, tmp_path):
    # at lr 0.08 VR-max (alpha=-inf) blows up within a few steps; alpha=1000 trains on
    config = write_config(tmp_path, "divpack", [1000.0, float("-inf")], max_failures=0, resources={"pack": 2},
                          train={"epochs": 2, "train_subset": 2000, "test_subset": 100, "lr": 0.08})
    done = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert done.returncode == 1 and "1 of 2 grid points finished, 1 failed" in done.stdout, done.stdout + done.stderr[-2000:]
    assert len(trial_results(tmp_path / "runs" / "divpack")) == 1, "one Ray trial for the pack"
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("  FAILED  ")]
    assert re.fullmatch(r"  FAILED  a-inf_k5_s0: non-finite loss \(\w+\) at epoch 1, step \d+ \(alpha=-inf, k=5, "
                        r"lr=0\.08, seed=0\)", line), line
    assert "done    a1000_k5_s0" in done.stdout and "Traceback" not in done.stdout + done.stderr

    rows = {t["config"]["alpha"]: t for t in status_of("divpack", tmp_path / "runs")}
    assert rows[1000.0]["state"] == "TERMINATED" and "test_log_likelihood" in rows[1000.0]
    assert rows[float("-inf")]["state"] == "ERROR"
    pattern = r"non-finite loss \(\w+\) at epoch 1, step \d+ \(alpha=-inf, k=5, lr=0\.08, seed=0\)"
    assert re.search(pattern, rows[float("-inf")]["error"]), rows[float("-inf")]["error"]
    runs = {r.data.tags["alpha"]: r for r in children(tmp_path / "runs" / "divpack")}
    assert runs["1000"].info.status == "FINISHED" and runs["-inf"].info.status == "FAILED"
    assert re.search(pattern, runs["-inf"].data.tags["last_error"])
    assert epoch_steps(tmp_path / "runs" / "divpack", runs["1000"].info.run_id) == [1, 2]


def test_a_packed_sweep_whose_ray_state_is_torn_is_rebuilt_and_finishes_each_run_once(mnist_dir, tmp_path):
    # 10 epochs: the SIGINT after epoch 2 lands long before the end (with 4, the pack once finished first)
    config = write_config(tmp_path, "tornpack", [0.0, 1.0], resources={"pack": 2},
                          train={"epochs": 10, "train_subset": 2000, "test_subset": 100})
    sweep_dir = tmp_path / "runs" / "tornpack"
    log = tmp_path / "first.log"
    driver = start_sweep(config, mnist_dir, log)
    wait_for_epochs(sweep_dir, 2, driver)
    os.killpg(driver.pid, signal.SIGINT)
    assert driver.wait(timeout=300) == 130, log.read_text()[-3000:]
    state = next((sweep_dir / "tune").glob("experiment_state-*.json"))
    state.write_bytes(state.read_bytes()[:100])  # torn

    again = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert again.returncode == 0 and "2 of 2 grid points finished, 0 failed" in again.stdout, again.stdout + again.stderr[-3000:]
    assert re.search(r"rebuilt the sweep from its checkpoints: 0 of 2 grid points finished, 2 resume from a checkpoint",
                     again.stderr), again.stderr[-3000:]
    assert re.search(r"resumed from checkpoint_\d+ \(epoch \d\)", again.stderr + again.stdout), again.stderr[-3000:]
    assert_every_run_finished_once(sweep_dir, 2, 10)
    assert all(row["state"] == "TERMINATED" and "test_log_likelihood" in row for row in status_of("tornpack", sweep_dir.parent))
