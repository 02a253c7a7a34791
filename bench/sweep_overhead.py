"""Wall time of the smoke grid through Ray Tune + MLflow against the same trials run bare, in one run.

    .venv/bin/python bench/sweep_overhead.py --data-dir ../shared/data/mnist   (about 3 minutes)

(a) ``sweeps.launch.run_sweep`` on the ``smoke`` preset in a fresh folder: local Ray, the sweep's
    MLflow server, per-epoch reports and checkpoints, MLflow logging, final analysis per trial;
(b) the same trials, one after another in this process, by the plain trainer with the same probes,
    evaluation and analysis (torch using every core): no Ray, no MLflow, no checkpoints.
Overhead = (a)/(b) - 1; target under 25%. Fixed costs (starting Ray and the MLflow server) weigh
more on a small grid than on a real one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from analysis.model_analysis import analyze_trainer
from analysis.probes import ProbeCallback
from analysis.settings import AnalysisSettings
from sweeps.config import load_sweep
from sweeps.launch import run_sweep
from vae.data import load_mnist
from vae.train import Trainer


def bare(config, data_dir: Path | None, workdir: Path) -> float:
    start = time.perf_counter()
    for index, trial in enumerate(config.trials()):
        trainer = Trainer(trial, load_mnist(data_dir, trial.train_subset, trial.test_subset))
        trainer.fit(ProbeCallback(trainer, config.eval.probe_epochs, config.eval.probe_train_size))
        trainer.evaluate(config.eval.bound_samples, config.eval.is_samples)
        settings = AnalysisSettings(epsilon=config.eval.epsilon, probe_train_size=config.eval.probe_train_size)
        analyze_trainer(trainer, workdir / str(index), settings)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST idx files (default: the vaesweep cache)")
    parser.add_argument("--preset", default="smoke")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_sweep(args.preset, storage=tmp)
        start = time.perf_counter()
        results = run_sweep(config, data_dir=args.data_dir)
        swept = time.perf_counter() - start
        assert results.num_errors == 0, "the sweep had failed trials"
        plain = bare(config, args.data_dir, Path(tmp) / "bare")
    n = len(config.trials())
    print(f"\n{args.preset}: {n} trials")
    print(f"(a) Ray Tune + MLflow sweep: {swept:.1f} s")
    print(f"(b) bare trainer, same trials in one process: {plain:.1f} s")
    print(f"overhead (a)/(b) - 1 = {swept / plain - 1:+.0%}   [target < 25%]")


if __name__ == "__main__":
    main()
