"""A sweep's life through the real CLI on real Ray, MLflow and MNIST: Ctrl-C and SIGTERM end it
with true states and no orphan process, one driver holds a sweep at a time, and an Optuna/ASHA
sweep records stopped trials as finished. Marked slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

from sweep_helpers import (NO_ESTIMATE, VAESWEEP, alive, children, descendants, epoch_steps, tracking, trial_results, vaesweep,
                           write_config)

pytestmark = pytest.mark.slow
# Two trials of four one-second epochs: long enough to stop one in the middle.
LONG = {"epochs": 4, "train_subset": 6000, "test_subset": 100}


def start(config: Path, mnist_dir: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([str(VAESWEEP), "run", str(config), "--data-dir", str(mnist_dir), NO_ESTIMATE],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_an_epoch(sweep_dir: Path, driver: subprocess.Popen, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(trial_results(sweep_dir).values()):
        assert driver.poll() is None and time.monotonic() < deadline, "the sweep ended before an epoch was reported"
        time.sleep(0.2)


def stop(driver: subprocess.Popen, sig: signal.Signals, to_group: bool) -> tuple[int, set[int]]:
    """Send ``sig`` (to the whole terminal group, as Ctrl-C does, or to the driver alone) and wait."""
    below = descendants(driver.pid)
    assert below, "the driver has started Ray and MLflow"
    (os.killpg if to_group else os.kill)(driver.pid, sig)
    return driver.wait(timeout=300), below


def assert_true_end_states(sweep_dir: Path, epochs: int) -> None:
    """No run FINISHED that did not run every epoch, none FAILED; the interrupted ones KILLED."""
    runs = children(sweep_dir)
    for run in runs:
        done = epoch_steps(sweep_dir, run.info.run_id)
        assert run.info.status in {"FINISHED", "KILLED"}, run.info.status
        assert (run.info.status == "FINISHED") == (done == list(range(1, epochs + 1))), (run.info.status, done)
    assert any(r.info.status == "KILLED" for r in runs)
    info = tracking(sweep_dir)
    from mlflow.tracking import MlflowClient

    assert MlflowClient(info["tracking_uri"]).get_run(info["parent_run_id"]).info.status == "KILLED"


def running_sweep(tmp_path: Path, mnist_dir: Path, name: str) -> tuple[Path, Path, Path, subprocess.Popen]:
    """A two-trial ``LONG`` sweep's config, folder, driver log and driver, once an epoch is reported."""
    config = write_config(tmp_path, name, [0.0, 1.0], train=LONG)
    sweep_dir = tmp_path / "runs" / name
    log = tmp_path / "driver.log"
    driver = start(config, mnist_dir, log)
    wait_for_an_epoch(sweep_dir, driver)
    return config, sweep_dir, log, driver


def interrupted_line(code: int, output: str, below: set[int]) -> str:
    """The driver's 'interrupted (SIGINT)' line, after checking its exit code, output and children."""
    assert code == 130, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    time.sleep(2)
    assert not alive(below), "Ray and the MLflow server ended with the driver"
    return next(line for line in output.splitlines() if line.startswith("vaesweep: interrupted (SIGINT): "))


def assert_resume_completes(interrupted: str, sweep_dir: Path) -> None:
    """The resume command printed on interruption finishes both trials, each epoch recorded once."""
    resumed = vaesweep(*interrupted.split("resume with: ", 1)[1].split()[1:])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "2 of 2 grid points finished, 0 failed" in resumed.stdout
    runs = children(sweep_dir)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert epoch_steps(sweep_dir, run.info.run_id) == [1, 2, 3, 4], "each epoch once across the interruption"


def test_ctrl_c_stops_with_true_states_no_orphans_and_the_printed_command_resumes(mnist_dir, tmp_path):
    config, sweep_dir, log, driver = running_sweep(tmp_path, mnist_dir, "ctrlc")
    code, below = stop(driver, signal.SIGINT, to_group=True)
    line = interrupted_line(code, log.read_text(), below)
    assert "of 2 grid points finished" in line and f"resume with: {VAESWEEP} run {config}" in line, line
    assert_true_end_states(sweep_dir, 4)

    status = json.loads(vaesweep("status", "ctrlc", "--storage", str(tmp_path / "runs"), "--json").stdout)
    assert {t["state"] for t in status["trials"]} <= {"TERMINATED", "PAUSED", "PENDING", "RUNNING"}, status
    assert_resume_completes(line, sweep_dir)


def test_a_second_ctrl_c_stops_at_once_with_true_states_and_the_sweep_still_resumes(mnist_dir, tmp_path):
    _, sweep_dir, log, driver = running_sweep(tmp_path, mnist_dir, "twice")
    below = descendants(driver.pid)
    os.killpg(driver.pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while "SIGINT received: stopping the sweep" not in log.read_text():
        assert driver.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGINT)  # the impatient second Ctrl-C, while Tune is still stopping
    code = driver.wait(timeout=300)
    output = log.read_text()
    line = interrupted_line(code, output, below)
    assert "vaesweep: SIGINT again: stopping at once" in output, output[-3000:]
    assert_true_end_states(sweep_dir, 4)
    assert_resume_completes(line, sweep_dir)


