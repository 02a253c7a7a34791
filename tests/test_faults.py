"""Faults injected for real into running sweeps: a trial's worker SIGKILLed mid-epoch, its latest
checkpoint truncated, the MLflow server stopped mid-sweep or absent at the start, a trial whose loss
diverges. Each sweep runs through the real CLI on real Ray, MLflow and MNIST. Marked slow."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from threadpoolctl import threadpool_limits

from sweep_helpers import (assert_every_run_finished_once, children, client_of, epoch_steps, point_result,
                           server_below, start_server, start_sweep, stop_server, tracking, trial_results, vaesweep,
                           wait_for_epochs, write_config)
from sweeps.config import load_sweep
from sweeps.trial.local_run import train_to_directory
from sweeps.mlflow_server import free_port

pytestmark = pytest.mark.slow
# Epochs of about a second on one thread: long enough to land a signal inside one.
FAULT_TRAIN = {"epochs": 4, "train_subset": 6000, "test_subset": 100}
FINAL_KEYS = ("test_log_likelihood", "test_vr_bound_alpha", "test_vr_bound_0", "train_vr_bound_alpha",
              "active_components", "final_probe_means", "final_probe_samples")


def one_trial(root: Path, name: str) -> Path:
    return write_config(root, name, [0.5], train=FAULT_TRAIN, checkpoint_every=1)


def final(metrics: dict) -> dict:
    return {key: metrics[key] for key in FINAL_KEYS}


@pytest.fixture(scope="module")
def reference(mnist_dir, tmp_path_factory) -> dict:
    """Final metrics of the fault tests' trial when nothing goes wrong: the same trial engine run in this
    process on one thread (as a 1-CPU Ray trial runs), without Ray; a trial must match it to the bit."""
    root = tmp_path_factory.mktemp("reference")
    config = load_sweep(str(one_trial(root, "reference")), [], None, None, None)
    (trial,) = config.grid_points()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):  # Ray sets OMP_NUM_THREADS=1 in a 1-CPU trial: the probes' BLAS too
            result = train_to_directory(trial, root / "run", mnist_dir, config.eval, config.checkpoint_every,
                                        log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    return final({**result["history"][-1], **result})


def test_a_killed_trial_worker_is_retried_from_its_checkpoint_with_identical_results(reference, mnist_dir, tmp_path):
    sweep_dir = tmp_path / "runs" / "killed"
    driver = start_sweep(one_trial(tmp_path, "killed"), mnist_dir, tmp_path / "sweep.log")
    victim = wait_for_epochs(sweep_dir, 2, driver)["pid"]
    os.kill(victim, signal.SIGKILL)  # inside epoch 3
    assert driver.wait(timeout=600) == 0, (tmp_path / "sweep.log").read_text()[-3000:]

    (results,) = trial_results(sweep_dir).values()
    assert len({r["pid"] for r in results}) == 2, "the trial went on in a new worker process"
    assert final(point_result(results[-1])) == reference, "resumed from the checkpoint, it ends exactly as the uninterrupted run"
    (run,) = children(sweep_dir)
    assert run.info.status == "FINISHED" and epoch_steps(sweep_dir, run.info.run_id) == [1, 2, 3, 4]
    (trial,) = json.loads(vaesweep("status", "killed", "--storage", str(tmp_path / "runs"), "--json").stdout)["trials"]
    assert trial["num_failures"] == 1 and trial["state"] == "TERMINATED"


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(reference, mnist_dir, tmp_path):
    sweep_dir = tmp_path / "runs" / "corrupt"
    log = tmp_path / "sweep.log"
    driver = start_sweep(one_trial(tmp_path, "corrupt"), mnist_dir, log)
    victim = wait_for_epochs(sweep_dir, 2, driver)["pid"]
    os.kill(victim, signal.SIGSTOP)  # frozen: no newer checkpoint can appear
    time.sleep(2)  # the driver records any result already on its way
    ((trial_dir, results),) = trial_results(sweep_dir).items()
    latest = sweep_dir / "tune" / trial_dir / results[-1]["checkpoint_dir_name"] / "checkpoint.pt"
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2])
    os.kill(victim, signal.SIGKILL)
    assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]

    output = log.read_text()
    assert re.search(r"checkpoint \S+checkpoint\.pt is corrupt or partial", output), output[-3000:]
    # the result that named the cut checkpoint may be epoch 3 when Ray's report of it beat the SIGSTOP
    assert re.search(rf"resumed from checkpoint_\d+ \(epoch {results[-1]['epoch'] - 1}\)", output), output[-3000:]
    (results,) = trial_results(sweep_dir).values()
    assert final(point_result(results[-1])) == reference
    (run,) = children(sweep_dir)
    assert run.info.status == "FINISHED" and epoch_steps(sweep_dir, run.info.run_id) == [1, 2, 3, 4]


def mlflow_record(sweep_dir: Path) -> dict:
    """Everything MLflow holds of a sweep's trials: per run, metric history lengths and artifacts."""
    client = client_of(sweep_dir)
    record = {}
    for run in children(sweep_dir):
        run_id = run.info.run_id
        record[run.data.tags["alpha"]] = {
            "status": run.info.status,
            "metrics": {key: len(client.get_metric_history(run_id, key)) for key in run.data.metrics},
            "artifacts": sorted(a.path for a in client.list_artifacts(run_id, "analysis")),
            "checkpoint": [a.path for a in client.list_artifacts(run_id, "checkpoint")],
        }
    return record


