"""What being the only MLflow writer costs the sweep's driver, against a training epoch of the same run.

    .venv/bin/python bench/tracking_cost.py --data-dir ../shared/data/mnist   (about 1 minute)

(a) one training epoch (the second: the first warms up) of the study's model (60,000 images, K=5, k=30, alpha=0.5) on this machine;
(b) the driver's write of one epoch result (``TrialRuns.log_epoch``: one ``log_batch`` of the
    schema's per-epoch metrics) to the sweep's own ``mlflow server`` on 127.0.0.1 (sqlite store),
    median over ``--results`` results spread over ``--trials`` runs.
Prints (b) in ms, the share (b)/(a) a trial's epoch adds to the driver's work, and how many results
per second the driver can write: the ceiling on concurrent trials x epochs per second.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from analysis.metrics import MetricName
from sweeps.config import load_sweep
from sweeps.mlflow_server import LocalMlflowServer
from sweeps.driver.run_writer import TrialRuns, ensure_parent_run, get_or_create_experiment
from vae.config import TrainConfig
from vae.mnist import load_mnist
from vae.packed_train import PackedTrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST idx files (default: the vaesweep cache)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--results", type=int, default=400)
    args = parser.parse_args()
    trainer = PackedTrainer([TrainConfig(alpha=0.5, k=30, device="cpu")], load_mnist(args.data_dir))
    epoch_seconds = [trainer.train_epoch()[0][MetricName.epoch_seconds] for _ in range(2)][-1]  # the first one warms up
    result = {"epoch": 0, MetricName.train_vr_bound_alpha: -100.0, MetricName.epoch_seconds: epoch_seconds, "ray_node_id": "n",
              "training_iteration": 1, "time_this_iter_s": epoch_seconds}
    with tempfile.TemporaryDirectory() as tmp:
        sweep = load_sweep("smoke", storage=tmp)
        with LocalMlflowServer(sweep.sweep_dir()) as server:
            client = MlflowClient(server.wait())
            experiment_id = get_or_create_experiment(client, "bench")
            runs = TrialRuns(client, experiment_id, ensure_parent_run(client, experiment_id, "bench", {}), sweep)
            keys = [runs.open(f"t{trial}", {"alpha": 0.5, "k": 30, "seed": trial}, "n") for trial in range(args.trials)]
            seconds = []
            for index in range(args.results):
                result["epoch"] = index // args.trials + 1
                start = time.perf_counter()
                runs.log_epoch(keys[index % args.trials], result)
                seconds.append(time.perf_counter() - start)
    write = statistics.median(seconds)
    print(f"(a) training epoch (60k images, K=5, k=30): {epoch_seconds:.2f} s")
    print(f"(b) driver's MLflow write of one epoch result: {1000 * write:.1f} ms "
          f"(median of {args.results}; 90th percentile {1000 * statistics.quantiles(seconds, n=10)[-1]:.1f} ms)")
    print(f"(b)/(a) = {write / epoch_seconds:.2%} of an epoch per trial; the driver writes up to "
          f"{1 / write:.0f} results/s, i.e. {epoch_seconds / write:.0f} trials at this epoch time")


if __name__ == "__main__":
    main()
