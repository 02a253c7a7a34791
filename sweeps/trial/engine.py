"""The trial engine: the one loop that runs a trial, whoever runs it.

Epochs, probes at the probe epochs, the validation bound (when images are held out), checkpoints
every ``checkpoint_every`` epochs and at the end, then the final evaluation (test bounds, IS
log-likelihood) and the latent analysis. What happens to each epoch's metrics and checkpoint is
the sink's business: a run directory (``vaesweep train``, sweeps/trial/local_run.py) or Ray Tune (a sweep
trial, sweeps/trial/trainable.py; the driver writes MLflow from Tune's results). The trainer is always a
``PackedTrainer``: one grid point is a pack of one (sweeps/packs.py groups the others). Divergence
raises ``NonFiniteLossError`` naming epoch, step and config, from the trainer.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from analysis.metrics import MetricName, SELECTION_METRIC, check_metrics
from analysis.model_analysis import analyze_member
from analysis.probes import add_probes
from analysis.settings import EvalConfig
from sweeps import hooks
from sweeps.layout import ANALYSIS_DIR, MEMBER_METRICS_FILE, member_metrics_file
from sweeps.packs import FAILED_KEY, MEMBERS_KEY, STEP_MODE_KEY
from vae.atomic import write_atomic
from vae.checkpoint import CHECKPOINT_NAME, save_checkpoint
from vae.config import TrainConfig
from vae.data import Images
from vae.member import Member
from vae.packed_train import PackedTrainer
from vae.step_graph import EagerGraphs
from vae.train import resolve_device


def trial_trainer(configs: list[TrainConfig], images: Images) -> PackedTrainer:
    """The trainer of a trial's grid points (``vaesweep train``'s one, or a sweep trial's pack)."""
    hook, device = hooks.eager_graphs(), resolve_device(configs[0].device)
    graphs = EagerGraphs(device, fail_capture=hook == "fail") if hook and device.type == "cpu" else None
    return PackedTrainer(configs, images, graphs=graphs)


class TrialSink(Protocol):
    """Where a trial's epochs go."""

    def folder(self) -> contextlib.AbstractContextManager[Path]:
        """A folder for this epoch's checkpoint (and, after the last epoch, the analysis), alive until
        ``report`` returns."""

    def member_folder(self, folder: Path, label: str) -> Path:
        """Where in an epoch's ``folder`` member ``label``'s final checkpoint, analysis and metrics go."""

    def report(self, result: dict[str, Any], folder: Path | None) -> None:
        """One epoch's result; ``folder`` is given when it holds a checkpoint."""


def run_trial(trainer: PackedTrainer, labels: list[str], evaluation: EvalConfig, sink: TrialSink,
              checkpoint_every: int, is_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train the trainer's members (grid points ``labels``; one, or a pack: sweeps/packs.py) from its
    epoch to ``epochs``; returns the last epoch's result, or {} when it had already finished.

    Each epoch's result holds every member's metrics under ``members`` (by label), the messages of
    diverged members under ``failed`` and, when members hold out validation images, the best living
    member's validation bound under ``SELECTION_METRIC`` (what ASHA and Optuna read; their trials are
    packs of one). The final checkpoint folder holds each member's own checkpoint, analysis and
    metrics in ``members/<label>/``. A diverged member is frozen while its pack mates go on; when every
    member has failed the trial fails with the first one's message."""
    epochs = trainer.configs[0].epochs
    probe_epochs = set(evaluation.probe_epochs)
    result: dict[str, Any] = {}
    while trainer.epoch < epochs:
        metrics = trainer.train_epoch()
        if len(trainer.failures) == len(trainer.configs):  # the trial fails; its last good epoch stays the last reported
            raise trainer.failures[min(trainer.failures)]
        for i, member_metrics in metrics.items():
            if member_metrics["epoch"] in probe_epochs or trainer.configs[i].validation_images:
                member = trainer.member(i)
                add_probes(member_metrics, member, evaluation.probe_epochs, evaluation.probe_train_size, evaluation.seed)
                if member.val_x is not None:
                    member_metrics[SELECTION_METRIC] = member.validation_bound(evaluation.val_images,
                                                                               evaluation.bound_samples)
        last = trainer.epoch == epochs
        save = last or trainer.epoch % checkpoint_every == 0
        with sink.folder() as folder:
            if save:
                save_checkpoint(trainer.state_dict(), folder / CHECKPOINT_NAME)
            for i, member_metrics in metrics.items():
                if last:
                    out = sink.member_folder(folder, labels[i])
                    own_folder = out != folder  # a run directory's checkpoint and record already hold its one model
                    if own_folder:
                        save_checkpoint(trainer.member_state(i), out / CHECKPOINT_NAME)
                    member_metrics.update(final_metrics(trainer.member(i), evaluation, out / ANALYSIS_DIR,
                                                        is_progress))
                    if own_folder:
                        write_atomic(out / MEMBER_METRICS_FILE, json.dumps(member_metrics).encode())
                check_metrics(member_metrics)
            result = {**pack_result(trainer.epoch, {labels[i]: m for i, m in metrics.items()},
                                    {labels[i]: str(err) for i, err in trainer.failures.items()}),
                      STEP_MODE_KEY: trainer.step_mode}
            sink.report(result, folder if save else None)
    return result


def pack_result(epoch: int, members: dict[str, dict[str, Any]], failed: dict[str, str]) -> dict[str, Any]:
    """One epoch's result of a trial (see ``run_trial``)."""
    selection = [m[SELECTION_METRIC] for m in members.values() if SELECTION_METRIC in m]
    return {"epoch": epoch, MEMBERS_KEY: members, FAILED_KEY: failed,
            **({SELECTION_METRIC: max(selection)} if selection else {})}


def final_metrics(member: Member, evaluation: EvalConfig, out: Path,
                  is_progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Test bounds, IS log-likelihood and the latent analysis (its files written into ``out``)."""
    final = member.evaluate(evaluation.bound_samples, evaluation.is_samples, progress=is_progress)
    analysis = analyze_member(member, out, evaluation)
    return {
        **final,
        MetricName.active_components: analysis[MetricName.active_components],
        MetricName.active_units: analysis[MetricName.active_units],
        MetricName.axis_alignment: analysis[MetricName.axis_alignment],
        **{f"final_probe_{name}": acc for name, acc in analysis["probe_accuracy"].items()},
    }


def replay_final(source: Path, labels: list[str], sink: TrialSink, failed: dict[str, str]) -> dict[str, Any]:
    """Report a finished trial's last epoch again from its final checkpoint folder (checkpoint, each
    member's analysis and final metrics), training nothing: how a sweep rebuilt after losing Ray's
    or grown sweep keeps its finished trials (sweeps/driver/recovery.py); ``labels``: the members that
    finished, ``failed``: label -> message of those that diverged."""
    members = {label: json.loads(member_metrics_file(sink.member_folder(source, label)).read_text())
               for label in labels}
    result = pack_result(next(iter(members.values()))["epoch"], members, failed)
    with sink.folder() as folder:
        shutil.copytree(source, folder, dirs_exist_ok=True)
        sink.report(result, folder)
    return result
