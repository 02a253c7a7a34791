"""The trial engine: the one loop that runs a trial, whoever runs it.

Epochs, probes at the probe epochs, the validation bound (when images are held out), checkpoints
every ``checkpoint_every`` epochs and at the end, then the final evaluation (test bounds, IS
log-likelihood) and the latent analysis. What happens to each epoch's metrics and checkpoint is
the sink's business: a run directory (``vaesweep train``, sweeps/local_run.py) or Ray Tune (a sweep
trial, sweeps/trainable.py; the driver writes MLflow from Tune's results). Divergence raises
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
from analysis.model_analysis import analyze_trainer
from analysis.probes import ProbeCallback
from analysis.settings import EvalConfig
from sweeps.layout import ANALYSIS_DIR
from sweeps.recovery import FINAL_METRICS_FILE
from vae.atomic import write_atomic
from vae.checkpoint import CHECKPOINT_NAME, save_checkpoint
from vae.train import Trainer


class TrialSink(Protocol):
    """Where a trial's epochs go."""

    def folder(self) -> contextlib.AbstractContextManager[Path]:
        """A folder for this epoch's checkpoint (and, after the last epoch, the analysis), alive until
        ``report`` returns."""

    def report(self, metrics: dict[str, Any], folder: Path | None) -> None:
        """One epoch's metrics; ``folder`` is given when it holds a checkpoint."""


def run_trial(trainer: Trainer, evaluation: EvalConfig, sink: TrialSink, checkpoint_every: int,
              is_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train from the trainer's epoch to ``config.epochs``; returns the last epoch's metrics (with the
    final evaluation and analysis), or {} when the trainer had already finished."""
    probes = ProbeCallback(trainer, evaluation.probe_epochs, evaluation.probe_train_size)
    epochs = trainer.config.epochs
    metrics: dict[str, Any] = {}
    while trainer.epoch < epochs:
        metrics = trainer.train_epoch()
        probes(metrics)
        if trainer.val_x is not None:
            metrics["val_vr_bound_0"] = trainer.validation_bound(evaluation.val_images, evaluation.bound_samples)
        last = trainer.epoch == epochs
        save = last or trainer.epoch % checkpoint_every == 0
        with sink.folder() as folder:
            if save:
                save_checkpoint(trainer.state_dict(), folder / CHECKPOINT_NAME)
            if last:
                metrics.update(final_metrics(trainer, evaluation, folder / ANALYSIS_DIR, is_progress))
            check_metrics(metrics)
            if last:  # what a rebuilt sweep reports again for this trial (sweeps/recovery.py)
                write_atomic(folder / FINAL_METRICS_FILE, json.dumps(metrics).encode())
            sink.report(metrics, folder if save else None)
    return metrics


def final_metrics(trainer: Trainer, evaluation: EvalConfig, out: Path,
                  is_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Test bounds, IS log-likelihood and the latent analysis (its files written into ``out``)."""
    final = trainer.evaluate(evaluation.bound_samples, evaluation.is_samples, progress=is_progress)
    analysis = analyze_trainer(trainer, out, evaluation)
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
