"""Where a sweep's files live, readable without Ray, MLflow or torch (quick answers in the CLI): the
one table of the sweep folder's file names.

``STORAGE/NAME/`` holds ``sweep.yaml`` (the validated config), ``data.json`` (what it trains on), ``tracking.json`` (the MLflow store,
experiment and parent run), ``runs.json``, the driver's lock, ``tune/`` (Ray's experiment: its
state files, one folder per trial with Ray's ``params.json``, ``result.json``, ``error.txt`` and
the trial's checkpoint folders) and, for the embedded store, ``mlflow.db`` and ``mlartifacts/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from analysis.metrics import ANALYSIS_FILE
from sweeps.config import ConfigError, SweepConfig, sweep_path, validate_sweep
from vae.atomic import write_atomic
from vae.formats import FORMAT, FORMAT_KEY, SETTINGS_END, SETTINGS_HEAD, member_metrics_path, settings_cut_short

SWEEP_FILE = "sweep.yaml"
TRACKING_FILE = "tracking.json"
DATA_FILE = "data.json"  # the data set's spec, checksum, sizes and image side, checked on resume
RUN_IDS_FILE = "runs.json"  # grid point label (a search's Ray trial id) -> MLflow run id, for `vaesweep status`
LOCK_FILE = ".driver.lock"  # flock()ed by the process that writes the sweep (sweeps/driver/lock.py)
HOLDER_FILE = "driver.json"  # who holds the lock: pid, host, command, start time
RECOVERED_FILE = "recovered.json"  # after a rebuild: grid point label -> its newest readable checkpoint folder
ESTIMATE_FILE = "estimate.json"  # the cost estimate the last run started with, and when it started
STORE_FILE = "mlflow.db"  # the embedded MLflow store
ARTIFACTS_DIR = "mlartifacts"
TUNE_DIR = "tune"
# Ray's experiment state in TUNE_DIR; a sweep whose state cannot be read is rebuilt (sweeps/driver/recovery.py)
TUNER_FILE = "tuner.pkl"
EXPERIMENT_STATE = "experiment_state-*.json"
BASIC_VARIANT_STATE = "basic-variant-state-*.json"  # a pickle, whatever its name says
SEARCHER_STATE = "searcher-state-*.pkl"
RAY_STATE_FILES = (TUNER_FILE, EXPERIMENT_STATE, BASIC_VARIANT_STATE, "search_gen_state-*.json", SEARCHER_STATE,
                   "callback-states-*.pkl")
UNREADABLE_PREFIX = "unreadable-"  # TUNE_DIR/unreadable-<time>/: Ray's state set aside by a rebuild
# Ray's files in each trial folder
PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
CHECKPOINTS = "checkpoint_*"
CHECKPOINTS_KEPT = 2  # tune.CheckpointConfig(num_to_keep) of every sweep: checkpoint folders per trial
# In a trial's checkpoint folder: every epoch's result up to that checkpoint, so an epoch whose record
# a full disk cost both MLflow and Ray's result.json is still written on resume.
HISTORY_FILE = "history.json"
# In a trial's final checkpoint folder: one folder per grid point, with its own checkpoint, its last
# epoch's metrics and its analysis (the analysis also an MLflow artifact folder).
MEMBERS_DIR = "members"
MEMBER_METRICS_FILE = "final_metrics.json"
ANALYSIS_DIR = "analysis"
# A `vaesweep train` run folder's record: config, data, evaluation settings, per-epoch history, final metrics.
RUN_RECORD_FILE = "metrics.json"
REPORT_DIR = "report"  # `vaesweep report`'s default output folder
SERVER_LOG = "mlflow-server.log"  # the log of the sweep's own MLflow server
GROWN_PREFIX = "grown-"  # TUNE_DIR/grown-<time>/: Ray's state of the sweep before it grew


class Entry(NamedTuple):
    """One file or folder of a sweep folder, for the reference page (docs/sweep-folder.md)."""

    name: str
    where: str
    holds: str


SWEEP = "`STORAGE/NAME/`"
TUNE = f"`STORAGE/NAME/{TUNE_DIR}/`"
TRIAL = f"{TUNE}, in each trial's folder"
FINAL = "in a trial's final checkpoint folder"
FOLDER = (
    Entry(SWEEP_FILE, SWEEP, "the sweep's validated config, every default written; a resume or growth is checked against it"),
    Entry(DATA_FILE, SWEEP, "the data set: its spec, name, sizes, image side, labels, SHA-256; a resume refuses other data"),
    Entry(TRACKING_FILE, SWEEP, "where the MLflow records are: store URI, experiment, parent run id"),
    Entry(RUN_IDS_FILE, SWEEP, "each grid point's MLflow run id (for `vaesweep status`)"),
    Entry(ESTIMATE_FILE, SWEEP, "the cost estimate the last run started with, its start and end times"),
    Entry(LOCK_FILE, SWEEP, "the lock the running driver holds (`vaesweep run`, `vaesweep sync`)"),
    Entry(HOLDER_FILE, SWEEP, "who holds the lock: pid, host, command, start time"),
    Entry(RECOVERED_FILE, SWEEP, "after a rebuild of an unreadable Ray state: each grid point's newest readable checkpoint"),
    Entry(STORE_FILE, SWEEP, "the embedded MLflow store (sqlite), absent with `--tracking-uri`"),
    Entry(ARTIFACTS_DIR, SWEEP, "the embedded store's artifacts: each run's `analysis/` and `checkpoint/`, the report"),
    Entry(SERVER_LOG, SWEEP, "the log of the sweep's own MLflow server"),
    Entry(REPORT_DIR, SWEEP, "`vaesweep report`'s output: report.html, the figures, trials.csv, summary.csv, verdicts.json"),
    Entry(TUNE_DIR, SWEEP, "Ray Tune's experiment: its state files and one folder per trial"),
    Entry(TUNER_FILE, TUNE, "Ray's tuner (a pickle)"),
    Entry(EXPERIMENT_STATE, TUNE, "Ray's experiment state: each trial's status and last result"),
    Entry(BASIC_VARIANT_STATE, TUNE, "Ray's grid generator state (a pickle)"),
    Entry(SEARCHER_STATE, TUNE, "an Optuna search's sampler state"),
    Entry(UNREADABLE_PREFIX + "<time>", TUNE, "Ray's state files that could not be read, set aside when the sweep was rebuilt"),
    Entry(GROWN_PREFIX + "<time>", TUNE, "Ray's state files of the sweep before it grew"),
    Entry(PARAMS_FILE, TRIAL, "the trial's config as Ray gave it"),
    Entry(RESULT_FILE, TRIAL, "one JSON line per epoch: every member's metrics under `members`"),
    Entry(ERROR_FILE, TRIAL, "a failed trial's traceback"),
    Entry(CHECKPOINTS, TRIAL, f"the trial's checkpoint folders ({CHECKPOINTS_KEPT} kept): every member's weights, optimizer and random state"),
    Entry(HISTORY_FILE, "in each checkpoint folder", "every epoch's result up to that checkpoint, so a record a full disk cost is still written on resume"),
    Entry(MEMBERS_DIR + "/<label>", FINAL, "one folder per grid point (label `a{alpha}_k{k}_s{seed}`): its own checkpoint, metrics and analysis"),
    Entry(MEMBER_METRICS_FILE, "in each `members/<label>/`", "the grid point's metrics at its last epoch"),
    Entry(ANALYSIS_DIR, "in each `members/<label>/`, and in a `vaesweep train` folder", "analysis.json, spectrum.csv, probes.csv, the interpolations and fig4_geodesics.png"),
    Entry(RUN_RECORD_FILE, "a `vaesweep train` folder", "the run's config, data, evaluation settings, per-epoch history and final metrics"),
)


def backend_uri(sweep_dir: Path) -> str:
    """The embedded MLflow store's URI."""
    return f"sqlite:///{sweep_dir / STORE_FILE}"


