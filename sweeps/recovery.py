"""A sweep whose Ray state cannot be read (a torn write: a full disk, a killed copy) is rebuilt, not lost.

Ray restores a sweep from ``tune/tuner.pkl`` and the newest ``tune/experiment_state-*.json``; when
either is cut off or missing, ``Tuner.restore`` fails, and each trial's place in the sweep with it.
What is ours survives such a write: the saved config (``sweep.yaml``), each trial's checkpoints
(written atomically, checked by CRC on load) with, in the final one, the trial's last metrics
(``metrics.json``) and analysis, and the MLflow runs. So the driver sets Ray's unreadable files
aside (``tune/unreadable-<time>/``, nothing is deleted), starts a new Ray experiment over the same
grid, and hands each grid point its newest readable checkpoint (``recovered.json``): a finished
point reports its final result again without training, the others resume from their checkpoint,
and the MLflow runs are adopted by grid point (sweeps/tracking.py), so none is duplicated.

The same folder scan serves the readers: ``vaesweep status`` on an unreadable state shows what
the trial folders hold.
"""

from __future__ import annotations

import json
import pickle
import shutil
import time
from pathlib import Path
from typing import Any

from analysis.aggregate import trial_label
from sweeps.config import ConfigError, SweepConfig
from sweeps.layout import ANALYSIS_DIR, experiment_path
from sweeps.packs import MEMBERS_DIR
from vae.atomic import write_atomic
from vae.errors import CheckpointError

RAY_STATE_FILES = ("tuner.pkl", "experiment_state-*.json", "basic-variant-state-*.json", "search_gen_state-*.json",
                   "searcher-state-*.pkl", "callback-states-*.pkl")
RECOVERED_FILE = "recovered.json"  # grid point label -> its newest readable checkpoint folder
FINAL_METRICS_FILE = "metrics.json"  # in a trial's final checkpoint folder: its last epoch's metrics


def read_json(path: Path) -> Any:
    """The JSON in ``path``; ValueError (with the file named) if it is missing, cut off or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path.name} is unreadable ({type(err).__name__})") from None


def ray_state_problem(sweep_dir: Path) -> str | None:
    """Why Ray cannot restore the sweep's experiment (a file named), None if it can or there is nothing yet."""
    tune_dir = experiment_path(sweep_dir)
    states = sorted(tune_dir.glob("experiment_state-*.json"))
    if not (tune_dir / "tuner.pkl").exists() and not states:
        return None
    # the searcher's state is a pickle too, whatever its name says
    for path in [tune_dir / "tuner.pkl", *tune_dir.glob("basic-variant-state-*.json"), *tune_dir.glob("searcher-state-*.pkl")]:
        try:
            pickle.loads(path.read_bytes())
        except Exception as err:  # noqa: BLE001 - a cut-off pickle raises any of several types
            return f"tune/{path.name} is unreadable ({type(err).__name__})"
    if not states:
        return "tune/ has no experiment_state-*.json"
    try:
        state = read_json(states[-1])
        if not isinstance(state, dict) or not isinstance(state.get("trial_data"), list):
            raise ValueError(f"{states[-1].name} is not a Ray experiment state")
    except ValueError as err:
        return f"tune/{err}"
    return None


def set_aside(sweep_dir: Path) -> Path:
    """Move Ray's experiment-level files into ``tune/unreadable-<time>/`` (kept for inspection)."""
    tune_dir = experiment_path(sweep_dir)
    aside = tune_dir / f"unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for pattern in RAY_STATE_FILES:
        for path in tune_dir.glob(pattern):
            path.replace(aside / path.name)
    return aside


def checkpoint_folders(sweep_dir: Path) -> list[Path]:
    from vae.checkpoint import CHECKPOINT_NAME  # here, not at the top: it brings torch, which status does without

    return sorted(experiment_path(sweep_dir).glob(f"*/checkpoint_*/{CHECKPOINT_NAME}"))


