"""Wall time of the smoke grid through Ray Tune + MLflow against the same trials run bare, in one run.

    .venv/bin/python bench/sweep_overhead.py --data-dir ../shared/data/mnist   (about 3 minutes)

(a) ``sweeps.driver.launch.run_sweep`` on the ``smoke`` preset in a fresh folder: local Ray, the sweep's
    MLflow server, per-epoch reports and checkpoints, MLflow logging, final analysis per trial;
(b) the same trials, one after another in this process, by the same trial engine (probes,
    evaluation, analysis; torch using every core) with a sink that keeps nothing: no Ray, no MLflow,
    one checkpoint per trial (the final one) in a temporary folder.
Overhead = (a)/(b) - 1; target under 25%. Fixed costs (starting Ray and the MLflow server) weigh
more on a small grid than on a real one.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sweeps.config import load_sweep
from sweeps.trial.engine import run_trial
from sweeps.driver.launch import run_sweep
from vae.mnist import load_mnist
from vae.packed_train import PackedTrainer


class DiscardingSink:
    """The engine's sink for the bare run: a scratch folder per epoch, every report dropped."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    @contextlib.contextmanager
    def folder(self) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            yield Path(tmp)

    def member_folder(self, folder: Path, label: str) -> Path:
        return folder / label

    def report(self, result: dict[str, Any], folder: Path | None) -> None:
        pass


def bare(config, data_dir: Path | None, workdir: Path) -> float:
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for trial in config.grid_points():
        trainer = PackedTrainer([trial], load_mnist(data_dir, trial.train_subset, trial.test_subset))
        run_trial(trainer, ["trial"], config.eval, DiscardingSink(workdir), checkpoint_every=trial.epochs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST idx files (default: the vaesweep cache)")
    parser.add_argument("--preset", default="smoke")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_sweep(args.preset, storage=tmp)
        start = time.perf_counter()
        outcome = run_sweep(config, data_dir=args.data_dir)
        swept = time.perf_counter() - start
        assert outcome.exit_code == 0, f"the sweep did not finish every trial: {outcome}"
        plain = bare(config, args.data_dir, Path(tmp) / "bare")
    n = len(config.grid_points())
    print(f"\n{args.preset}: {n} trials")
    print(f"(a) Ray Tune + MLflow sweep: {swept:.1f} s")
    print(f"(b) bare trainer, same trials in one process: {plain:.1f} s")
    print(f"overhead (a)/(b) - 1 = {swept / plain - 1:+.0%}   [target < 25%]")


if __name__ == "__main__":
    main()
