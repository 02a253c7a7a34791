"""Storage and tracking faults, for real: a sweep on a small filesystem (a tmpfs: needs root), a disk
another program fills mid-sweep, every file of a finished sweep cut short, the tracking server killed
under ``report``. Real Ray, MLflow and MNIST through the CLI, as a user meets them. Marked slow."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweep_helpers import (NO_ESTIMATE, SMOKE_FAST, VAESWEEP, assert_every_run_finished_once, children, epoch_steps, server_below,
                           point_result, tracking, trial_results, vaesweep, write_config)
from sweeps.cli import main

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def small_disk(path: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of ``megabytes`` mounted at ``path`` for the test (skips where mounting needs a root we lack)."""
    if os.geteuid() != 0:
        pytest.skip("a small filesystem for the full-disk tests needs root (mount -t tmpfs)")
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs for the full-disk tests: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path: Path, megabytes: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={megabytes}m", str(path)], check=True)


def no_traceback(done: subprocess.CompletedProcess | str) -> None:
    text = done if isinstance(done, str) else done.stdout + done.stderr
    assert "Traceback" not in text, text[-3000:]


def test_a_sweep_too_big_for_its_disk_is_refused_then_forced_stops_cleanly_and_resumes(mnist_dir, tmp_path):
    with small_disk(tmp_path / "disk", 40) as disk:
        storage = disk / "runs"
        command = ["run", "smoke", "--storage", str(storage), "--data-dir", str(mnist_dir), *SMOKE_FAST]
        refused = vaesweep(*command)
        assert refused.returncode == 2 and re.search(r"needs about \d+ MB more .* but \d+ MB are free", refused.stderr)
        assert "--force" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert not (storage / "smoke").exists(), "a refused sweep leaves nothing behind"

        forced = vaesweep(*command, "--force")
        assert forced.returncode == 75, forced.stderr[-3000:]
        no_traceback(forced)
        assert re.search(r"vaesweep: disk full at \S+ \(\d+ MB free\): .*free space, then rerun the same command",
                         forced.stderr), forced.stderr[-3000:]
        sweep_dir = storage / "smoke"
        runs = children(sweep_dir)
        assert runs and {r.info.status for r in runs} == {"KILLED"}, "stopped by a full disk: neither finished nor failed"
        info = tracking(sweep_dir)
        assert MlflowClient(info["tracking_uri"]).get_run(info["parent_run_id"]).info.status == "KILLED"
        status = vaesweep("status", "smoke", "--storage", str(storage))
        assert status.returncode == 0, status.stderr[-3000:]
        no_traceback(status)

        resize(disk, 300)  # space freed
        resumed = vaesweep(*command, "--force")
        assert resumed.returncode == 0 and "6 of 6 grid points finished, 0 failed" in resumed.stdout, resumed.stderr[-3000:]
        assert_every_run_finished_once(sweep_dir, 6, 5)


def test_a_temp_folder_too_small_for_staging_and_ray_is_refused_naming_it(mnist_dir, tmp_path):
    """Trials stage each checkpoint in TMPDIR and Ray keeps its session there: the estimate counts it."""
    with small_disk(tmp_path / "tmp", 8) as small_tmp:
        storage = tmp_path / "runs"
        refused = vaesweep("run", "smoke", "--storage", str(storage), "--data-dir", str(mnist_dir), *SMOKE_FAST,
                           env={**os.environ, "TMPDIR": str(small_tmp)})
        assert refused.returncode == 2, refused.stderr[-3000:]
        (line,) = refused.stderr.strip().splitlines()
        assert re.search(rf"not enough disk space in the temp folder {small_tmp}: .* about \d+ MB .* but \d+ MB are "
                         r"free there; set TMPDIR to a folder with room", line), line
        assert not storage.exists() and not list(small_tmp.iterdir()), "a refused sweep leaves nothing behind"


