"""``vaesweep sync NAME``: write into MLflow whatever it lacks of a sweep, from Ray's trial results.

After a tracking outage (the server stopped mid-sweep, or unreachable when the sweep started) the
results are still complete in ``STORAGE/NAME/tune``: every epoch's result, each finished trial's
final checkpoint with its analysis folder, the errors. Sync replays them through ``TrialRuns``, the
same writer the driver's callback uses: it finds or creates the experiment, the parent run and one
child run per trial by the same tags, logs the epochs a run lacks, the spectrum and artifacts if
missing, and the end state. A second sync adds nothing. It holds the sweep's lock, so it refuses a
sweep whose driver is running (both would write the same runs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from analysis.metrics import ANALYSIS_FILE
from sweeps.config import ConfigError, SweepConfig
from sweeps.driver.outcome import outcome_of
from sweeps.driver.tracking_target import RemoteTracking, open_tracking
from sweeps.layout import (ANALYSIS_DIR, CHECKPOINTS, MEMBERS_DIR, RESULT_FILE, STORE_FILE, epoch_history, existing_sweep,
                           experiment_path, read_json, saved_config, write_tracking)
from sweeps.driver.lock import sweep_lock
from sweeps.mlflow_server import LocalMlflowServer, store_problem, with_restart
from sweeps.packs import NODE_KEY, member_failures, member_folder, member_results, trial_points
from sweeps.ray_files import last_results, ray_state_problem, trial_error
from sweeps.driver.run_writer import RUN_STATUS, TrialRuns, close_sweep
from vae.config import grid_point_label

def load_sweep_dir(storage: Path, name: str) -> tuple[Path, SweepConfig]:
    sweep_dir = existing_sweep(storage, name)
    if not experiment_path(sweep_dir).is_dir():
        raise ConfigError(f"sweep {name!r} has no Ray results in {experiment_path(sweep_dir)}; nothing to sync")
    return sweep_dir, saved_config(sweep_dir)


def final_checkpoint(trial_dir: Path) -> Path | None:
    """The newest checkpoint folder holding a readable final analysis (only the last epoch's has one;
    a pack's, one per member)."""
    done = []
    for folder in trial_dir.glob(CHECKPOINTS):
        analyses = list(folder.glob(f"{MEMBERS_DIR}/*/{ANALYSIS_DIR}/{ANALYSIS_FILE}"))
        try:
            for analysis in analyses:
                read_json(analysis)
        except ValueError:
            continue
        if any(path.is_file() for path in analyses):
            done.append(folder)
    return max(done, key=lambda p: p.name) if done else None


def saved_history(trial_dir: Path) -> list[dict[str, Any]]:
    """The epoch results saved with the trial's newest checkpoint that has them."""
    for folder in sorted(trial_dir.glob(CHECKPOINTS), reverse=True):
        if history := epoch_history(folder):
            return history
    return []


def fill_trial(runs: TrialRuns, config: SweepConfig, trial) -> tuple[dict[str, str], dict[str, int], dict[str, Any]]:
    """Log into the child runs of one trial's grid points (one, or a pack's members) what Ray's record
    holds and they lack: every epoch of ``result.json``, of Ray's last result and of the history saved
    with the newest checkpoint (an epoch a full disk kept out of both), the final analysis. Returns the
    runs' keys by grid-point label, what was added and Ray's last result of the trial; the runs are left
    open."""
    trial_dir = Path(trial.storage.trial_fs_path)
    results = last_results(trial_dir / RESULT_FILE)
    last = trial.last_result or {}
    for result in [*saved_history(trial_dir), last]:
        if "epoch" in result and all(known.get("epoch") != result["epoch"] for known in results):
            results.append(result)
    results.sort(key=lambda result: result.get("epoch", 0))
    points = trial_points(config, trial.config)
    node = results[-1].get(NODE_KEY, "") if results else ""
    created = runs.created
    keys = {grid_point_label(**point): runs.open(trial.trial_id, point, node) for point in points}
    added = {"runs": runs.created - created, "epochs": 0, "final": 0}
    for result in results:  # a retry repeats epochs: log_epoch logs each once
        if "epoch" in result:
            added["epochs"] += sum(runs.log_epoch(keys[grid_point_label(**point)], metrics)
                                   for point, metrics in member_results(points, result))
    folder = final_checkpoint(trial_dir)
    if folder is not None:
        for point in points:
            member = member_folder(folder, point)
            if (member / ANALYSIS_DIR / ANALYSIS_FILE).is_file():
                added["final"] += int(runs.log_final(keys[grid_point_label(**point)], member))
    return keys, added, last or (results[-1] if results else {})


def fill_missing_epochs(client: MlflowClient, experiment_id: str, parent_run_id: str, config: SweepConfig) -> int:
    """Before a sweep resumes: every epoch Ray recorded that MLflow lacks (a write lost to a full disk
    or a dead tracking server) is logged, so no epoch record is lost; returns how many."""
    from ray.tune import ExperimentAnalysis

    runs = TrialRuns(client, experiment_id, parent_run_id, config)
    trials = ExperimentAnalysis(str(experiment_path(config.sweep_dir()))).trials
    return sum(fill_trial(runs, config, trial)[1]["epochs"] for trial in trials)


def sync_trial(runs: TrialRuns, config: SweepConfig, trial) -> dict[str, int]:
    """Bring the child runs of one trial's grid points up to Ray's record and close them with its end
    state; returns what was added."""
    keys, added, last = fill_trial(runs, config, trial)  # last: Ray's own record (result.json may be torn)
    points = trial_points(config, trial.config)
    epoch = last.get("epoch", 0)
    stopped_at = epoch if trial.status == "TERMINATED" and epoch < config.train.epochs else None
    error = trial_error(trial) if trial.status == "ERROR" else None
    failed = member_failures(last)
    for point in points:
        diverged = failed.get(grid_point_label(**point))
        status = "FAILED" if diverged else RUN_STATUS.get(trial.status, "KILLED")
        runs.close(keys[grid_point_label(**point)], status, diverged or error, None if diverged else stopped_at)
    return added


def sync_sweep(storage: Path, name: str, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Replay sweep ``name`` into its MLflow store; returns counts of what was added. The sweep's own
    server is started again once if it dies under the sync (a replay adds nothing twice)."""
    from ray.tune import ExperimentAnalysis

    sweep_dir, config = load_sweep_dir(storage, name)
    if problem := ray_state_problem(sweep_dir):
        raise ConfigError(f"Ray's state of sweep {name} is unreadable ({problem}); `vaesweep run` with the same name "
                          "rebuilds it from its checkpoints (and writes MLflow as it goes)")

    store = sweep_dir / STORE_FILE  # missing or emptied: the sync writes a new one
    if not config.tracking.uri and store.is_file() and store.stat().st_size and (problem := store_problem(sweep_dir)):
        raise ConfigError(f"sweep {name!r}: {problem}; move it aside (e.g. to mlflow.db.damaged) and sync again: "
                          "a sync rebuilds every run from Ray's results")

    def replay(server: LocalMlflowServer | RemoteTracking) -> dict[str, Any]:
        try:
            experiment_id, parent_run_id = open_tracking(server, config)
        except Exception as err:  # noqa: BLE001 - any failure here means MLflow is not there
            raise ConfigError(f"MLflow at {server.uri} is unreachable ({str(err).splitlines()[0][:200]}); "
                              "start it and run sync again") from None
        write_tracking(config, experiment_id, parent_run_id)
        client = MlflowClient(server.wait())
        runs = TrialRuns(client, experiment_id, parent_run_id, config)
        trials = ExperimentAnalysis(str(experiment_path(sweep_dir))).trials
        totals = {"trials": len(trials), "runs": 0, "epochs": 0, "final": 0}
        for trial in trials:
            for key, count in sync_trial(runs, config, trial).items():
                totals[key] += count
        outcome = outcome_of(config, None)
        close_sweep(client, experiment_id, parent_run_id, outcome.parent_status, outcome.trial_states)
        return {**totals, "tracking_uri": server.uri, "parent_run_id": parent_run_id}

    with sweep_lock(sweep_dir, name, "sync"):
        if config.tracking.uri:
            return replay(RemoteTracking(config.tracking.uri))
        return with_restart(sweep_dir, replay, say)
