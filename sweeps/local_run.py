"""One trial trained into a directory, without Ray: the engine of ``vaesweep train``.

The directory holds ``checkpoint.pt`` (written atomically after every ``checkpoint_every`` epochs)
and ``metrics.json`` (config, per-epoch history, final test metrics). Running again on the same
directory resumes from the checkpoint; a directory holding a different configuration is refused
rather than overwritten.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from analysis.probes import ProbeCallback
from analysis.settings import PROBE_EPOCHS
from vae.atomic import write_atomic
from vae.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from vae.config import TrainConfig
from vae.data import load_mnist
from vae.errors import RunDirError
from vae.train import Trainer

METRICS_NAME = "metrics.json"


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


def train_to_directory(
    config: TrainConfig,
    out: Path,
    data_dir: Path | None = None,
    bound_samples: int = 10,
    is_samples: int = 2000,
    checkpoint_every: int = 1,
    probe_epochs: Sequence[int] = PROBE_EPOCHS,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train (or resume) ``config`` into ``out``, evaluate, and return the metrics written.

    Linear probes run after each of ``probe_epochs`` (not past the last) and land in the history.
    """
    prepare_out_dir(out)
    checkpoint_path = out / CHECKPOINT_NAME
    metrics_path = out / METRICS_NAME
    data = load_mnist(data_dir, config.train_subset, config.test_subset)
    trainer = Trainer(config, data)
    history: list[dict[str, float]] = []
    if checkpoint_path.exists():
        try:
            trainer.load_state_dict(load_checkpoint(checkpoint_path))
        except ValueError as err:
            raise RunDirError(f"--out {out} holds another run: {err}; choose a new --out") from None
        if metrics_path.exists():
            history = json.loads(metrics_path.read_text())["history"][: trainer.epoch]
        if trainer.epoch > config.epochs:
            raise RunDirError(f"--out {out} already holds {trainer.epoch} epochs, more than --epochs {config.epochs}")
        log(f"resuming {out} from epoch {trainer.epoch}")

    probes = ProbeCallback(trainer, probe_epochs)

    def record(metrics: dict[str, float]) -> None:
        probes(metrics)
        history.append(metrics)
        bar.set_postfix(bound=f"{metrics['train_vr_bound_alpha']:.2f}", sec=f"{metrics['epoch_seconds']:.1f}")
        bar.update()
        if trainer.epoch % checkpoint_every == 0 or trainer.epoch == config.epochs:
            save_checkpoint(trainer.state_dict(), checkpoint_path)
            write_json({"config": config.model_dump(), "history": history, "epochs_completed": trainer.epoch}, metrics_path)

    with tqdm(total=config.epochs, initial=trainer.epoch, desc=f"train alpha={config.alpha} k={config.k}", unit="epoch") as bar:
        trainer.fit(record)
    with tqdm(total=len(trainer.test_x), desc=f"test IS log-likelihood ({is_samples} samples)", unit="img") as bar:
        final = trainer.evaluate(bound_samples, is_samples, progress=bar.update)
    result = {"config": config.model_dump(), "history": history, "epochs_completed": trainer.epoch,
              "bound_samples": bound_samples, "is_samples": is_samples, **final}
    write_json(result, metrics_path)
    return result