def test_a_disk_filled_by_another_program_stops_the_sweep_and_it_resumes_once_freed(mnist_dir, tmp_path):
    with small_disk(tmp_path / "disk", 200) as disk:
        config = write_config(disk, "filled", [0.0, 1.0], train={"epochs": 4, "train_subset": 6000, "test_subset": 100})
        sweep_dir = disk / "runs" / "filled"
        log = tmp_path / "driver.log"
        with open(log, "wb") as out:
            driver = subprocess.Popen([str(VAESWEEP), "run", str(config), "--data-dir", str(mnist_dir), NO_ESTIMATE],
                                      stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while not list((sweep_dir / "tune").glob("*/checkpoint_*")):
            assert driver.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        filler = disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M", "count=400"], capture_output=True)
        assert driver.wait(timeout=300) == 75, log.read_text()[-3000:]
        output = log.read_text()
        no_traceback(output)
        assert re.search(r"vaesweep: disk full at \S+ \(\d+ MB free\)", output), output[-3000:]
        status = vaesweep("status", "filled", "--storage", str(disk / "runs"))
        assert status.returncode == 0, status.stderr[-3000:]
        no_traceback(status)

        filler.unlink()
        resumed = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
        assert resumed.returncode == 0 and "2 of 2 grid points finished, 0 failed" in resumed.stdout, resumed.stderr[-3000:]
        # the epoch whose MLflow write met the full disk is written on resume from Ray's results, or from
        # the history saved with the trial's checkpoint when the full disk cost result.json that epoch too
        assert_every_run_finished_once(sweep_dir, 2, 4)


def test_an_epoch_record_mlflow_lost_is_written_again_from_ray_s_results_on_resume(mnist_dir, tmp_path):
    """The writes of two epochs lost (as a full disk or a dead server loses them: here their rows deleted
    from the store), the next `vaesweep run` of the sweep writes them once: epoch 1 from Ray's
    result.json, epoch 2, which the full disk also cost result.json, from the history saved with the
    trial's checkpoint."""
    config = write_config(tmp_path, "lost", [0.5], epochs=3, eval={"is_samples": 20, "probe_epochs": [1],
                                                                   "probe_train_size": 300, "val_images": 100})
    sweep_dir = tmp_path / "runs" / "lost"
    assert vaesweep("run", str(config), "--data-dir", str(mnist_dir)).returncode == 0
    (run,) = children(sweep_dir)
    with sqlite3.connect(sweep_dir / "mlflow.db") as store:
        deleted = store.execute("DELETE FROM metrics WHERE run_uuid = ? AND step < 3", (run.info.run_id,)).rowcount
    assert deleted and epoch_steps(sweep_dir, run.info.run_id) == [3]
    (results,) = (sweep_dir / "tune").glob("*/result.json")
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(line for line in lines if json.loads(line)["epoch"] != 2))
    again = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"vaesweep: wrote 2 epoch records that Ray kept and MLflow lacked", again.stderr), again.stderr
    assert_every_run_finished_once(sweep_dir, 1, 3)