def sync_twice(name: str, storage: Path) -> tuple[str, str]:
    first = vaesweep("sync", name, "--storage", str(storage))
    assert first.returncode == 0, first.stderr[-3000:]
    second = vaesweep("sync", name, "--storage", str(storage))
    assert second.returncode == 0, second.stderr[-3000:]
    return first.stdout, second.stdout


def test_mlflow_stopped_mid_sweep_training_goes_on_and_sync_fills_the_gaps(mnist_dir, tmp_path):
    home = tmp_path / "mlflow"
    server, uri = start_server(home)
    config = write_config(tmp_path, "outage", [0.0, 1.0], train=FAULT_TRAIN)
    sweep_dir = tmp_path / "runs" / "outage"
    log = tmp_path / "sweep.log"
    driver = start_sweep(config, mnist_dir, log, "--tracking-uri", uri)
    try:
        wait_for_epochs(sweep_dir, 1, driver)
    finally:
        stop_server(server)
    assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    assert "MLflow unavailable" in log.read_text()
    assert {len(r) for r in trial_results(sweep_dir).values()} == {4}, "every trial trained all its epochs"

    server, _ = start_server(home, port=int(uri.rsplit(":", 1)[1]))  # the same server, back
    try:
        first = vaesweep("sync", "outage", "--storage", str(tmp_path / "runs"))
        assert first.returncode == 0, first.stderr[-3000:]
        record = mlflow_record(sweep_dir)
        again = vaesweep("sync", "outage", "--storage", str(tmp_path / "runs"))
        assert "0 runs created, 0 epochs and 0 final results added" in again.stdout, again.stdout + again.stderr
        assert mlflow_record(sweep_dir) == record, "a second sync changes nothing"
        assert set(record) == {"0", "1"}
        runs = children(sweep_dir)
        for run in runs:
            assert run.info.status == "FINISHED"
            assert epoch_steps(sweep_dir, run.info.run_id) == [1, 2, 3, 4]
        status = json.loads(vaesweep("status", "outage", "--storage", str(tmp_path / "runs"), "--json").stdout)
        assert {t["mlflow_run_id"] for t in status["trials"]} == {r.info.run_id for r in runs}
    finally:
        stop_server(server)
    for alpha, run in record.items():
        assert run["metrics"]["pca_eigenvalue"] == 5 and run["metrics"]["train_vr_bound_alpha"] == 4, alpha
        assert "analysis/analysis.json" in run["artifacts"] and run["checkpoint"] == ["checkpoint/checkpoint.pt"]


