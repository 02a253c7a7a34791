"""Where a sweep's files live, readable without Ray, MLflow or torch (quick answers in the CLI).

``STORAGE/NAME/`` holds ``sweep.yaml`` (the validated config), ``tracking.json`` (the MLflow store,
experiment and parent run), ``tune/`` (Ray's experiment) and, for the embedded store, ``mlflow.db``
and ``mlartifacts/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from sweeps.config import ConfigError, SweepConfig, validate_sweep
from sweeps.mlflow_server import backend_uri
from vae.atomic import write_atomic

TUNE_DIR = "tune"
SWEEP_FILE = "sweep.yaml"
ANALYSIS_DIR = "analysis"  # the final analysis: a folder beside the final checkpoint, and an MLflow artifact folder
# In each of a sweep trial's checkpoint folders: every epoch's result up to that checkpoint, so an epoch
# whose record a full disk cost both MLflow and Ray's result.json is still written on resume.
HISTORY_FILE = "history.json"


def experiment_path(sweep_dir: Path) -> Path:
    return sweep_dir / TUNE_DIR


def epoch_history(checkpoint_folder: Path) -> list[dict[str, Any]]:
    """The epoch results saved with a checkpoint ([] when it has none or it is unreadable)."""
    try:
        history = json.loads((checkpoint_folder / HISTORY_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return []
    return [result for result in history if isinstance(result, dict)] if isinstance(history, list) else []


def existing_sweep(storage: Path, name: str) -> Path:
    """``STORAGE/NAME`` of a sweep `vaesweep run` has started; ConfigError saying where it looked."""
    sweep_dir = storage.expanduser().resolve() / name
    if not (sweep_dir / SWEEP_FILE).is_file():
        raise ConfigError(f"no sweep named {name!r} in {storage} (looked for {sweep_dir / SWEEP_FILE}); "
                          "start it with `vaesweep run`")
    return sweep_dir


# sweep.yaml begins and ends with these lines, so that a file cut short is told from a whole one (a
# YAML mapping cut between two keys is still a valid mapping); files written before have neither.
SETTINGS_HEAD = "# vaesweep: the validated settings of this sweep\n"
SETTINGS_END = "# end of settings\n"


def write_settings(config: SweepConfig) -> None:
    """Write the sweep's ``sweep.yaml`` (atomically, between its head and end lines)."""
    body = yaml.safe_dump(config.to_dict(), sort_keys=False)
    write_atomic(config.sweep_dir() / SWEEP_FILE, (SETTINGS_HEAD + body + SETTINGS_END).encode())


def saved_settings(sweep_dir: Path) -> dict[str, Any] | None:
    """The settings a sweep was started with (``sweep.yaml``), None if it has none; ConfigError if damaged."""
    path = sweep_dir / SWEEP_FILE
    if not path.exists():
        return None
    try:
        text = path.read_text()
        saved = yaml.safe_load(text)
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        text, saved = "", None
    if not isinstance(saved, dict) or (text.startswith(SETTINGS_HEAD) and not text.endswith(SETTINGS_END)):
        raise ConfigError(f"{path} is corrupt (cut short, or not a mapping of settings); restore it from the sweep's "
                          "MLflow parent run params, or choose another --name")
    return saved


def saved_config(sweep_dir: Path) -> SweepConfig:
    """The validated config of a sweep that has a ``sweep.yaml`` (see ``existing_sweep``)."""
    return validate_sweep(saved_settings(sweep_dir), f"{sweep_dir / SWEEP_FILE}: ")


def read_tracking(sweep_dir: Path) -> dict[str, Any]:
    """The sweep's ``tracking.json`` ({} if there is none); ConfigError if it is damaged."""
    path = sweep_dir / "tracking.json"
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (ValueError, OSError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("tracking_uri"), str):
        raise ConfigError(f"{path} is corrupt; run `vaesweep sync {sweep_dir.name}` to rewrite it")
    return record


RUN_IDS_FILE = "runs.json"  # grid point label (a search's Ray trial id) -> MLflow run id, for `vaesweep status`


def read_run_ids(sweep_dir: Path) -> dict[str, str]:
    """Which MLflow run each trial writes to ({} when none is known or the file is unreadable)."""
    try:
        record = json.loads((sweep_dir / RUN_IDS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def add_run_id(sweep_dir: Path, key: str, run_id: str) -> None:
    """Record a run's id under its key (written atomically; only the sweep's driver or sync writes)."""
    record = {**read_run_ids(sweep_dir), key: run_id}
    write_atomic(sweep_dir / RUN_IDS_FILE, json.dumps(record, indent=1).encode())


def write_tracking(config: SweepConfig, experiment_id: str | None, parent_run_id: str | None) -> str:
    """Record where the sweep's MLflow records live (``tracking.json``); returns the store URI."""
    store = config.tracking.uri or backend_uri(config.sweep_dir())
    record = {"tracking_uri": store, "experiment": config.tracking.experiment, "experiment_id": experiment_id,
              "parent_run_id": parent_run_id}
    write_atomic(config.sweep_dir() / "tracking.json", json.dumps(record, indent=2).encode())
    return store
