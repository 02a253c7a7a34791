"""The Ray Tune function trainable: one (alpha, k, seed) trial around the plain trainer.

Per epoch it reports the metrics (``tune.report``, one call per epoch, so ``training_iteration``
is the epoch) with a checkpoint every ``checkpoint_every`` epochs and logs them to the trial's
MLflow child run. After the last epoch it evaluates (test VR bounds, IS log-likelihood) and runs
the latent analysis, and reports those in the last epoch's result. A retried or restored trial
resumes from ``tune.get_checkpoint()`` and adopts its MLflow run. The dataset arrives through
``tune.with_parameters`` (Ray's object store: read and verified once by the driver, not by trials).
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from analysis.aggregate import trial_label
from analysis.model_analysis import analyze_trainer
from analysis.probes import ProbeCallback
from analysis.settings import AnalysisSettings
from sweeps.config import SweepConfig
from sweeps.tracking import ANALYSIS_DIR, TrialTracker
from vae.bounds import dataset_bounds
from vae.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from vae.errors import CheckpointError
from vae.config import TrainConfig
from vae.data import mnist_from_arrays
from vae.train import EVAL_SEED, Trainer

# What Optuna maximizes: OptunaSearch reads it from every result, but the IS log-likelihood exists
# only after the last epoch; so it is the per-epoch validation bound during training and the test
# IS log-likelihood in the final result (the value Optuna records for a completed trial).
OBJECTIVE = "objective"

# The Ray node a trial runs on: in every result and as a tag of its MLflow run.
NODE_KEY = "ray_node_id"

# Test hook for the fault-tolerance tests: the first attempt of every trial raises after this
# epoch (a marker file in the trial directory makes the retry pass). Unset in normal use.
FAIL_ONCE_ENV = "VAESWEEP_FAIL_ONCE_AT_EPOCH"


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares besides its grid point (passed with tune.with_parameters)."""

    sweep: SweepConfig
    tracking_uri: str | None
    experiment_id: str | None
    parent_run_id: str | None


def trial_config(sweep: SweepConfig, point: dict[str, Any]) -> TrainConfig:
    """The full, validated trainer config of one grid point."""
    return TrainConfig(**{**sweep.train.model_dump(), "alpha": point["alpha"], "k": point["k"], "seed": point["seed"]})


def run_name(config: TrainConfig) -> str:
    return trial_label(config.alpha, config.k, config.seed)