def test_the_sweeps_own_mlflow_server_killed_mid_sweep_is_restarted_and_nothing_is_missing(mnist_dir, tmp_path):
    config = write_config(tmp_path, "revived", [0.0, 1.0], train=FAULT_TRAIN)
    sweep_dir = tmp_path / "runs" / "revived"
    log = tmp_path / "sweep.log"
    driver = start_sweep(config, mnist_dir, log)
    wait_for_epochs(sweep_dir, 1, driver)
    server = server_below(driver.pid, set())
    assert server is not None, "the driver runs its own MLflow server"
    os.killpg(server, signal.SIGKILL)
    assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    output = log.read_text()
    assert output.count("MLflow server stopped") == 1 and "starting it again" in output, output[-3000:]
    assert re.search(r"MLflow server back at http://127\.0\.0\.1:\d+; wrote the \d+ epoch records it had missed", output)
    assert "MLflow unavailable" not in output and "Traceback" not in output, output[-3000:]
    assert_every_run_finished_once(sweep_dir, 2, 4)  # no `vaesweep sync` needed


def test_mlflow_unreachable_at_start_then_sync_creates_every_record(mnist_dir, tmp_path):
    port = free_port()  # nothing listens here yet
    config = write_config(tmp_path, "offline", [0.5])
    done = vaesweep("run", str(config), "--data-dir", str(mnist_dir), "--tracking-uri", f"http://127.0.0.1:{port}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "unavailable" in done.stderr and "vaesweep sync offline" in done.stderr
    sweep_dir = tmp_path / "runs" / "offline"
    assert tracking(sweep_dir)["parent_run_id"] is None
    report = vaesweep("report", "offline", "--storage", str(tmp_path / "runs"))
    assert report.returncode == 2 and "run `vaesweep sync offline` first" in report.stderr

    server, _ = start_server(tmp_path / "mlflow", port=port)
    try:
        first, second = sync_twice("offline", tmp_path / "runs")
        assert "1 runs created, 2 epochs and 1 final results added" in first, first
        assert "0 runs created, 0 epochs and 0 final results added" in second, second
        parent = MlflowClient(f"http://127.0.0.1:{port}").get_run(tracking(sweep_dir)["parent_run_id"])
        assert parent.info.status == "FINISHED"
        (run,) = children(sweep_dir)
        assert run.info.status == "FINISHED" and epoch_steps(sweep_dir, run.info.run_id) == [1, 2]
    finally:
        stop_server(server)


def test_a_diverging_trial_fails_naming_epoch_step_and_config_while_the_others_finish(mnist_dir, tmp_path):
    # at lr 0.08 VR-max (alpha=-inf) blows up within a few steps; alpha=1000 trains on
    config = write_config(tmp_path, "diverge", [1000.0, float("-inf")],
                          train={"epochs": 2, "train_subset": 2000, "test_subset": 100, "lr": 0.08})
    done = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert done.returncode == 1 and "1 of 2 grid points finished, 1 failed" in done.stdout, done.stdout[-2000:]
    assert "  1 of 2 grid points diverged in epoch 1: non-finite loss" in done.stdout
    assert "every grid point diverged" not in done.stdout, "one of two diverged: no hint about the learning rate"
    storage = str(tmp_path / "runs")

    trials = json.loads(vaesweep("status", "diverge", "--storage", storage, "--json").stdout)["trials"]
    states = {t["config"]["alpha"]: t for t in trials}
    assert states[1000.0]["state"] == "TERMINATED"
    failed = states[float("-inf")]
    assert failed["state"] == "ERROR"
    pattern = r"non-finite loss \(\w+\) at epoch 1, step \d+ \(alpha=-inf, k=5, lr=0\.08, seed=0\)"
    assert re.search(pattern, failed["error"]), failed["error"]
    assert re.search(pattern, vaesweep("status", "diverge", "--storage", storage).stdout)

    report = vaesweep("report", "diverge", "--storage", storage)
    assert report.returncode == 0, report.stderr[-3000:]
    assert re.search(r"a-inf_k5_s0: no finished run \(run FAILED: " + pattern, report.stdout), report.stdout
    runs = {r.data.tags["alpha"]: r for r in children(tmp_path / "runs" / "diverge")}
    assert runs["1000"].info.status == "FINISHED" and runs["-inf"].info.status == "FAILED"


def test_a_driver_killed_while_mlflow_lags_ray_loses_no_epoch_record(mnist_dir, tmp_path, monkeypatch):
    """MLflow lags Ray by design (the driver's writer sends each run's epochs every VAESWEEP_MLFLOW_FLUSH_S
    seconds): with the writer held back, SIGKILL the whole driver once Ray holds several epochs that MLflow
    lacks; the resume writes every epoch of every run once."""
    config = write_config(tmp_path, "lag", [0.0, 1.0], train={**FAULT_TRAIN, "epochs": 6, "train_subset": 3000})
    sweep_dir = tmp_path / "runs" / "lag"
    monkeypatch.setenv("VAESWEEP_MLFLOW_FLUSH_S", "3600")
    driver = start_sweep(config, mnist_dir, tmp_path / "driver.log")
    wait_for_epochs(sweep_dir, 3, driver)
    in_ray = {len(results) for results in trial_results(sweep_dir).values()}
    in_mlflow = {len(epoch_steps(sweep_dir, run.info.run_id)) for run in children(sweep_dir)}
    assert max(in_ray) >= 3 and in_mlflow == {0}, (in_ray, in_mlflow)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(timeout=60)
    time.sleep(3)  # Ray's and MLflow's processes follow their driver
    monkeypatch.delenv("VAESWEEP_MLFLOW_FLUSH_S")
    resumed = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch records that Ray kept and MLflow lacked" in resumed.stderr
    assert_every_run_finished_once(sweep_dir, 2, 6)


def test_a_sweep_whose_every_point_diverges_fails_each_once_in_one_line_with_the_likely_fix(mnist_dir, tmp_path):
    """A learning rate mistyped by orders of magnitude: every grid point diverges in its first epoch. Each
    trial is tried once (the default max_failures would retry it twice), the console holds one line per
    grid point and no traceback, the summary names the cause and the fix; status and MLflow agree."""
    config = write_config(tmp_path, "div", [0.0, 1.0, 2.0], train={"epochs": 2, "train_subset": 500, "test_subset": 100,
                                                                   "lr": 1e9})
    done = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    console = done.stdout + done.stderr
    assert done.returncode == 1, console[-3000:]
    assert "Traceback" not in console and "ERROR" not in console, console[-3000:]
    failed = [line for line in done.stdout.splitlines() if line.startswith("  FAILED  ")]
    assert len(failed) == 3, console[-3000:]
    for line in failed:
        assert re.fullmatch(r"  FAILED  a\d_k5_s0: non-finite loss \(nan\) at epoch 1, step \d+ \(alpha=\d\.0, k=5, "
                            r"lr=1000000000\.0, seed=0\) \(traceback: .*/runs/div/tune/train_trial_.*/error\.txt\)", line), line
        assert Path(line.split("(traceback: ")[1][:-1]).is_file()
    assert "  3 of 3 grid points diverged in epoch 1: non-finite loss" in done.stdout
    assert "every grid point diverged in its first epoch: the learning rate is likely too high (train.lr=1e+09" in done.stdout
    status = json.loads(vaesweep("status", "div", "--storage", str(tmp_path / "runs"), "--json").stdout)["trials"]
    assert {(t["state"], t["num_failures"], t["epochs_completed"]) for t in status} == {("ERROR", 1, 0)}, status
    assert all("non-finite loss (nan) at epoch 1" in t["error"] for t in status)
    sweep_dir = tmp_path / "runs" / "div"
    for run in children(sweep_dir):
        assert run.info.status == "FAILED" and run.data.tags["last_error"].startswith("non-finite loss (nan) at epoch 1")
        kept = sweep_dir / "mlartifacts" / run.info.experiment_id / run.info.run_id / "artifacts" / "error.txt"
        assert "NonFiniteLossError" in kept.read_text(), "the traceback, kept with the run"
