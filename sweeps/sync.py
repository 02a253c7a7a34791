"""``vaesweep sync NAME``: write into MLflow whatever it lacks of a sweep, from Ray's trial results.

After a tracking outage (the server stopped mid-sweep, or unreachable when the sweep started) the
results are still complete in ``STORAGE/NAME/tune``: every epoch's result, each finished trial's
final checkpoint with its analysis folder, the errors. Sync finds or creates the experiment, the
parent run and one child run per trial by the same tags a live sweep uses, then logs the epochs a
run lacks, the spectrum and artifacts if missing, and the final status. A second sync adds nothing.
Run it when the sweep is not running (a live trial and sync would both write the same run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from ray.tune.result import AUTO_RESULT_KEYS

from sweeps.config import ConfigError, SweepConfig
from sweeps.launch import open_tracking, tracking_server
from sweeps.layout import existing_sweep, experiment_path, saved_config, write_tracking
from sweeps.status import last_error_line
from sweeps.tracking import (ANALYSIS_DIR, ERROR_TAG, PARENT_TAG, TRIAL_TAG, adopt_or_create_run, epoch_metrics,
                             log_final, logged_epochs)
from sweeps.trainable import NODE_KEY, run_identity, trial_config

# Ray's trial states -> MLflow run states (a trial that is neither done nor failed was interrupted).
RUN_STATUS = {"TERMINATED": "FINISHED", "ERROR": "FAILED"}


def load_sweep_dir(storage: Path, name: str) -> tuple[Path, SweepConfig]:
    sweep_dir = existing_sweep(storage, name)
    if not experiment_path(sweep_dir).is_dir():
        raise ConfigError(f"sweep {name!r} has no Ray results in {experiment_path(sweep_dir)}; nothing to sync")
    return sweep_dir, saved_config(sweep_dir)


def trial_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """What the trial reported, without the keys Ray adds to every result."""
    return {k: v for k, v in result.items() if k not in AUTO_RESULT_KEYS}


def final_checkpoint(trial_dir: Path) -> Path | None:
    """The newest checkpoint folder holding the final analysis (only the last epoch's has one)."""
    done = [p for p in trial_dir.glob("checkpoint_*") if (p / ANALYSIS_DIR / "analysis.json").is_file()]
    return max(done, key=lambda p: p.name) if done else None


def sync_trial(client: MlflowClient, experiment_id: str, parent_run_id: str, config: SweepConfig, trial) -> dict[str, int]:
    """Bring one trial's child run up to Ray's record; returns what was added."""
    trial_dir = Path(trial.storage.trial_fs_path)
    result_file = trial_dir / "result.json"
    results = [json.loads(line) for line in result_file.read_text().splitlines()] if result_file.is_file() else []
    node = results[-1].get(NODE_KEY, "") if results else ""
    identity = run_identity(config, trial_config(config, trial.config), node)
    key = {TRIAL_TAG: trial.trial_id, PARENT_TAG: parent_run_id}
    run_id, adopted = adopt_or_create_run(client, experiment_id, key, *identity)
    added = {"runs": int(not adopted), "epochs": 0, "final": 0}
    have = logged_epochs(client, run_id)
    by_epoch = {int(r["epoch"]): trial_metrics(r) for r in results if "epoch" in r}  # a retry repeats epochs
    for epoch in sorted(set(by_epoch) - have):
        client.log_batch(run_id, metrics=epoch_metrics(epoch, by_epoch[epoch]))
        added["epochs"] += 1
    folder = final_checkpoint(trial_dir)
    if folder is not None:
        analysis = json.loads((folder / ANALYSIS_DIR / "analysis.json").read_text())
        added["final"] = int(log_final(client, run_id, folder, analysis["eigenvalues"]))
    error = last_error_line(trial)
    if trial.status == "ERROR" and error:
        client.set_tag(run_id, ERROR_TAG, error[:500])
    client.set_terminated(run_id, RUN_STATUS.get(trial.status, "KILLED"))
    return added


def sync_sweep(storage: Path, name: str) -> dict[str, Any]:
    """Replay sweep ``name`` into its MLflow store; returns counts of what was added."""
    from ray.tune import ExperimentAnalysis

    sweep_dir, config = load_sweep_dir(storage, name)
    with tracking_server(config) as server:
        try:
            experiment_id, parent_run_id = open_tracking(server, config)
        except Exception as err:  # noqa: BLE001 - any failure here means MLflow is not there
            raise ConfigError(f"MLflow at {server.uri} is unreachable ({str(err).splitlines()[0][:200]}); "
                              "start it and run sync again") from None
        write_tracking(config, experiment_id, parent_run_id)
        client = MlflowClient(server.wait())
        trials = ExperimentAnalysis(str(experiment_path(sweep_dir))).trials
        totals = {"trials": len(trials), "runs": 0, "epochs": 0, "final": 0}
        for trial in trials:
            for key, count in sync_trial(client, experiment_id, parent_run_id, config, trial).items():
                totals[key] += count
        complete = config.search != "grid" or len(trials) == len(config.trials())
        all_done = complete and all(t.status == "TERMINATED" for t in trials)
        client.set_terminated(parent_run_id, "FINISHED" if all_done else "FAILED")
    return {**totals, "tracking_uri": server.uri, "parent_run_id": parent_run_id}
