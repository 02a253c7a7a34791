"""Cost of one linear-probe call (three latent probes) against one training epoch, in one run.

    .venv/bin/python bench/probe_cost.py --data-dir ../shared/data/mnist   (about 1 minute)

The probes run inside sweeps at PROBE_EPOCHS (1, 2, 5, ..., 1000: 10 calls in 1000 epochs), so
what matters is a call's cost in epochs of training. Also times the pixel baseline once.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from analysis.metrics import MetricName
from analysis.probes import member_probes, probe_accuracy, to_numpy
from analysis.settings import EvalConfig
from vae.config import TrainConfig
from vae.mnist import load_mnist
from vae.packed_train import PackedTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST idx files (default: the vaesweep cache)")
    parser.add_argument("--train-size", type=int, default=EvalConfig().probe_train_size,
                        help="training images the probes are fit on")
    args = parser.parse_args()
    trainer = PackedTrainer([TrainConfig(alpha=1.0, k=30, epochs=2, device="cpu")], load_mnist(args.data_dir))
    epoch_seconds = [trainer.train_epoch()[0][MetricName.epoch_seconds] for _ in range(2)][-1]
    member = trainer.member(0)
    start = time.perf_counter()
    accuracies = member_probes(member, args.train_size, EvalConfig().seed)
    probe_seconds = time.perf_counter() - start
    x, y = member.probe_train_set(args.train_size)
    start = time.perf_counter()
    pixels = probe_accuracy(to_numpy(x), to_numpy(y), to_numpy(member.test_x), to_numpy(member.test_y))
    pixel_seconds = time.perf_counter() - start
    print(f"training epoch (60k images, K=5, k=30): {epoch_seconds:.2f} s")
    print(f"probe call (means, means+variances, samples; fit on {args.train_size}, scored on 10k): "
          f"{probe_seconds:.2f} s = {probe_seconds / epoch_seconds:.2f} epochs  "
          f"[accuracies after 2 epochs: {', '.join(f'{k} {v:.3f}' for k, v in accuracies.items())}]")
    print(f"pixel baseline probe (once per analysis): {pixel_seconds:.2f} s = {pixel_seconds / epoch_seconds:.2f} epochs "
          f"[accuracy {pixels:.3f}]")
    print(f"overhead of the default probe schedule in a 1000-epoch trial: {10 * probe_seconds / (1000 * epoch_seconds):.2%}")


if __name__ == "__main__":
    main()
