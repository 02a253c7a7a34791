"""The sweep driver's cost per trial result, against the epoch it is added to.

    .venv/bin/python bench/driver_cost.py                       # (a) only: about 10 minutes
    .venv/bin/python bench/driver_cost.py --trials '' --digits-epochs 40   # (b) only: about 3 minutes

A function trainable's ``tune.report`` returns only once the driver has processed the result, so
whatever the driver spends per result is added to every epoch of every trial.

(a) The real driver (Tune with the sweep's run config: vaesweep's MLflow callback writing to the
    sweep's own ``mlflow server`` on 127.0.0.1, the progress lines, the disk guard, a checkpoint every
    epoch, Tune's loggers as the sweep configures them) fed by synthetic trials: a pack of P grid points
    reporting each member's per-epoch metrics every ``--epoch-seconds`` without training, one or two
    trials at once. Per result: the driver's milliseconds (Tune's ``_process_trial_result``, callbacks
    included; median and mean), the milliseconds a trial waits in ``tune.report`` (median), both after
    the first 5 results, and the MLflow requests the driver sent per result in the steady state (REST
    calls in the driver process, the writer thread's included, between the 5th result and the last:
    each run's creation before and its closing after are left out).
(b) The real thing: a digits pack of 24 (8 alphas x 3 seeds, k = 30) through ``vaesweep run``: the
    sweep's wall time per epoch (from its trials' result times) against the pack's own
    ``epoch_seconds`` (medians over the epochs between the first and the last), same run: the ratio is
    what the driver adds to a trained epoch.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from analysis.metrics import MetricName
from sweeps.config import load_sweep
from sweeps.packs import NODE_KEY, STEP_MODE_KEY, trial_points
from vae.config import grid_point_label

WARM_RESULTS = 5  # results left out of each median: Tune's and the server's first requests


def synthetic_trial(params: dict[str, Any], sweep, epochs: int, epoch_seconds: float) -> None:
    """A trial that reports what a pack of its grid points reports, with a small checkpoint every
    epoch, without training; each result carries how long the previous ``tune.report`` waited."""
    import ray
    from ray import tune

    from sweeps.trial.engine import pack_result

    logging.getLogger("ray.train").setLevel(logging.WARNING)  # "Checkpoint successfully created" every result
    labels = [grid_point_label(**point) for point in trial_points(sweep, params)]
    node = ray.get_runtime_context().get_node_id()
    wait = 0.0
    for epoch in range(1, epochs + 1):
        time.sleep(epoch_seconds)
        members = {label: {"epoch": epoch, MetricName.train_vr_bound_alpha: -100.0 - epoch / 10,
                           MetricName.epoch_seconds: epoch_seconds} for label in labels}
        result = {**pack_result(epoch, members, {}), STEP_MODE_KEY: "synthetic", NODE_KEY: node, "report_wait_s": wait}
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "checkpoint.pt").write_bytes(b"\0" * 4096)
            start = time.perf_counter()
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))
            wait = time.perf_counter() - start


def record_calls(owner: Any, name: str) -> list[tuple[float, float]]:
    """Record (start, seconds) of each call of ``owner.name``, any thread: measurement only."""
    record: list[tuple[float, float]] = []
    original = getattr(owner, name)
    lock = threading.Lock()

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            with lock:
                record.append((start, time.perf_counter() - start))

    setattr(owner, name, timed)
    return record


def driver_run(members: int, trials: int, epochs: int, epoch_seconds: float, root: Path,
               tune_loggers: str = "sweep") -> dict[str, float]:
    """One sweep of ``trials`` synthetic packs of ``members`` through the real driver: medians per result."""
    import mlflow.utils.rest_utils as rest
    import ray
    from ray import tune
    from ray.tune.execution.tune_controller import TuneController

    from sweeps.driver.context import DriverContext, running
    from sweeps.driver.launch import quiet_console
    from sweeps.driver.loggers import WritesNothing
    from sweeps.driver.tracking_target import open_tracking
    from sweeps.driver.tune_setup import param_space, sweep_run_config
    from sweeps.mlflow_server import LocalMlflowServer

    quiet_console(verbose=False)
    seeds = max(1, members // 8)
    alphas = [round(0.1 * i, 2) for i in range(members // seeds)]
    sweep = load_sweep("smoke", [f"grid.alpha={alphas}", f"grid.seed={list(range(seeds))}",
                                 f"grid.k={[10 + i for i in range(trials)]}", f"resources.pack={members}",
                                 "resources.gpu=0", f"train.epochs={epochs}", "eval.probe_epochs=[1]"],
                       name=f"p{members}x{trials}", storage=str(root))
    assert len(sweep.packs()) == trials and all(len(pack) == members for pack in sweep.packs())
    with LocalMlflowServer(sweep.sweep_dir()) as server, running(DriverContext(server)):
        open_tracking(server, sweep)
        ray.init(num_cpus=trials + 1, include_dashboard=False, logging_level="ERROR")
        originals = (TuneController._process_trial_result, rest.http_request)
        process = record_calls(TuneController, "_process_trial_result")
        requests = record_calls(rest, "http_request")
        try:
            trainable = tune.with_parameters(synthetic_trial, sweep=sweep, epochs=epochs, epoch_seconds=epoch_seconds)
            run_config = sweep_run_config(sweep, 64)
            if tune_loggers == "default":  # without the stand-ins Tune adds its CSV and TensorBoard loggers
                run_config.callbacks = [c for c in run_config.callbacks if not isinstance(c, WritesNothing)]
            tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}), param_space=param_space(sweep),
                               run_config=run_config)
            grid = tuner.fit()
        finally:
            TuneController._process_trial_result, rest.http_request = originals
            ray.shutdown()
    waits = [r["report_wait_s"] for result in grid for r in result.metrics_dataframe.to_dict("records")[WARM_RESULTS + 1:]]
    # steady state: the requests sent between the first results (the runs' creation) and the last one
    # (each run's closing), per result in that window
    steady = sorted(start for start, _ in process)[WARM_RESULTS:]
    sent = sum(steady[0] <= start < steady[-1] for start, _ in requests)
    seconds = [duration for _, duration in process[WARM_RESULTS:]]
    return {"driver_ms": 1000 * statistics.median(seconds), "driver_mean_ms": 1000 * statistics.mean(seconds),
            "wait_ms": 1000 * statistics.median(waits), "requests": sent / (len(steady) - 1)}


def digits_pack(epochs: int, root: Path) -> tuple[float, float]:
    """(sweep seconds per epoch, the pack's median epoch_seconds) of the digits preset's pack of 24."""
    name = "driver-digits"
    command = [str(Path(sys.executable).with_name("vaesweep")), "run", "digits", "--name", name, "--storage", str(root),
               "--set", f"train.epochs={epochs}", "--set", "grid.k=[30]", "--set", "resources.pack=24",
               "--set", "eval.probe_epochs=[1]",
               "--set", "eval.is_samples=20"]
    subprocess.run(command, check=True, capture_output=True, text=True)
    (result_file,) = (root / name / "tune").glob("*/result.json")
    lines = [json.loads(line) for line in result_file.read_text().splitlines()]
    # Tune's time_this_iter_s: from one report's return to the next, the driver's wait included; the
    # first epoch (probes) and the last (evaluation, analysis) are not training epochs
    train = [line for line in lines if 1 < line["epoch"] < epochs]
    wall = statistics.median(line["time_this_iter_s"] for line in train)
    inner = statistics.median(member[MetricName.epoch_seconds] for line in train for member in line["members"].values())
    return wall, inner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="1,24,80,240", help="pack sizes P (comma-separated)")
    parser.add_argument("--trials", default="1,2", help="trials at once (comma-separated)")
    parser.add_argument("--epochs", type=int, default=300, help="results per synthetic trial (cover several "
                        "of the MLflow writer's rounds)")
    parser.add_argument("--epoch-seconds", type=float, default=0.1, help="a synthetic trial's time between results")
    parser.add_argument("--tune-loggers", choices=("sweep", "default"), default="sweep",
                        help="sweep: the sweep's (result.json only); default: Tune's JSON, CSV and TensorBoard loggers")
    parser.add_argument("--digits-epochs", type=int, default=0, help="(b): epochs of the digits pack (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"(a) driver per result, synthetic packs, one result every {args.epoch_seconds:g} s per trial, "
              f"{args.epochs} results each (medians after the first {WARM_RESULTS})")
        print(f"{'P':>5} {'trials':>6} {'driver ms':>10} {'(mean)':>8} {'report wait ms':>15} {'MLflow req/result':>18}")
        for trials in map(int, filter(None, args.trials.split(","))):
            for members in map(int, filter(None, args.members.split(","))):
                cost = driver_run(members, trials, args.epochs, args.epoch_seconds, Path(tmp), args.tune_loggers)
                print(f"{members:>5} {trials:>6} {cost['driver_ms']:>10.1f} {cost['driver_mean_ms']:>8.1f} "
                      f"{cost['wait_ms']:>15.1f} {cost['requests']:>18.2f}", flush=True)
        if args.digits_epochs:
            wall, inner = digits_pack(args.digits_epochs, Path(tmp))
            print(f"(b) digits pack of 24, {args.digits_epochs} epochs: sweep {wall:.3f} s per epoch, the pack's "
                  f"epoch_seconds {inner:.3f} s: ratio {wall / inner:.2f}")


if __name__ == "__main__":
    main()
