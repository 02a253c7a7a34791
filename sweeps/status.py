"""``vaesweep status``: each trial's grid point, state, MLflow run and final metrics.

Read from Ray's experiment state in ``STORAGE/NAME/tune`` (no Ray cluster and no MLflow server
needed), plus ``tracking.json`` and ``runs.json`` for the MLflow ids.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from sweeps.config import ConfigError
from analysis.metrics import FINAL_METRICS
from sweeps.layout import experiment_path, read_run_ids, read_tracking, saved_config

def sweep_status(storage: Path, name: str) -> dict[str, Any]:
    """The status document of sweep ``name`` under ``storage``."""
    sweep_dir = storage.expanduser().resolve() / name
    path = experiment_path(sweep_dir)
    if not path.is_dir():
        raise ConfigError(f"no sweep named {name!r} in {storage} (looked for {path}); start it with `vaesweep run`")
    if not any(path.glob("experiment_state-*.json")):
        raise ConfigError(f"sweep {name!r} has no Ray experiment state in {path} yet (it stopped before its first "
                          f"trial was scheduled); run `vaesweep run` with the same name again")
    from ray.tune import ExperimentAnalysis  # after the checks: a mistyped name is answered at once

    analysis = ExperimentAnalysis(str(path))
    epochs = saved_config(sweep_dir).train.epochs
    run_ids = read_run_ids(sweep_dir)
    trials = []
    for trial in analysis.trials:
        last = trial.last_result or {}
        done = last.get("epoch", 0)
        trials.append({
            "trial_id": trial.trial_id,
            "config": {key: trial.config.get(key) for key in ("alpha", "k", "seed")},
            "state": trial.status,
            "epochs_completed": done,
            "stopped_early": trial.status == "TERMINATED" and done < epochs,
            "mlflow_run_id": run_ids.get(trial.trial_id),
            "num_failures": trial.run_metadata.num_failures,
            "error": trial_error(trial),
            **{key: last[key] for key in FINAL_METRICS if key in last},
        })
    return {**read_tracking(sweep_dir), "sweep": name, "path": str(sweep_dir), "trials": trials}


def trial_error(trial) -> str | None:
    """The exception line of a failed trial, read from its error.txt in the trial's storage folder
    (readable without a Ray session; the driver's live copy is ``trial.error_file``)."""
    name = trial.run_metadata.error_filename
    return error_line(Path(trial.storage.trial_fs_path) / name) if name else None


def error_line(path: str | Path | None) -> str | None:
    """The exception line at the end of a Ray error.txt ('vae.errors.X: msg' shown as 'X: msg')."""
    if path is None or not Path(path).is_file():
        return None
    lines = Path(path).read_text().strip().splitlines()
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(\w+(?:Error|Exception|Exit)\b)", r"\1", lines[-1]) if lines else None


def format_status(status: dict[str, Any]) -> str:
    """A fixed-width table, one line per trial."""
    header = f"{'alpha':>7} {'k':>4} {'seed':>4} {'state':<11} {'epochs':>6} {'IS loglik':>10} {'active':>6} {'probe':>6}"
    lines = [f"sweep {status['sweep']} ({status['path']}); MLflow {status.get('tracking_uri', '?')}", header]
    for trial in sorted(status["trials"], key=lambda t: (t["config"]["alpha"], t["config"]["k"], t["config"]["seed"])):
        c = trial["config"]
        ll = trial.get("test_log_likelihood", math.nan)
        lines.append(f"{c['alpha']:>7.3g} {c['k']:>4} {c['seed']:>4} {trial['state']:<11} {trial['epochs_completed']:>6} "
                     f"{ll:>10.2f} {trial.get('active_components', '-'):>6} {trial.get('final_probe_means', math.nan):>6.3f}")
        if trial["stopped_early"]:
            lines.append(f"        stopped early by the scheduler after epoch {trial['epochs_completed']}")
        if trial["error"]:
            lines.append(f"        error: {trial['error']}")
    return "\n".join(lines)