def is_final(folder: Path, labels: list[str]) -> bool:
    """A trial's final checkpoint folder with the final metrics and analysis of each of its grid points, whole."""
    try:
        for label in labels:
            read_json(folder / MEMBERS_DIR / label / FINAL_METRICS_FILE)
            read_json(folder / MEMBERS_DIR / label / ANALYSIS_DIR / "analysis.json")
    except ValueError:
        return False
    return True


def newest_checkpoints(sweep_dir: Path, config: SweepConfig) -> dict[str, tuple[int, Path]]:
    """Per grid point (label): (epoch, folder) of its newest readable checkpoint (a pack's: one for all
    its members); a checkpoint of the last epoch counts only with its final metrics and analysis beside it."""
    from vae.checkpoint import load_checkpoint

    found: dict[str, tuple[int, Path]] = {}
    for path in checkpoint_folders(sweep_dir):
        try:
            state = load_checkpoint(path)
        except CheckpointError:
            continue
        labels = [trial_label(point["alpha"], point["k"], point["seed"]) for point in state["configs"]]
        epoch = int(state["epoch"])
        if epoch >= config.train.epochs and not is_final(path.parent, labels):
            continue
        for label in labels:
            if label not in found or epoch > found[label][0]:
                found[label] = (epoch, path.parent)
    return found


def rebuild(sweep_dir: Path, config: SweepConfig, problem: str) -> str:
    """Set Ray's unreadable state aside and record each grid point's checkpoint; returns what was done."""
    if config.search != "grid":
        raise ConfigError(f"Ray's state of sweep {config.name} cannot be read ({problem}) and an Optuna search cannot "
                          "be rebuilt from its trials; its finished runs are in MLflow: start a new sweep with "
                          "another --name")
    found = newest_checkpoints(sweep_dir, config)
    aside = set_aside(sweep_dir)
    write_atomic(sweep_dir / RECOVERED_FILE,
                 json.dumps({label: str(folder) for label, (_, folder) in found.items()}, indent=1).encode())
    finished = sum(epoch >= config.train.epochs for epoch, _ in found.values())
    return (f"Ray's state of sweep {config.name} is unreadable ({problem}); set it aside in {aside.relative_to(sweep_dir)} "
            f"and rebuilt the sweep from its checkpoints: {finished} of {len(config.trials())} grid points finished, "
            f"{len(found) - finished} resume from a checkpoint, {len(config.trials()) - len(found)} start afresh")


def prune_superseded(sweep_dir: Path) -> str | None:
    """Once a rebuilt sweep has finished: the trial folders of the experiment it was rebuilt from are
    superseded (each point's checkpoint, results and analysis now live in its new trial folder and in
    MLflow), so they are removed with ``recovered.json``; Ray's unreadable state stays aside in
    ``tune/unreadable-*`` (a few kB). Returns what was removed, None for a sweep never rebuilt."""
    from ray.tune import ExperimentAnalysis

    if not (sweep_dir / RECOVERED_FILE).is_file():
        return None
    tune_dir = experiment_path(sweep_dir)
    current = {Path(trial.storage.trial_fs_path).name for trial in ExperimentAnalysis(str(tune_dir)).trials}
    old = [folder for folder in tune_dir.iterdir() if folder.is_dir() and (folder / "params.json").is_file()
           and folder.name not in current]
    size = sum(path.stat().st_size for folder in old for path in folder.rglob("*") if path.is_file())
    for folder in old:
        shutil.rmtree(folder)
    (sweep_dir / RECOVERED_FILE).unlink()
    return f"removed the {len(old)} trial folders the rebuild superseded ({size / (1 << 20):.1f} MB)"


def recovered_checkpoints(sweep_dir: Path) -> dict[str, str]:
    """The checkpoints a rebuild handed to the grid points ({} when the sweep was never rebuilt)."""
    try:
        record = read_json(sweep_dir / RECOVERED_FILE)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}