def run_identity(sweep: SweepConfig, config: TrainConfig, node_id: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(run name, tags, params) of a trial's MLflow run: the live trial and ``vaesweep sync`` agree."""
    tags = {"sweep": sweep.name, "alpha": f"{config.alpha:g}", "k": str(config.k), "seed": str(config.seed),
            NODE_KEY: node_id}
    return run_name(config), tags, {"trial": config.model_dump(), "eval": sweep.eval.model_dump()}


def restore(trainer: Trainer, checkpoint: tune.Checkpoint) -> None:
    """Load Ray's latest checkpoint of this trial or, if it is corrupt or partial, the newest good one
    of those Ray kept beside it (``num_to_keep``); with none readable, start over with a warning."""
    with checkpoint.as_directory() as folder:
        latest = Path(folder)
        older = sorted((p for p in latest.parent.glob("checkpoint_*") if p.name < latest.name), reverse=True)
        for candidate in [latest, *older]:
            try:
                trainer.load_state_dict(load_checkpoint(candidate / CHECKPOINT_NAME))
            except CheckpointError as err:
                print(f"vaesweep: {err}; trying an older checkpoint", file=sys.stderr)
                continue
            print(f"vaesweep: resumed from {candidate.name} (epoch {trainer.epoch})", file=sys.stderr)
            return
    print("vaesweep: no readable checkpoint; training this trial from the start", file=sys.stderr)


def validation_bound(trainer: Trainer, images: int, samples: int) -> float:
    """Cheap per-epoch signal (ASHA's metric): the alpha=0 bound on the first test images."""
    generator = torch.Generator(device=trainer.device).manual_seed(EVAL_SEED)
    return dataset_bounds(trainer.model, trainer.test_x[:images], [0.0], samples, generator=generator)[0.0]


def maybe_inject_failure(epoch: int) -> None:
    """Raise once per trial at the epoch named by ``VAESWEEP_FAIL_ONCE_AT_EPOCH`` (tests only)."""
    if os.environ.get(FAIL_ONCE_ENV) != str(epoch):
        return
    marker = Path(tune.get_context().get_trial_dir()) / "injected_failure"
    if not marker.exists():
        marker.touch()
        raise RuntimeError(f"injected failure at epoch {epoch} ({FAIL_ONCE_ENV})")


def train_trial(point: dict[str, Any], context: TrialContext, data: dict[str, np.ndarray]) -> None:
    """Ray Tune function trainable for one grid point {alpha, k, seed}."""
    sweep = context.sweep
    torch.set_num_threads(max(1, int(sweep.resources.cpus)))
    if 0 < sweep.resources.gpu < 1 and torch.cuda.is_available():
        # Ray's GPU fractions only schedule; they do not isolate memory between trials sharing a GPU.
        torch.cuda.set_per_process_memory_fraction(sweep.resources.gpu)
    config = trial_config(sweep, point)
    trainer = Trainer(config, mnist_from_arrays(data, config.train_subset, config.test_subset))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        restore(trainer, checkpoint)

    node_id = ray.get_runtime_context().get_node_id()  # which machine ran it (updated on a retry)
    tracker = None
    if context.tracking_uri and context.experiment_id and context.parent_run_id:
        tracker = TrialTracker(context.tracking_uri, context.experiment_id, context.parent_run_id,
                               tune.get_context().get_trial_id(), sweep.name)
        tracker.start(*run_identity(sweep, config, node_id))
    probes = ProbeCallback(trainer, sweep.eval.probe_epochs, sweep.eval.probe_train_size)
    try:
        while trainer.epoch < config.epochs:
            metrics: dict[str, Any] = trainer.train_epoch()
            metrics[NODE_KEY] = node_id
            maybe_inject_failure(trainer.epoch)
            probes(metrics)
            metrics["val_vr_bound_0"] = validation_bound(trainer, sweep.eval.val_images, sweep.eval.bound_samples)
            last = trainer.epoch == config.epochs
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint_dir = Path(tmp) / "checkpoint"
                if last or trainer.epoch % sweep.checkpoint_every == 0:
                    save_checkpoint(trainer.state_dict(), checkpoint_dir / CHECKPOINT_NAME)
                if last:
                    metrics.update(finish(trainer, sweep, checkpoint_dir, tracker))
                metrics[OBJECTIVE] = metrics.get("test_log_likelihood", metrics["val_vr_bound_0"])
                if tracker is not None:
                    tracker.log_epoch(trainer.epoch, metrics)
                    metrics["mlflow_run_id"] = tracker.run_id or ""
                checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir.exists() else None
                tune.report(metrics, checkpoint=checkpoint)
    except BaseException as err:
        if tracker is not None:
            tracker.fail(f"{type(err).__name__}: {err}")
        raise
    if tracker is not None:
        tracker.end("FINISHED")


def finish(trainer: Trainer, sweep: SweepConfig, checkpoint_dir: Path, tracker: TrialTracker | None) -> dict[str, Any]:
    """Final evaluation and latent analysis. The analysis goes into the final checkpoint (so Ray's
    storage holds everything ``vaesweep sync`` needs) and, with the checkpoint, to the MLflow run."""
    final = trainer.evaluate(sweep.eval.bound_samples, sweep.eval.is_samples)
    settings = AnalysisSettings(epsilon=sweep.eval.epsilon, probe_train_size=sweep.eval.probe_train_size)
    analysis = analyze_trainer(trainer, checkpoint_dir / ANALYSIS_DIR, settings)
    if tracker is not None:
        tracker.log_final(checkpoint_dir, analysis["eigenvalues"])
    return {
        **final,
        "active_components": analysis["active_components"],
        "active_units": analysis["active_units"],
        "axis_alignment": analysis["axis_alignment"],
        **{f"final_probe_{name}": acc for name, acc in analysis["probe_accuracy"].items()},
    }
