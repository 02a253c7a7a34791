"""Ray's files of a sweep, read without Ray (no cluster, no session): whether its experiment state can
be restored, a trial's results and its error. The driver, sync and the readers all read them here."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

from sweeps.failures import FATAL_KEY, first_cause
from sweeps.layout import (BASIC_VARIANT_STATE, EXPERIMENT_STATE, RESULT_FILE, SEARCHER_STATE, TUNE_DIR, TUNER_FILE,
                           experiment_path, read_json)
from sweeps.packs import FAILED_KEY, MEMBERS_KEY


def ray_state_problem(sweep_dir: Path) -> str | None:
    """Why Ray cannot restore the sweep's experiment (a file named), None if it can or there is nothing yet."""
    tune_dir = experiment_path(sweep_dir)
    states = sorted(tune_dir.glob(EXPERIMENT_STATE))
    if not (tune_dir / TUNER_FILE).exists() and not states:
        return None
    # the searcher's state is a pickle too, whatever its name says
    for path in [tune_dir / TUNER_FILE, *tune_dir.glob(BASIC_VARIANT_STATE), *tune_dir.glob(SEARCHER_STATE)]:
        try:
            pickle.loads(path.read_bytes())
        except Exception as err:  # noqa: BLE001 - a cut-off pickle raises any of several types
            return f"{TUNE_DIR}/{path.name} is unreadable ({type(err).__name__})"
    if not states:
        return f"{TUNE_DIR}/ has no {EXPERIMENT_STATE}"
    try:
        state = read_json(states[-1])
        if not isinstance(state, dict) or not isinstance(state.get("trial_data"), list):
            raise ValueError(f"{states[-1].name} is not a Ray experiment state")
    except ValueError as err:
        return f"{TUNE_DIR}/{err}"
    return None


def failed_for_good(experiment_dir: Path) -> dict[str, str]:
    """Grid point label -> the error that ended it for good (``FATAL_KEY``: a retry would repeat it), read
    from the last result of every trial folder in ``experiment_dir`` (the newest folder's word per point)."""
    failed: dict[str, str] = {}
    for result_file in sorted(experiment_dir.glob(f"*/{RESULT_FILE}"), key=lambda path: path.stat().st_mtime):
        results = last_results(result_file)
        last = results[-1] if results else {}
        for label in {**last.get(FAILED_KEY, {}), **last.get(MEMBERS_KEY, {})}:
            failed.pop(label, None)
        if FATAL_KEY in last:
            failed.update({label: first_cause(error) for label, error in (last.get(FAILED_KEY) or {}).items()})
    return failed


def last_results(result_file: Path) -> list[dict[str, Any]]:
    """The whole lines of a trial's ``result.json`` (a line cut off by a torn write is left out)."""
    results = []
    try:
        lines = result_file.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            result = json.loads(line)
        except ValueError:
            continue
        if isinstance(result, dict):
            results.append(result)
    return results


def trial_error(trial) -> str | None:
    """The exception line of a failed trial, read from its error.txt in the trial's storage folder
    (readable without a Ray session; the driver's live copy is ``trial.error_file``)."""
    name = trial.run_metadata.error_filename
    return error_line(Path(trial.storage.trial_fs_path) / name) if name else None


def error_line(path: str | Path | None) -> str | None:
    """The exception line at the end of a Ray error.txt ('vae.errors.X: msg' shown as 'X: msg')."""
    if path is None or not Path(path).is_file():
        return None
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(\w+(?:Error|Exception|Exit)\b)", r"\1", lines[-1]) if lines else None
