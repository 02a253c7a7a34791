"""A sweep whose Ray state cannot be read (a torn write: a full disk, a killed copy) is rebuilt, not lost.

Ray restores a sweep from ``tune/tuner.pkl`` and the newest ``tune/experiment_state-*.json``; when
either is cut off or missing, ``Tuner.restore`` fails, and each trial's place in the sweep with it.
What is ours survives such a write: the saved config (``sweep.yaml``), each trial's checkpoints
(written atomically, checked by CRC on load) with, in the final one, the trial's last metrics
(``final_metrics.json``) and analysis, and the MLflow runs. So the driver sets Ray's unreadable files
aside (``tune/unreadable-<time>/``, nothing is deleted), starts a new Ray experiment over the same
grid, and hands each grid point its newest readable checkpoint (``recovered.json``): a finished
point reports its final result again without training, the others resume from their checkpoint,
and the MLflow runs are adopted by grid point (sweeps/tracking.py), so none is duplicated. A grown
sweep starts its new experiment the same way (``new_experiment``: sweeps/driver/growth.py).

The same folder scan serves the readers: ``vaesweep status`` on an unreadable state shows what
the trial folders hold.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from sweeps.config import ConfigError, SweepConfig
from sweeps.layout import (CHECKPOINTS, PARAMS_FILE, RAY_STATE_FILES, RECOVERED_FILE, UNREADABLE_PREFIX, experiment_path,
                           is_final, read_json)
from vae.atomic import write_atomic
from vae.errors import CheckpointError
from vae.formats import is_current_checkpoint
from vae.config import grid_point_label


def set_aside(sweep_dir: Path, prefix: str) -> Path:
    """Move Ray's experiment-level files into ``tune/<prefix><time>/`` (kept for inspection)."""
    tune_dir = experiment_path(sweep_dir)
    aside = tune_dir / f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for pattern in RAY_STATE_FILES:
        for path in tune_dir.glob(pattern):
            path.replace(aside / path.name)
    return aside


def checkpoint_folders(sweep_dir: Path) -> list[Path]:
    from vae.checkpoint import CHECKPOINT_NAME  # here, not at the top: it brings torch, which status does without

    return sorted(experiment_path(sweep_dir).glob(f"*/{CHECKPOINTS}/{CHECKPOINT_NAME}"))


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
        if not is_current_checkpoint(state):
            continue
        labels = [grid_point_label(point["alpha"], point["k"], point["seed"]) for point in state["configs"]]
        epoch = int(state["epoch"])
        diverged = {labels[int(i)] for i in state.get("failures", {})}
        if epoch >= config.train.epochs and not is_final(path.parent, [l for l in labels if l not in diverged]):
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
    found, aside = new_experiment(sweep_dir, config, UNREADABLE_PREFIX)
    finished = sum(epoch >= config.train.epochs for epoch, _ in found.values())
    return (f"Ray's state of sweep {config.name} is unreadable ({problem}); set it aside in {aside.relative_to(sweep_dir)} "
            f"and rebuilt the sweep from its checkpoints: {finished} of {len(config.grid_points())} grid points finished, "
            f"{len(found) - finished} resume from a checkpoint, {len(config.grid_points()) - len(found)} start afresh")


def new_experiment(sweep_dir: Path, config: SweepConfig, prefix: str) -> tuple[dict[str, tuple[int, Path]], Path]:
    """Ray's state set aside (``tune/<prefix><time>/``) so that the next fit starts a new experiment over
    ``config``'s grid, each grid point handed its newest checkpoint (``recovered.json``); returns
    (label -> (epoch, folder) of those checkpoints, the folder set aside)."""
    found = newest_checkpoints(sweep_dir, config)
    aside = set_aside(sweep_dir, prefix)
    write_atomic(sweep_dir / RECOVERED_FILE,
                 json.dumps({label: str(folder) for label, (_, folder) in found.items()}, indent=1).encode())
    return found, aside


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
    old = [folder for folder in tune_dir.iterdir() if folder.is_dir() and (folder / PARAMS_FILE).is_file()
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
