"""What a finished pack's MLflow runs cost to end: serially, with ``CLOSE_THREADS`` threads, and what
the driver itself waits for them (they are ended in the background).

    .venv/bin/python bench/close_cost.py            # P = 240, about a minute

A pack's trial ends with every member's run to close (its queued epochs sent, its state set FINISHED).
The sweep's own ``mlflow server`` on 127.0.0.1 gets P runs of one queued epoch each;
``MlflowTrialCallback._end_runs`` ends them with one thread, then (on P new runs) with ``CLOSE_THREADS``.
Prints both times and their ratio (same run, same server).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from types import SimpleNamespace

from mlflow.tracking import MlflowClient

from sweeps.config import load_sweep
from sweeps.driver import mlflow_callback
from sweeps.driver.context import DriverContext, running
from sweeps.driver.mlflow_callback import MlflowTrialCallback
from sweeps.driver.tracking_target import open_tracking
from sweeps.mlflow_server import LocalMlflowServer
from sweeps.packs import PACK_KEY
from vae.metric_names import MetricName


def end_seconds(callback: MlflowTrialCallback, members: int, threads: int, tag: str) -> float:
    """Seconds ``_end_runs`` takes for ``members`` new runs with one queued epoch each, on ``threads``."""
    runs = callback.runs
    keys = []
    for i in range(members):
        key = runs.open(f"trial-{tag}", {"alpha": round(0.01 * i, 2), "k": 10 + ord(tag[0]), "seed": 0})
        runs.log_epoch(key, {"epoch": 1, MetricName.train_vr_bound_alpha: -100.0})
        keys.append(key)
    mlflow_callback.CLOSE_THREADS = threads
    start = time.perf_counter()
    callback._end_runs([(key, None, True) for key in keys], None)
    return time.perf_counter() - start


def driver_hold(callback: MlflowTrialCallback, sweep) -> tuple[float, float]:
    """(seconds ``on_trial_complete`` holds the driver, seconds until its runs are ended) for a finished
    pack trial of the sweep's first pack, its runs already open (as a trial's epochs leave them)."""
    trial = SimpleNamespace(trial_id="trial-c", config={PACK_KEY: 0}, last_result={"epoch": sweep.train.epochs},
                            checkpoint=None)
    for point in sweep.packs()[0]:
        callback.runs.log_epoch(callback._open(trial, point), {"epoch": 1, MetricName.train_vr_bound_alpha: -100.0})
    start = time.perf_counter()
    callback.on_trial_complete(0, [], trial)
    held = time.perf_counter() - start
    callback.collect_ends(wait=True)
    return held, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=240, help="pack size P")
    args = parser.parse_args()
    threads = mlflow_callback.CLOSE_THREADS
    with tempfile.TemporaryDirectory() as root:
        alphas = [round(0.01 * i, 2) for i in range(args.members)]
        sweep = load_sweep("smoke", ["resources.gpu=0", f"grid.alpha={alphas}", "grid.k=[99]",
                                     f"resources.pack={args.members}"], name="close", storage=root)
        with LocalMlflowServer(sweep.sweep_dir()) as server, running(DriverContext(server)):
            server.wait()
            open_tracking(server, sweep)
            callback = MlflowTrialCallback(sweep)
            callback.setup()
            serial = end_seconds(callback, args.members, 1, "a")
            parallel = end_seconds(callback, args.members, threads, "b")
            held, ended_s = driver_hold(callback, sweep)
            ended = sum(run.info.status == "FINISHED" for run in MlflowClient(server.uri).search_runs(
                [callback.runs.experiment_id], max_results=3 * args.members + 10))
    print(f"P = {args.members}: runs ended serially in {serial:.2f} s, with {threads} threads in {parallel:.2f} s "
          f"(ratio {serial / parallel:.2f}); a finished pack holds the driver {held:.3f} s "
          f"({held / serial:.3f} of the serial time), its runs ended in the background after {ended_s:.2f} s; "
          f"{ended} runs FINISHED of {3 * args.members}")


if __name__ == "__main__":
    main()
