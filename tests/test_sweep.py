"""End-to-end sweeps through the real CLI: real Ray (local), real MLflow (sqlite via the sweep's
server), real MNIST subsets. Marked slow: about a minute each."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from analysis.metrics import FINAL_METRICS
from sweep_helpers import NO_ESTIMATE, VAESWEEP, children, epoch_steps, tracking, vaesweep, write_config
from sweeps.readers.status import STATUS_SCHEMA

pytestmark = pytest.mark.slow


def terminated_trial_dirs(sweep_dir: Path) -> list[str]:
    """Trial folders Ray's saved experiment state records as TERMINATED (what a restore keeps)."""
    states = sorted((sweep_dir / "tune").glob("experiment_state-*.json"))
    if not states:
        return []
    try:
        trials = [json.loads(t[0]) if isinstance(t[0], str) else t[0] for t in json.loads(states[-1].read_text())["trial_data"]]
    except (json.JSONDecodeError, KeyError):  # caught mid-write
        return []
    return [t["relative_logdir"] for t in trials if t["status"] == "TERMINATED"]


def result_lines(sweep_dir: Path) -> dict[str, int]:
    return {p.parent.name: len(p.read_text().splitlines()) for p in (sweep_dir / "tune").glob("*/result.json")}


@pytest.fixture(scope="session")  # not module: under pytest-xdist a module fixture may be built twice
def tiny(mnist_dir, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """A 2 alpha x 2 seed grid run once for the tests of this module: (root, config file, the run).
    Every trial raises once after its second epoch (the test hook), so every trial is also retried."""
    root = tmp_path_factory.mktemp("tiny")
    config = write_config(root, "tiny", [0.0, 1.0], grid={"alpha": [0.0, 1.0], "k": [5], "seed": [0, 1]})
    return root, config, vaesweep("run", str(config), "--data-dir", str(mnist_dir),
                                  env={"VAESWEEP_FAIL_ONCE_AT_EPOCH": "2"}, estimate=True)


@pytest.mark.xdist_group("tiny")  # one worker runs the shared sweep once
def test_tiny_grid_end_to_end(tiny):
    root, _, done = tiny
    sweep_dir = root / "runs" / "tiny"
    assert done.returncode == 0, done.stderr[-3000:]
    assert "vaesweep ui tiny" in done.stdout

    runs = children(sweep_dir)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted((r.data.tags["alpha"], r.data.tags["seed"]) for r in runs) == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    for run in runs:
        assert epoch_steps(sweep_dir, run.info.run_id) == [1, 2], "each epoch once across the retry"
        assert run.data.params["trial.k"] == "5" and run.data.params["eval.is_samples"] == "20"
        assert -1000 < run.data.metrics["test_log_likelihood"] < 0
        if run.data.tags["alpha"] == "0":
            assert run.data.metrics["test_vr_bound_alpha"] == pytest.approx(run.data.metrics["test_vr_bound_0"])
        assert "final_probe_pixels" in run.data.metrics and "probe_means" in run.data.metrics
        artifacts = sweep_dir / "mlartifacts" / run.info.experiment_id / run.info.run_id / "artifacts"
        for name in ("analysis/analysis.json", "analysis/interpolations.png", "analysis/spectrum.csv",
                     "analysis/probes.csv", "checkpoint/checkpoint.pt"):
            assert (artifacts / name).stat().st_size > 0, name
    info = tracking(sweep_dir)
    parent = MlflowClient(f"sqlite:///{sweep_dir / 'mlflow.db'}").get_run(info["parent_run_id"])
    assert parent.info.status == "FINISHED"

    status = json.loads(vaesweep("status", "tiny", "--storage", str(root / "runs"), "--json").stdout)
    # the documented shape of schema 1 (README "Status as JSON"): a change of it must raise the number
    assert status["schema"] == STATUS_SCHEMA == 1
    assert set(status) == {"schema", "tracking_uri", "experiment", "experiment_id", "parent_run_id", "sweep", "path",
                           "trials", "notes", "estimate"}
    assert status["estimate"]["line"].startswith("estimate: ") and status["estimate"]["ended"] is not None
    entry = {"trial_id", "config", "state", "epochs_completed", "stopped_early", "mlflow_run_id", "num_failures",
             "error", "step_mode"}
    for trial in status["trials"]:
        assert entry <= set(trial) <= entry | set(FINAL_METRICS) and "test_log_likelihood" in trial, \
            "final metrics sit at the trial's top level"
        assert set(trial["config"]) == {"alpha", "k", "seed"}
    assert {t["state"] for t in status["trials"]} == {"TERMINATED"}
    assert {t["step_mode"] for t in status["trials"]} == {"eager on cpu"}
    assert {run.data.tags["step_mode"] for run in runs} == {"eager on cpu"}
    assert {t["num_failures"] for t in status["trials"]} == {1}, "each trial failed once and was retried"
    assert {t["mlflow_run_id"] for t in status["trials"]} == {r.info.run_id for r in runs}
    assert status["parent_run_id"] == info["parent_run_id"]


@pytest.mark.xdist_group("tiny")  # one worker runs the shared sweep once
def test_report_of_the_tiny_sweep(tiny):
    root, _, done = tiny
    assert done.returncode == 0
    out = root / "report"
    report = vaesweep("report", "tiny", "--storage", str(root / "runs"), "--out", str(out))
    assert report.returncode == 0, report.stderr[-3000:]
    stems = ["fig1_spectrum", "fig2_active_components", "fig2_bounds", "fig3_probes", "fig4_geodesics", "fig5_interpolations"]
    for stem in stems:
        assert (out / f"{stem}.png").stat().st_size > 0 and (out / f"{stem}.pdf").stat().st_size > 0, stem
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6 and "<li>none</li>" in page

    summary = pd.read_csv(out / "summary.csv")
    runs = children(root / "runs" / "tiny")
    for alpha in ("0", "1"):
        values = [r.data.metrics["test_log_likelihood"] for r in runs if r.data.tags["alpha"] == alpha]
        row = summary[(summary.alpha == float(alpha)) & (summary.metric == "test_log_likelihood")].iloc[0]
        assert row["count"] == 2
        assert row["mean"] == pytest.approx(np.mean(values)) and row["std"] == pytest.approx(np.std(values, ddof=1))
    info = tracking(root / "runs" / "tiny")
    logged = root / "runs" / "tiny" / "mlartifacts" / info["experiment_id"] / info["parent_run_id"] / "artifacts"
    assert (logged / "report" / "report.html").is_file() and (logged / "report" / "verdicts.json").is_file()

    # the verdicts, recomputed from trials.csv alone (no sweep folder, no MLflow), are the report's
    table = pd.read_csv(out / "trials.csv")
    assert len(table) == len(runs) and {"status", "alpha", "k", "seed", "test_log_likelihood"} <= set(table.columns)
    written = json.loads((out / "verdicts.json").read_text())
    assert sorted(written) == ["a", "b", "c", "d"] and f"claim (a): {written['a']['text']}" in report.stdout
    redo = vaesweep("report", "--trials", str(out / "trials.csv"), "--out", str(root / "redo"))
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert (root / "redo" / "verdicts.json").read_text() == (out / "verdicts.json").read_text()

    # a partial sweep: one more grid point than was run is listed as missing, the rest still drawn
    partial = root / "partial"
    shutil.copytree(root / "runs", partial)
    sweep_yaml = partial / "tiny" / "sweep.yaml"
    config = yaml.safe_load(sweep_yaml.read_text())
    config["grid"]["alpha"].append(2.0)
    sweep_yaml.write_text(yaml.safe_dump(config))
    again = vaesweep("report", "tiny", "--storage", str(partial), "--out", str(root / "report2"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "a2_k5_s0: no finished run (not started)" in again.stdout
    assert "a2_k5_s0: no finished run" in (root / "report2" / "report.html").read_text()


@pytest.mark.xdist_group("tiny")  # one worker runs the shared sweep once
def test_ui_serves_the_embedded_store_on_loopback(tiny):
    root, _, done = tiny
    assert done.returncode == 0
    port = 47000 + os.getpid() % 1000
    ui = subprocess.Popen([str(VAESWEEP), "ui", "tiny", "--storage", str(root / "runs"), "--port", str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = MlflowClient(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        while True:
            try:
                experiment = client.get_experiment_by_name("vaesweep")
                break
            except Exception:
                assert time.monotonic() < deadline and ui.poll() is None, "the UI did not come up"
                time.sleep(1)
        assert experiment.experiment_id == tracking(root / "runs" / "tiny")["experiment_id"]
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs
        assert len(client.search_runs([experiment.experiment_id])) == 5  # parent + 4 trials
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(timeout=30)


@pytest.mark.xdist_group("tiny")  # one worker runs the shared sweep once
def test_second_run_resumes_and_reruns_nothing(tiny, mnist_dir):
    root, config, done = tiny
    assert done.returncode == 0
    sweep_dir = root / "runs" / "tiny"
    runs = children(sweep_dir)
    before = result_lines(sweep_dir)
    again = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming sweep tiny" in again.stdout
    assert result_lines(sweep_dir) == before, "finished trials must not run again"
    assert sorted(r.info.run_id for r in children(sweep_dir)) == sorted(r.info.run_id for r in runs)


def test_killed_driver_resumes_without_duplicates(mnist_dir, tmp_path):
    config = write_config(tmp_path, "killed", [0.0, 1.0, 2.0], epochs=4,
                          train={"epochs": 4, "train_subset": 1500, "test_subset": 300})
    sweep_dir = tmp_path / "runs" / "killed"
    # Ray saves its experiment state at most every 10 s by default: three short trials could all end
    # within one such window (seen once), and the state read below would show none finished, then all
    driver = subprocess.Popen([str(VAESWEEP), "run", str(config), "--data-dir", str(mnist_dir), NO_ESTIMATE],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                              env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"})
    deadline = time.monotonic() + 400
    finished_before: list[str] = []
    while time.monotonic() < deadline and driver.poll() is None and not finished_before:
        time.sleep(1)
        finished_before = terminated_trial_dirs(sweep_dir)
    assert driver.poll() is None and 0 < len(finished_before) < 3, "expected to kill the driver mid-sweep"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    lines_before = result_lines(sweep_dir)

    done = vaesweep("run", str(config), "--data-dir", str(mnist_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr, "a clean console on resume: " + done.stderr[-3000:]
    runs = children(sweep_dir)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert epoch_steps(sweep_dir, run.info.run_id) == [1, 2, 3, 4]
    info = tracking(sweep_dir)
    everything = MlflowClient(info["tracking_uri"]).search_runs([info["experiment_id"]])
    assert len(everything) == 4 and {r.info.status for r in everything} == {"FINISHED"}, \
        "the killed driver's runs (parent and trials) were adopted and closed, none duplicated"
    lines_after = result_lines(sweep_dir)
    for trial_dir in finished_before:  # finished trials were not trained again
        assert lines_after[trial_dir] == lines_before[trial_dir] == 4
    assert set(terminated_trial_dirs(sweep_dir)) == set(lines_after)