def artifacts_dir(sweep_dir: Path) -> Path:
    return sweep_dir / ARTIFACTS_DIR


def experiment_path(sweep_dir: Path) -> Path:
    return sweep_dir / TUNE_DIR


def epoch_history(checkpoint_folder: Path) -> list[dict[str, Any]]:
    """The epoch results saved with a checkpoint ([] when it has none or it is unreadable)."""
    try:
        history = json.loads((checkpoint_folder / HISTORY_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return []
    return [result for result in history if isinstance(result, dict)] if isinstance(history, list) else []


def read_json(path: Path) -> Any:
    """The JSON in ``path``; ValueError (with the file named) if it is missing, cut off or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path.name} is unreadable ({type(err).__name__})") from None


def read_data_record(sweep_dir: Path) -> dict[str, Any] | None:
    """The sweep's ``data.json`` (what it trains on), None when it has none (``vae/formats.py``: format 1)."""
    try:
        return read_json(sweep_dir / DATA_FILE)
    except ValueError:
        return None


def is_final(folder: Path, labels: list[str]) -> bool:
    """A trial's final checkpoint folder with the final metrics and analysis of each of its grid points, whole."""
    try:
        for label in labels:
            read_json(member_metrics_file(folder / MEMBERS_DIR / label))
            read_json(folder / MEMBERS_DIR / label / ANALYSIS_DIR / ANALYSIS_FILE)
    except ValueError:
        return False
    return True


def member_metrics_file(member_folder: Path) -> Path:
    """A finished pack member's final metrics (``vae/formats.py`` reads a format-2 sweep's)."""
    return member_metrics_path(member_folder, MEMBER_METRICS_FILE)


def existing_sweep(storage: Path, name: str) -> Path:
    """``STORAGE/NAME`` of a sweep `vaesweep run` has started; ConfigError saying where it looked."""
    sweep_dir = sweep_path(storage, name)
    if not (sweep_dir / SWEEP_FILE).is_file():
        raise ConfigError(f"no sweep named {name!r} in {storage} (looked for {sweep_dir / SWEEP_FILE}); "
                          "start it with `vaesweep run`")
    return sweep_dir


def write_settings(config: SweepConfig) -> None:
    """Write the sweep's ``sweep.yaml`` (atomically, between its head and end lines, so that a file cut
    short is told from a whole one: a YAML mapping cut between two keys is still a valid mapping)."""
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
    if not isinstance(saved, dict) or settings_cut_short(text):
        raise ConfigError(f"{path} is corrupt (cut short, or not a mapping of settings); restore it from the sweep's "
                          "MLflow parent run params, or choose another --name")
    return saved


def saved_config(sweep_dir: Path) -> SweepConfig:
    """The validated config of a sweep that has a ``sweep.yaml`` (see ``existing_sweep``)."""
    return validate_sweep(saved_settings(sweep_dir), f"{sweep_dir / SWEEP_FILE}: ")


def read_tracking(sweep_dir: Path) -> dict[str, Any]:
    """The sweep's ``tracking.json`` ({} if there is none); ConfigError if it is damaged."""
    path = sweep_dir / TRACKING_FILE
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (ValueError, OSError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("tracking_uri"), str):
        raise ConfigError(f"{path} is corrupt; run `vaesweep sync {sweep_dir.name}` to rewrite it")
    record.pop(FORMAT_KEY, None)
    return record


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
    record = {FORMAT_KEY: FORMAT, "tracking_uri": store, "experiment": config.tracking.experiment, "experiment_id": experiment_id,
              "parent_run_id": parent_run_id}
    write_atomic(config.sweep_dir() / TRACKING_FILE, json.dumps(record, indent=2).encode())
    return store