@pytest.fixture(scope="session")
def finished(mnist_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(config file, sweep folder) of a finished one-trial sweep with a report (session-scoped: under
    pytest-xdist a worker may run other modules' tests between this group's, which would tear a
    module-scoped fixture down and build it again)."""
    root = tmp_path_factory.mktemp("finished")
    config = write_config(root, "cut", [0.5])
    done = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    report = vaesweep("report", "cut", "--storage", str(root / "runs"))
    assert report.returncode == 0, report.stderr[-3000:]
    return config, root / "runs" / "cut"


@contextlib.contextmanager
def cut_short(path: Path, size: int) -> Iterator[None]:
    """``path`` truncated to ``size`` bytes (a torn write) for the block, whole again after it."""
    data = path.read_bytes()
    path.write_bytes(data[:size])
    try:
        yield
    finally:
        path.write_bytes(data)


def cuts(path: Path) -> list[int]:
    size = path.stat().st_size
    return sorted({0, size // 2, max(size - 1, 0)} - {size})


@pytest.mark.xdist_group("finished")  # one worker runs the shared sweep, these tests in order
def test_status_reads_a_sweep_with_any_file_cut_short(finished, capsys):
    _, sweep_dir = finished
    files = [p for p in sorted(sweep_dir.rglob("*")) if p.is_file() and "report" not in p.relative_to(sweep_dir).parts]
    assert len(files) > 20
    args = ["status", "cut", "--storage", str(sweep_dir.parent)]
    for path in files:
        for size in cuts(path):
            with cut_short(path, size):
                code = main(args)
            out, err = capsys.readouterr()
            assert code == 0, f"{path.relative_to(sweep_dir)} cut to {size} bytes: {err}"
            assert "a0.5_k5_s0" in out or "0.5    5    0" in out, f"{path.relative_to(sweep_dir)} at {size}: {out}"


@pytest.mark.xdist_group("finished")  # one worker runs the shared sweep, these tests in order
def test_report_and_sync_on_a_file_cut_short_exit_with_one_line_or_succeed(finished, capsys):
    """Run in this process (an exception would fail the test as a traceback would fail a user), on the
    files each command reads: the report cut to nothing and to half, the sync (which reads more) to half."""
    _, sweep_dir = finished
    storage = str(sweep_dir.parent)
    trial_dir = next((sweep_dir / "tune").glob("train_trial_*"))
    final = max(trial_dir.glob("checkpoint_*"))
    read_by_report = [sweep_dir / "sweep.yaml", sweep_dir / "tracking.json", sweep_dir / "mlflow.db",
                      next(sweep_dir.glob("mlartifacts/**/interpolations.npy"))]
    read_by_sync = [*read_by_report[:3], next((sweep_dir / "tune").glob("experiment_state-*.json")),
                    sweep_dir / "tune" / "tuner.pkl", trial_dir / "result.json",
                    next(final.glob("members/*/analysis/analysis.json")), final / "checkpoint.pt"]
    # what each command can still do: 0 = it succeeds (saying what it could not read), 2 = one line
    report_codes = [2, 2, 2, 0]
    sync_codes = [2, 0, 2, 2, 2, 0, 0, 0]  # sync writes tracking.json anew; a torn result line is skipped
    cases = [("report", path, size, code) for path, code in zip(read_by_report, report_codes)
             for size in (0, path.stat().st_size // 2)]
    cases += [("sync", path, path.stat().st_size // 2, code) for path, code in zip(read_by_sync, sync_codes)]
    for command, path, size, expected in cases:
        with cut_short(path, size):
            code = main([command, "cut", "--storage", storage])
        err = capsys.readouterr().err
        where = f"{command} with {path.relative_to(sweep_dir)} cut to {size} bytes"
        assert code == expected, f"{where}: {err[-2000:]}"
        if code:
            errors = [line for line in err.splitlines() if line.startswith("vaesweep: error: ")]
            assert len(errors) == 1, f"{where}: {err[-2000:]}"
    (run,) = children(sweep_dir)
    assert run.info.status == "FINISHED" and "stopped_early" not in run.data.tags, "nothing a sync read was torn"


@pytest.mark.xdist_group("finished")  # one worker runs the shared sweep, these tests in order
def test_an_unreadable_ray_state_is_rebuilt_keeping_finished_trials(finished, mnist_dir):
    config, sweep_dir = finished
    (run,) = children(sweep_dir)
    before = trial_results(sweep_dir)
    state = next((sweep_dir / "tune").glob("experiment_state-*.json"))
    state.write_bytes(state.read_bytes()[:100])  # torn

    again = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert again.returncode == 0 and "1 of 1 grid points finished" in again.stdout, again.stderr[-3000:]
    assert "rebuilt the sweep from its checkpoints: 1 of 1 grid points finished" in again.stderr, again.stderr[-3000:]
    assert list((sweep_dir / "tune").glob("unreadable-*/experiment_state-*.json")), "the torn state is kept aside"
    after = trial_results(sweep_dir)
    assert not set(after) & set(before), "once the rebuilt sweep finished, the superseded trial folder is removed"
    assert re.search(r"vaesweep: removed the 1 trial folders the rebuild superseded \(\d+\.\d MB\)", again.stderr)
    assert not (sweep_dir / "recovered.json").exists()
    (new_dir,) = after
    (replayed,) = after[new_dir]  # one result: the final epoch reported again, nothing trained
    (old,) = before.values()
    assert replayed["epoch"] == 2
    assert point_result(replayed)["test_log_likelihood"] == point_result(old[-1])["test_log_likelihood"]
    (same,) = children(sweep_dir)
    assert same.info.run_id == run.info.run_id and same.info.status == "FINISHED"
    assert epoch_steps(sweep_dir, run.info.run_id) == [1, 2]
    status = vaesweep("status", "cut", "--storage", str(sweep_dir.parent), "--json")
    assert status.returncode == 0 and '"TERMINATED"' in status.stdout, status.stdout


def kill_servers(report: subprocess.Popen, times: int, server_log: Path) -> float:
    """SIGKILL the report's MLflow server (its whole group) mid-read, ``times`` times: each once it has
    answered an API request (a new line in its log); returns when the last kill happened."""
    killed: set[int] = set()
    seen = server_log.read_text().count("/api/2.0/mlflow") if server_log.exists() else 0
    deadline = time.monotonic() + 120
    while len(killed) < times and report.poll() is None and time.monotonic() < deadline:
        server = server_below(report.pid, killed)
        served = server_log.read_text().count("/api/2.0/mlflow") if server_log.exists() else 0
        if server is None or served <= seen:
            time.sleep(0.02)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server, signal.SIGKILL)
        killed.add(server)
        seen, last_kill = served, time.monotonic()
    assert len(killed) == times, "the report ended before its server could be killed"
    return last_kill


@pytest.mark.xdist_group("finished")  # one worker runs the shared sweep, these tests in order
def test_the_reports_tracking_server_killed_is_restarted_once_then_reported_in_one_line(finished):
    _, sweep_dir = finished
    page = sweep_dir / "report" / "report.html"
    earlier, folder = page.read_bytes(), (sweep_dir / "report").stat().st_ino
    for times, code in ((1, 0), (2, 1)):
        report = subprocess.Popen([str(VAESWEEP), "report", "cut", "--storage", str(sweep_dir.parent)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        last_kill = kill_servers(report, times, sweep_dir / "mlflow-server.log")
        out, err = report.communicate(timeout=300)
        # the server is the report's child: its death is noticed at once, not after the HTTP client's
        # retries (7 with a doubling backoff by default: 514 s measured before the client was told to fail fast)
        assert time.monotonic() - last_kill < 30, f"the report took {time.monotonic() - last_kill:.0f} s after the kill"
        no_traceback(out + err)
        assert report.returncode == code, err[-3000:]
        assert "MLflow server stopped" in err and "starting it again" in err, err
        if code:
            (line,) = [line for line in err.splitlines() if line.startswith("vaesweep: error: ")]
            assert "stopped twice" in line and "mlflow-server.log" in line, line
            assert page.read_bytes() == earlier and (sweep_dir / "report").stat().st_ino == folder, \
                "the earlier report is left as it was"
        else:
            assert page.is_file() and (sweep_dir / "report").stat().st_ino != folder, "a new report replaced it whole"
            earlier, folder = page.read_bytes(), (sweep_dir / "report").stat().st_ino
