"""One trial trained into a directory, without Ray: ``vaesweep train`` as a sink of the trial engine.

The directory holds ``checkpoint.pt`` (written atomically every ``checkpoint_every`` epochs and at
the end), ``metrics.json`` (config, evaluation settings, per-epoch history, final test metrics) and
``analysis/`` (the final latent analysis). Running again on the same directory resumes from the
checkpoint; a directory holding a different configuration is refused rather than overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from analysis.metrics import FINAL_METRICS, MetricName
from analysis.settings import EvalConfig
from sweeps.trial.engine import run_trial, trial_trainer
from sweeps.layout import RUN_RECORD_FILE
from sweeps.packs import MEMBERS_KEY, STEP_MODE_KEY
from vae.atomic import write_atomic
from vae.checkpoint import CHECKPOINT_NAME, load_checkpoint
from vae.config import TrainConfig
from vae.data import images_of
from vae.data_sets import load_data
from vae.devices import device_summary, probe_devices
from vae.errors import RunDirError
from vae.formats import refuse_earlier_checkpoint
from vae.packed_train import PackedTrainer
from vae.config import grid_point_label



def write_json(payload: dict[str, Any], path: Path) -> None:
    write_atomic(path, json.dumps(payload, indent=2).encode())


def prepare_out_dir(out: Path) -> None:
    """Create ``out`` or fail with a one-line reason (not a directory, not writable)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"--out {out}: cannot create it ({err.strerror}); choose a writable directory") from None
    if not os.access(out, os.W_OK):
        raise RunDirError(f"--out {out}: not writable; choose a writable directory")


class DirectorySink:
    """The engine's sink for a run directory of one model (a pack of one): checkpoint and final
    analysis in place, history in ``metrics.json``, progress bars for the epochs and the final IS estimate."""

    def __init__(self, out: Path, header: dict[str, Any], history: list[dict[str, Any]], trainer: PackedTrainer,
                 is_samples: int) -> None:
        self.out, self.header, self.history = out, header, history
        (config,) = trainer.configs
        self.label = grid_point_label(config.alpha, config.k, config.seed)
        self.bar = tqdm(total=config.epochs, initial=trainer.epoch, desc=f"train alpha={config.alpha:g} k={config.k}",
                        unit="epoch")
        self.is_total, self.is_samples = len(trainer.images.test_x), is_samples
        self.is_bar: tqdm | None = None

    @contextlib.contextmanager
    def folder(self) -> Iterator[Path]:
        yield self.out

    def member_folder(self, folder: Path, label: str) -> Path:
        return folder

    def report(self, result: dict[str, Any], folder: Path | None) -> None:
        metrics = {**result[MEMBERS_KEY][self.label], "epoch": result["epoch"]}
        self.history.append(metrics)
        self.bar.set_postfix(bound=f"{metrics[MetricName.train_vr_bound_alpha]:.2f}", sec=f"{metrics[MetricName.epoch_seconds]:.1f}")
        self.bar.update()
        if folder is not None:  # the history on disk always matches the checkpoint beside it
            write_json({**self.header, "history": self.history, "epochs_completed": metrics["epoch"]},
                       self.out / RUN_RECORD_FILE)

    def is_progress(self, images: int) -> None:
        """Progress of the final IS estimate (its bar opens with the first batch)."""
        if self.is_bar is None:
            self.bar.close()
            self.is_bar = tqdm(total=self.is_total, desc=f"test IS log-likelihood ({self.is_samples} samples)", unit="img")
        self.is_bar.update(images)

    def close(self) -> None:
        for bar in (self.bar, self.is_bar):
            if bar is not None:
                bar.close()


def train_to_directory(config: TrainConfig, out: Path, data_dir: Path | None = None,
                       evaluation: EvalConfig = EvalConfig(), checkpoint_every: int = 1,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) ``config`` into ``out``, evaluate and analyse; returns what ``metrics.json`` holds."""
    prepare_out_dir(out)
    checkpoint_path = out / CHECKPOINT_NAME
    metrics_path = out / RUN_RECORD_FILE
    data = load_data(config.data, data_dir)
    trainer = trial_trainer([config], images_of(data, config.train_subset, config.test_subset))
    log(f"vaesweep: device: {device_summary(probe_devices())}; training on {trainer.device} ({trainer.step_mode})")
    history: list[dict[str, Any]] = []
    if checkpoint_path.exists():
        state = load_checkpoint(checkpoint_path)  # an unreadable one: CheckpointError, its own one line
        refuse_earlier_checkpoint(state, f" (--out {out}); choose a new --out")
        try:
            trainer.load_state_dict(state)
        except ValueError as err:
            raise RunDirError(f"--out {out} holds another run: {err}; choose a new --out") from None
        if trainer.epoch >= config.epochs:
            raise RunDirError(f"--out {out} already holds {trainer.epoch} trained epochs (--epochs {config.epochs}); "
                              f"its results are in {metrics_path}; choose a new --out or more --epochs")
        if metrics_path.exists():
            saved = json.loads(metrics_path.read_text())
            started = saved.get("data", {}).get("sha256", data.sha256)
            if started != data.sha256:
                raise RunDirError(f"--out {out} was trained on another version of {data.title} (sha256 {started[:12]}... "
                                  f"then, {data.sha256[:12]}... now); restore that data or choose a new --out")
            history = saved["history"][: trainer.epoch]
        log(f"resuming {out} from epoch {trainer.epoch}")
    header = {"config": config.model_dump(), "data": data.describe(), "eval": evaluation.model_dump()}
    sink = DirectorySink(out, header, history, trainer, evaluation.is_samples)
    try:
        last = run_trial(trainer, [sink.label], evaluation, sink, checkpoint_every, is_progress=sink.is_progress)
    finally:
        sink.close()
    final = last[MEMBERS_KEY][sink.label]
    result = {**header, "history": history, "epochs_completed": trainer.epoch, STEP_MODE_KEY: trainer.step_mode,
              **{name: final[name] for name in FINAL_METRICS if name in final}}  # no probes without labels
    write_json(result, metrics_path)
    return result
