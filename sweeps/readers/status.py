"""``vaesweep status``: each grid point's state, MLflow run and final metrics, and the last run's estimate.

Read from Ray's experiment state in ``STORAGE/NAME/tune`` (no Ray cluster and no MLflow server
needed), plus ``tracking.json`` and ``runs.json`` for the MLflow ids. A damaged folder is shown as
far as it can be read: when Ray's state is unreadable (a torn write) the trials are read from their
folders (``params.json``, ``result.json``) with the state unknown; a damaged ``sweep.yaml`` or
``tracking.json`` leaves its fields unknown; each gap is a note. Only a folder with nothing
readable is an error.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from analysis.metrics import FINAL_METRICS, GRID, MetricName
from sweeps.config import ConfigError, SweepConfig, sweep_path
from sweeps.estimate_record import against_actual, read_estimate
from sweeps.layout import (ERROR_FILE, EXPERIMENT_STATE, PARAMS_FILE, RESULT_FILE, TUNE_DIR, experiment_path, read_json,
                           read_run_ids, read_tracking, saved_config)
from sweeps.packs import PACK_KEY, STEP_MODE_KEY, member_failures, member_results, trial_points
from sweeps.ray_files import error_line, last_results, ray_state_problem, trial_error
from vae.config import grid_point_label

UNKNOWN = "-"
# The shape of `vaesweep status --json` (README "Status as JSON"): raised whenever a key is renamed,
# removed or moved, so that scripts can check what they read. 1: this shape, documented (before it
# there was no number, and a release moved the final metrics out of a nested object unannounced).
STATUS_SCHEMA = 1
POINT_IN_NAME = re.compile(r"alpha=(?P<alpha>[-+\w.]+),k=(?P<k>\d+),seed=(?P<seed>\d+)")


def sweep_status(storage: Path, name: str) -> dict[str, Any]:
    """The status document of sweep ``name`` under ``storage`` (``notes`` lists what could not be read)."""
    sweep_dir = sweep_path(storage, name)
    path = experiment_path(sweep_dir)
    if not path.is_dir():
        raise ConfigError(f"no sweep named {name!r} in {storage} (looked for {path}); start it with `vaesweep run`")
    notes: list[str] = []
    try:
        config: SweepConfig | None = saved_config(sweep_dir)
    except ConfigError as err:
        config = None
        notes.append(f"{err} (epoch counts cannot be judged, packs not told apart)")
    try:
        tracking = read_tracking(sweep_dir)
    except ConfigError as err:
        tracking = {}
        notes.append(str(err))
    problem = ray_state_problem(sweep_dir)
    if problem is None and not any(path.glob(EXPERIMENT_STATE)):
        if not any(path.glob(f"*/{PARAMS_FILE}")):
            raise ConfigError(f"sweep {name!r} has no Ray experiment state in {path} yet (it stopped before its first "
                              f"trial was scheduled); run `vaesweep run` with the same name again")
        problem = f"{TUNE_DIR}/ has no {EXPERIMENT_STATE}"
    if problem is None:
        trials = ray_trials(path, config, read_run_ids(sweep_dir))
    else:
        notes.append(f"Ray's state is unreadable ({problem}): trials read from their folders, states unknown; "
                     "`vaesweep run` with the same name rebuilds the sweep")
        trials = folder_trials(path, config, notes)
    # "trials": one row per grid point (the key's name is schema 1's, kept for the scripts that read it)
    return {"schema": STATUS_SCHEMA, **tracking, "sweep": name, "path": str(sweep_dir), "trials": trials, "notes": notes,
            "estimate": estimate_state(sweep_dir)}


def estimate_state(sweep_dir: Path) -> dict[str, Any] | None:
    """The last run's estimate beside what happened (``estimate.json``), None without one."""
    recorded = read_estimate(sweep_dir)
    if recorded is None:
        return None
    return {"line": recorded.get("line"), "wall_s": recorded["wall_s"], "started": recorded["started"],
            "ended": recorded.get("ended"), "against_actual": against_actual(recorded, time.time())}


def ray_trials(path: Path, config: SweepConfig | None, run_ids: dict[str, str]) -> list[dict[str, Any]]:
    """One entry per grid point (a pack's members each), as Ray's experiment state records its trial."""
    from ray.tune import ExperimentAnalysis  # after the checks: a mistyped name is answered at once

    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)  # a torn result.json: a note below
    epochs = config.train.epochs if config else None
    entries = []
    for trial in ExperimentAnalysis(str(path)).trials:
        last = trial.last_result or {}
        done = last.get("epoch", 0)
        if PACK_KEY in trial.config and config is None:  # its members are in the unreadable sweep.yaml
            points = [{"alpha": None, "k": None, "seed": None}]
        else:
            points = trial_points(config, trial.config) if config else [
                {key: trial.config.get(key) for key in GRID}]
        metrics = {grid_point_label(**point): own for point, own in member_results(points, last)}
        failed = member_failures(last)
        for point in points:
            own = metrics.get(grid_point_label(**point), {})
            member_error = failed.get(grid_point_label(**point)) if None not in point.values() else None
            entries.append({
                "trial_id": trial.trial_id,
                **({"pack": trial.config[PACK_KEY]} if PACK_KEY in trial.config else {}),
                "config": point,
                "state": "ERROR" if member_error else trial.status,
                "epochs_completed": done,
                "stopped_early": trial.status == "TERMINATED" and epochs is not None and done < epochs,
                "mlflow_run_id": (run_ids.get(grid_point_label(**point)) if None not in point.values() else None)
                                 or run_ids.get(trial.trial_id),
                "num_failures": trial.run_metadata.num_failures,
                "error": member_error or trial_error(trial),
                "step_mode": own.get(STEP_MODE_KEY),
                **{key: own[key] for key in FINAL_METRICS if key in own},
            })
    return entries


