"""The Ray Tune function trainable: a trial's grid points (one, or a pack) run by the trial engine.

Each epoch is one ``tune.report`` (so ``training_iteration`` is the epoch) with a checkpoint every
``checkpoint_every`` epochs; the last one carries the final evaluation and analysis, and its
checkpoint folder holds each member's analysis files (``members/<label>/``). A retried or restored trial resumes from
``tune.get_checkpoint()``; a trial of a rebuilt sweep from the checkpoint the rebuild found for its
grid point (sweeps/driver/recovery.py). The trial writes nothing to MLflow: the driver does, from Tune's results
(sweeps/driver/mlflow_callback.py), so trials need no route to the tracking server. The dataset arrives
through ``tune.with_parameters`` (Ray's object store: read and verified once by the driver).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from sweeps import hooks
from sweeps.config import SweepConfig, one_line
from sweeps.trial.engine import replay_final, run_trial, trial_trainer
from sweeps.layout import CHECKPOINTS, HISTORY_FILE, MEMBERS_DIR, epoch_history, is_final
from sweeps.failures import FATAL_KEY, NOT_RETRIED, RETRY_HINT, FailedBefore
from sweeps.packs import FAILED_KEY, MEMBERS_KEY, NODE_KEY, trial_points
from vae.atomic import write_atomic
from vae.checkpoint import CHECKPOINT_NAME, load_checkpoint
from vae.data import DataSet, images_of
from vae.errors import CheckpointError
from vae.packed_train import PackedTrainer
from vae.config import grid_point_label


def restore(trainer: PackedTrainer, latest: Path) -> tuple[Path | None, list[dict[str, Any]]]:
    """Load the checkpoint in folder ``latest`` or, if it is corrupt or partial, the newest good one of
    those kept beside it (``num_to_keep``); returns the folder loaded and the epoch results saved with
    it, or (None, []) with a warning if none is readable: the trial then trains from the start."""
    older = sorted((p for p in latest.parent.glob(CHECKPOINTS) if p.name < latest.name), reverse=True)
    for candidate in [latest, *older]:
        try:
            trainer.load_state_dict(load_checkpoint(candidate / CHECKPOINT_NAME))
        except CheckpointError as err:
            print(f"vaesweep: {err}; trying an older checkpoint", file=sys.stderr)
            continue
        print(f"vaesweep: resumed from {candidate.name} (epoch {trainer.epoch})", file=sys.stderr)
        return candidate, epoch_history(candidate)
    print("vaesweep: no readable checkpoint; training this trial from the start", file=sys.stderr)
    return None, []


def maybe_inject_failure(epoch: int, sweep_dir: Path) -> None:
    """Raise once per trial at the epoch named by the test hook ``hooks.FAIL_ONCE_ENV``; the marker of a
    trial that raised is kept by trial id in the sweep folder (a reused worker's ``get_trial_dir`` names
    a staging folder, not the trial's)."""
    if hooks.fail_once_at() != epoch:
        return
    marker = sweep_dir / f".injected_failure-{tune.get_context().get_trial_id()}"
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure at epoch {epoch} ({hooks.FAIL_ONCE_ENV})")


class TuneSink:
    """The engine's sink inside a Ray trial: each epoch's checkpoint in a temporary folder that
    ``tune.report`` copies into the trial's storage, with every result reported so far (``history``,
    restored with the checkpoint) beside it."""

    def __init__(self, history: list[dict[str, Any]], sweep_dir: Path) -> None:
        self.node_id = ray.get_runtime_context().get_node_id()  # which machine ran it (updated on a retry)
        self.history = history
        self.sweep_dir = sweep_dir

    @contextlib.contextmanager
    def folder(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp)

    def member_folder(self, folder: Path, label: str) -> Path:
        return folder / MEMBERS_DIR / label

    def report(self, result: dict[str, Any], folder: Path | None) -> None:
        maybe_inject_failure(result["epoch"], self.sweep_dir)
        result = {**result, NODE_KEY: self.node_id}
        # a finished trial replayed after a rebuild reports its last epoch again: kept once
        self.history = [*(old for old in self.history if old.get("epoch") != result["epoch"]), result]
        checkpoint = None
        if folder is not None:
            write_atomic(folder / HISTORY_FILE, json.dumps(self.history, separators=(",", ":")).encode())
            checkpoint = tune.Checkpoint.from_directory(folder)
        tune.report(result, checkpoint=checkpoint)


def quiet_exits_in_callbacks() -> None:
    """Ray ends a trial's worker on SIGTERM (a sweep stopping: Ctrl-C, a full disk) by raising SystemExit
    wherever the worker is. Inside a weakref or ``__del__`` callback Python cannot raise it and prints
    "Exception ignored in ..." with a traceback, which the driver forwards to the user (seen once in a
    full-disk stop). That exit is the expected end of the worker, not an error: left unprinted. Set once
    per worker (a worker runs trial after trial: ``reuse_actors``)."""
    default = sys.unraisablehook
    if getattr(default, "quiets_exits", False):
        return

    def hook(unraisable: Any) -> None:
        if not isinstance(unraisable.exc_value, SystemExit):
            default(unraisable)

    hook.quiets_exits = True
    sys.unraisablehook = hook


def train_trial(params: dict[str, Any], sweep: SweepConfig, data: DataSet,
                recovered: dict[str, str], failed_before: dict[str, str]) -> None:
    """Ray Tune function trainable for one grid point {alpha, k, seed}, or a pack of them {pack: index}
    (sweeps/packs.py): its points trained together by one ``PackedTrainer``. ``recovered``: the
    checkpoint folder of each grid point in a sweep rebuilt or grown from its checkpoints
    (sweeps/driver/recovery.py), used when Ray has none for the trial. ``failed_before``: label -> the
    error that ended the point for good on an earlier run; such a trial fails again at once, untrained."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # "Checkpoint successfully created" every epoch
    quiet_exits_in_callbacks()
    torch.set_num_threads(max(1, int(sweep.resources.cpus)))
    if 0 < sweep.resources.gpu < 1 and torch.cuda.is_available():
        # Ray's GPU fractions only schedule; they do not isolate memory between trials sharing a GPU.
        torch.cuda.set_per_process_memory_fraction(sweep.resources.gpu)
    points = trial_points(sweep, params)
    labels = [grid_point_label(**point) for point in points]
    trainer = None
    try:
        if all(label in failed_before for label in labels):  # at once: a retry would fail the same way
            raise FailedBefore(f"{failed_before[labels[0]]}; {RETRY_HINT}")
        configs = [sweep.point_config(point) for point in points]
        trainer = trial_trainer(configs, images_of(data, configs[0].train_subset, configs[0].test_subset))
        loaded, history = None, []
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                loaded, history = restore(trainer, Path(folder))
        elif (folder := recovered_folder(recovered, labels)) is not None:
            loaded, history = restore(trainer, folder)
        sink = TuneSink(history, sweep.sweep_dir())
        failed = {labels[i]: str(err) for i, err in trainer.failures.items()}
        living = [label for label in labels if label not in failed]
        if trainer.epoch >= configs[0].epochs and loaded is not None and is_final(loaded, living):
            replay_final(loaded, living, sink, failed)  # finished before its sweep was rebuilt or grown
            return
        run_trial(trainer, labels, sweep.eval, sink, sweep.checkpoint_every)
    except tuple(NOT_RETRIED) as err:
        report_fatal(err, labels, trainer)
        raise


def report_fatal(err: Exception, labels: list[str], trainer: PackedTrainer | None) -> None:
    """Tell the driver, before raising ``err``, that a retry would raise it again (sweeps/failures.py):
    a last result with no metrics, each grid point's cause under ``failed`` (a diverged member's own
    message), the error under ``FATAL_KEY``; its epoch is the last one some member completed."""
    error = one_line(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    members = dict(zip(labels, [error] * len(labels)))
    if trainer is not None:
        members.update({labels[i]: str(failure) for i, failure in trainer.failures.items()})
    epoch = trainer.epoch - (len(trainer.failures) == len(trainer.configs)) if trainer is not None else 0
    tune.report({"epoch": epoch, MEMBERS_KEY: {}, FAILED_KEY: members,
                 FATAL_KEY: error, NODE_KEY: ray.get_runtime_context().get_node_id()})


def recovered_folder(recovered: dict[str, str], labels: list[str]) -> Path | None:
    """The checkpoint folder a rebuild found for these grid points: one folder holding them all (a
    pack's checkpoint), else None (the trial starts afresh)."""
    folders = {recovered.get(label) for label in labels}
    return Path(folders.pop()) if len(folders) == 1 and None not in folders else None