def test_one_driver_per_sweep_and_sigterm_ends_it_killed(mnist_dir, tmp_path):
    # 200 epochs: it must still be running after the second driver and the sync have been refused, however
    # slowly they start (SIGTERM ends it long before)
    config = write_config(tmp_path, "locked", [0.0, 1.0], train={**LONG, "epochs": 200})
    sweep_dir = tmp_path / "runs" / "locked"
    log = tmp_path / "driver.log"
    driver = start(config, mnist_dir, log)
    wait_for_an_epoch(sweep_dir, driver)

    began = time.monotonic()
    second = vaesweep("run", str(config), "--data-dir", str(mnist_dir), timeout=60)
    assert second.returncode == 2 and time.monotonic() - began < 30, second.stderr[-2000:]
    assert f"sweep locked is already running (pid {driver.pid} on host " in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
    sync = vaesweep("sync", "locked", "--storage", str(tmp_path / "runs"), timeout=60)
    assert sync.returncode == 2 and "already running" in sync.stderr, sync.stderr[-2000:]

    code, below = stop(driver, signal.SIGTERM, to_group=False)
    output = log.read_text()
    assert code == 143, output[-3000:]
    assert "vaesweep: interrupted (SIGTERM): " in output and "Traceback" not in output, output[-3000:]
    time.sleep(2)
    assert not alive(below), "Ray and the MLflow server ended with the driver"
    assert_true_end_states(sweep_dir, 200)
    assert not (sweep_dir / "driver.json").exists(), "the lock's holder record goes with the driver"


def test_optuna_with_asha_records_stopped_trials_as_finished_and_selects_off_the_test_set(mnist_dir, tmp_path):
    storage = tmp_path / "runs"
    done = vaesweep("run", "optuna", "--storage", str(storage), "--data-dir", str(mnist_dir),
                    "--set", "optuna.num_samples=4", "--set", "train.epochs=3", "--set", "train.train_subset=600",
                    "--set", "train.validation_images=200", "--set", "train.test_subset=100",
                    "--set", "eval.is_samples=20", "--set", "eval.probe_epochs=[1]",
                    "--set", "eval.probe_train_size=300", "--set", "eval.val_images=100", "--set", "grid.k=[5, 6]",
                    "--set", "optuna.grace_period=1", "--set", "optuna.max_concurrent=2")
    assert done.returncode == 0, done.stderr[-3000:]
    sweep_dir = storage / "optuna"
    runs = children(sweep_dir)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}, [r.info.status for r in runs]
    stopped = [r for r in runs if "stopped_early" in r.data.tags]
    assert stopped, "ASHA stopped at least one of four trials"
    for run in runs:
        steps = epoch_steps(sweep_dir, run.info.run_id)
        assert run.data.params["trial.validation_images"] == "200"
        assert "val_vr_bound_0" in run.data.metrics
        if run in stopped:
            assert steps == list(range(1, int(run.data.tags["stopped_early"]) + 1)) and len(steps) < 3
        else:
            assert steps == [1, 2, 3] and "test_log_likelihood" in run.data.metrics
    assert f"4 of 4 grid points finished ({len(stopped)} stopped early by the scheduler), 0 failed" in done.stdout
    status = json.loads(vaesweep("status", "optuna", "--storage", str(storage), "--json").stdout)
    assert sum(t["stopped_early"] for t in status["trials"]) == len(stopped)
    report = vaesweep("report", "optuna", "--storage", str(storage))
    assert report.returncode == 0, report.stderr[-3000:]
    assert "4 of 4 grid points finished" in report.stdout, report.stdout
    assert report.stdout.count("stopped early by the scheduler after epoch") == len(stopped), report.stdout
    assert "missing metric" not in report.stdout, "a stopped trial lacks final metrics by design"


def test_a_trial_worker_ended_inside_a_callback_prints_no_traceback(monkeypatch):
    """Ray's SIGTERM handler raises SystemExit wherever the worker is; inside a weakref callback Python
    would print it as an ignored exception with its traceback. Other ignored exceptions still show."""
    from sweeps.trial.trainable import quiet_exits_in_callbacks

    shown: list[type] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: shown.append(type(unraisable.exc_value)))
    quiet_exits_in_callbacks()
    hook = sys.unraisablehook
    quiet_exits_in_callbacks()  # the next trial in a reused worker: the hook is not wrapped again
    assert sys.unraisablehook is hook

    class Referent:
        pass

    for error in (SystemExit(1), ValueError("a real problem")):
        def callback(_: object, error: BaseException = error) -> None:
            raise error

        referent = Referent()
        reference = weakref.ref(referent, callback)
        del referent  # the callback runs here, on CPython
    assert reference() is None and shown == [ValueError]
