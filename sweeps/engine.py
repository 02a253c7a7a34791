"""The trial engine: the one loop that runs a trial, whoever runs it.

Epochs, probes at the probe epochs, the validation bound (when images are held out), checkpoints
every ``checkpoint_every`` epochs and at the end, then the final evaluation (test bounds, IS
log-likelihood) and the latent analysis. What happens to each epoch's metrics and checkpoint is
the sink's business: a run directory (``vaesweep train``, sweeps/local_run.py) or Ray Tune (a sweep
trial, sweeps/trainable.py; the driver writes MLflow from Tune's results). ``run_pack`` is the same
engine for a pack of grid points trained together (sweeps/packs.py). Divergence raises
``NonFiniteLossError`` naming epoch, step and config, from the trainer.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from analysis.metrics import check_metrics
from analysis.model_analysis import analyze_member
from analysis.probes import add_probes
from analysis.settings import EvalConfig
from sweeps.layout import ANALYSIS_DIR
from sweeps.packs import FAILED_KEY, MEMBERS_DIR, MEMBERS_KEY
from sweeps.recovery import FINAL_METRICS_FILE
from vae.atomic import write_atomic
from vae.checkpoint import CHECKPOINT_NAME, save_checkpoint
from vae.member import Member
from vae.packed_train import PackedTrainer
from vae.train import Trainer


class TrialSink(Protocol):
    """Where a trial's epochs go."""

    def folder(self) -> contextlib.AbstractContextManager[Path]:
        """A folder for this epoch's checkpoint (and, after the last epoch, the analysis), alive until
        ``report`` returns."""

    def report(self, metrics: dict[str, Any], folder: Path | None) -> None:
        """One epoch's metrics; ``folder`` is given when it holds a checkpoint."""


class OneTrainer:
    """A ``Trainer`` seen as a pack of one, so that one loop serves a trial and a pack: its epoch's
    metrics under member 0, the trainer itself as that member. Its divergence raises at once."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.configs = [trainer.config]
        self.failures: dict[int, Exception] = {}

    @property
    def epoch(self) -> int:
        return self.trainer.epoch

    def train_epoch(self) -> dict[int, dict[str, Any]]:
        return {0: self.trainer.train_epoch()}

    def member(self, i: int) -> Member:
        return self.trainer.member()

    def state_dict(self) -> dict[str, Any]:
        return self.trainer.state_dict()


def run_trial(trainer: Trainer, evaluation: EvalConfig, sink: TrialSink, checkpoint_every: int,
              is_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train from the trainer's epoch to ``config.epochs``; returns the last epoch's metrics (with the
    final evaluation and analysis), or {} when the trainer had already finished."""
    return run_members(OneTrainer(trainer), None, evaluation, sink, checkpoint_every, is_progress)


def run_pack(packed: PackedTrainer, labels: list[str], evaluation: EvalConfig, sink: TrialSink,
             checkpoint_every: int) -> dict[str, Any]:
    """The same for a pack of grid points (sweeps/packs.py): each epoch's result holds every member's
    metrics under ``members`` (by label) and the messages of diverged members under ``failed``; the
    final checkpoint folder holds each member's own checkpoint, analysis and metrics in
    ``members/<label>/``. A diverged member is frozen while its pack mates go on; when every member
    has failed the trial fails with the first one's message."""
    return run_members(packed, labels, evaluation, sink, checkpoint_every)


def run_members(trainer: OneTrainer | PackedTrainer, labels: list[str] | None, evaluation: EvalConfig,
                sink: TrialSink, checkpoint_every: int,
                is_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The engine's one loop over epochs, for a trial (``labels`` None: flat results) or a pack."""
    epochs = trainer.configs[0].epochs
    probe_epochs = set(evaluation.probe_epochs)
    result: dict[str, Any] = {}
    while trainer.epoch < epochs:
        metrics = trainer.train_epoch()
        for i, member_metrics in metrics.items():
            if member_metrics["epoch"] in probe_epochs or trainer.configs[i].validation_images:
                member = trainer.member(i)
                add_probes(member_metrics, member, evaluation.probe_epochs, evaluation.probe_train_size)
                if member.val_x is not None:
                    member_metrics["val_vr_bound_0"] = member.validation_bound(evaluation.val_images,
                                                                               evaluation.bound_samples)
        last = trainer.epoch == epochs
        save = last or trainer.epoch % checkpoint_every == 0
        with sink.folder() as folder:
            if save:
                save_checkpoint(trainer.state_dict(), folder / CHECKPOINT_NAME)
            for i, member_metrics in metrics.items():
                out = folder if labels is None else folder / MEMBERS_DIR / labels[i]
                if last:
                    if labels is not None:  # a member's own checkpoint, as a single trial's folder has
                        save_checkpoint(trainer.member_state(i), out / CHECKPOINT_NAME)
                    member_metrics.update(final_metrics(trainer.member(i), evaluation, out / ANALYSIS_DIR,
                                                        is_progress))
                check_metrics(member_metrics)
                if last:  # what a rebuilt sweep reports again for this trial (sweeps/recovery.py)
                    write_atomic(out / FINAL_METRICS_FILE, json.dumps(member_metrics).encode())
            if labels is None:
                result = metrics[0]
            else:
                result = {"epoch": trainer.epoch, MEMBERS_KEY: {labels[i]: m for i, m in metrics.items()},
                          FAILED_KEY: {labels[i]: str(err) for i, err in trainer.failures.items()}}
            sink.report(result, folder if save else None)
        if labels is not None and len(trainer.failures) == len(trainer.configs):
            raise trainer.failures[min(trainer.failures)]
    return result


def final_metrics(member: Member, evaluation: EvalConfig, out: Path,
                  is_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Test bounds, IS log-likelihood and the latent analysis (its files written into ``out``)."""
    final = member.evaluate(evaluation.bound_samples, evaluation.is_samples, progress=is_progress)
    analysis = analyze_member(member, out, evaluation)
    return {
        **final,
        "active_components": analysis["active_components"],
        "active_units": analysis["active_units"],
        "axis_alignment": analysis["axis_alignment"],
        **{f"final_probe_{name}": acc for name, acc in analysis["probe_accuracy"].items()},
    }


def replay_final(source: Path, sink: TrialSink) -> dict[str, Any]:
    """Report a finished trial's last epoch again from its final checkpoint folder (checkpoint, analysis,
    ``metrics.json``), training nothing: how a sweep rebuilt after losing Ray's state keeps its finished
    trials (sweeps/recovery.py)."""
    metrics = json.loads((source / FINAL_METRICS_FILE).read_text())
    with sink.folder() as folder:
        shutil.copytree(source, folder, dirs_exist_ok=True)
        sink.report(metrics, folder)
    return metrics