def folder_points(params_file: Path, config: SweepConfig | None) -> list[dict[str, Any]] | None:
    """The grid points of a trial folder: from its ``params.json`` (a pack's through the sweep's config),
    else from the folder's name (Ray names it after a point); None when neither can be read."""
    try:
        params = read_json(params_file)
        if PACK_KEY in params and config is not None:
            return trial_points(config, params)
        return [{key: params[key] for key in GRID}]
    except (ValueError, KeyError, TypeError, IndexError):
        named = POINT_IN_NAME.search(params_file.parent.name)
        if named is None:
            return None
        return [{"alpha": float(named["alpha"]), "k": int(named["k"]), "seed": int(named["seed"])}]


def folder_trials(path: Path, config: SweepConfig | None, notes: list[str]) -> list[dict[str, Any]]:
    """Each grid point as its trial folders show it (the folder with the most epochs when a rebuilt
    sweep has several): config from ``params.json``, metrics from ``result.json``; state unknown."""
    epochs = config.train.epochs if config else None
    best: dict[tuple, dict[str, Any]] = {}
    for params_file in sorted(path.glob(f"*/{PARAMS_FILE}")):
        points = folder_points(params_file, config)
        if points is None:
            notes.append(f"{params_file.parent.name}/params.json is unreadable: that trial is not shown")
            continue
        results = [r for r in last_results(params_file.parent / RESULT_FILE) if "epoch" in r]
        last = results[-1] if results else {}
        done = last.get("epoch", 0)
        error = error_line(params_file.parent / ERROR_FILE)
        for point in points:
            own = next((metrics for _, metrics in member_results([point], last)), {})
            trial = {"trial_id": last.get("trial_id", UNKNOWN), "config": point,
                     "state": "TERMINATED" if epochs is not None and done >= epochs else UNKNOWN,
                     "epochs_completed": done, "stopped_early": False, "mlflow_run_id": None, "num_failures": None,
                     "error": error, "step_mode": own.get(STEP_MODE_KEY),
                     **{key: own[key] for key in FINAL_METRICS if key in own}}
            key = tuple(point.values())
            if key not in best or done > best[key]["epochs_completed"]:
                best[key] = trial
    return list(best.values())


def cell(value: Any, spec: str, width: int) -> str:
    """``value`` formatted by ``spec`` in ``width`` columns, '-' when it is unknown (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == UNKNOWN:
        return f"{UNKNOWN:>{width}}"
    return f"{value:>{width}{spec}}"


def format_status(status: dict[str, Any]) -> str:
    """A fixed-width table, one line per grid point, after the notes on what could not be read."""
    header = f"{'alpha':>7} {'k':>4} {'seed':>4} {'state':<11} {'epochs':>6} {'IS loglik':>10} {'active':>6} {'probe':>6}"
    lines = [f"sweep {status['sweep']} ({status['path']}); MLflow {status.get('tracking_uri', '?')}"]
    if status.get("estimate"):
        lines.append(f"time: {status['estimate']['against_actual']} ({status['estimate']['line']})")
    lines += [f"note: {note}" for note in status.get("notes", [])]
    modes = Counter(trial["step_mode"] for trial in status["trials"] if trial.get("step_mode"))
    if modes:
        lines.append("steps: " + "; ".join(f"{mode} ({count} grid point{'s' * (count > 1)})"
                                           for mode, count in modes.most_common()))
    lines.append(header)

    def order(trial: dict[str, Any]) -> tuple:
        return tuple(math.inf if v is None else v for v in trial["config"].values())

    for trial in sorted(status["trials"], key=order):
        c = trial["config"]
        lines.append(f"{cell(c['alpha'], '.3g', 7)} {cell(c['k'], '', 4)} {cell(c['seed'], '', 4)} {trial['state']:<11} "
                     f"{cell(trial['epochs_completed'], '', 6)} {cell(trial.get(MetricName.test_log_likelihood), '.2f', 10)} "
                     f"{cell(trial.get(MetricName.active_components), '', 6)} {cell(trial.get(MetricName.final_probe_means), '.3f', 6)}")
        if trial["stopped_early"]:
            lines.append(f"        stopped early by the scheduler after epoch {trial['epochs_completed']}")
        if trial["error"]:
            lines.append(f"        error: {trial['error']}")
    return "\n".join(lines)
