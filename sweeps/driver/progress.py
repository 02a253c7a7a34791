"""What `vaesweep run` prints while it runs: one concise line every half minute and one per trial
that ends, instead of Ray's tables (``--verbose`` brings those back).

A line reads ``[02:31] 3/6 finished, 2 running, 0 failed, 0 retrying; a0.5_k20_s0 epoch 3/5 bound
-120.31; remaining ~01:10`` (a packed sweep counts packs finished and grid points failed); a grid
point that fails gets one line, ``FAILED label: cause`` (and where its traceback is kept): the remaining time is the epochs still to train over the rate of the epochs
trained so far in this run. Tune pickles callbacks with the experiment, so whether to be verbose is
read from the driver run's context at ``setup`` (sweeps/driver/context.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune import CLIReporter

from analysis.metrics import MetricName
from sweeps.config import SweepConfig
from sweeps.driver.context import current
from sweeps.failures import FATAL_KEY
from sweeps.packs import member_failures, member_results, trial_points
from sweeps.ray_files import error_line
from vae.config import grid_point_label

INTERVAL_S = 30.0


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class SweepProgress(tune.Callback):
    """The driver's progress lines (or Ray's own tables with ``--verbose``)."""

    def __init__(self, sweep: SweepConfig) -> None:
        self.sweep = sweep
        self.start = self.last = 0.0
        self.epochs: dict[str, int] = {}  # newest epoch of each trial
        self.trained = 0  # epochs trained by this run (the rate of the remaining-time estimate)
        self.replayed: set[str] = set()  # trials whose first result here was their last epoch: finished before
        self.newest = ""
        self.failed: set[str] = set()  # grid points said to have failed (in this driver run)
        self.reporter: CLIReporter | None = None

    def setup(self, **info: Any) -> None:
        """Each driver run (a resumed sweep's callback is unpickled from the run that started it)."""
        self.start = self.last = time.monotonic()
        self.failed, self.replayed, self.trained = set(), set(), 0
        self.reporter = CLIReporter(max_report_frequency=INTERVAL_S) if current().verbose else None

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        if FATAL_KEY not in result:  # a pack member that diverged while its mates go on (a fatal end: on_trial_error)
            for label, cause in member_failures(result).items():
                self.say_failed(label, cause)
        members = member_results(trial_points(self.sweep, trial.config), result)
        if "epoch" not in result or not members:
            return
        # the rate of the remaining-time estimate counts epochs trained in this driver run: not a trial's
        # first result after a resume, nor a finished trial's result replayed by a rebuild or growth
        if trial.trial_id not in self.epochs and result["epoch"] >= self.sweep.train.epochs > 1:
            self.replayed.add(trial.trial_id)
        self.trained += self.epochs.get(trial.trial_id, 0) == result["epoch"] - 1
        self.epochs[trial.trial_id] = result["epoch"]
        point, metrics = members[0]
        pack = f" (+{len(members) - 1} in its pack)" if len(members) > 1 else ""
        self.newest = (f"{grid_point_label(**point)}{pack} epoch {result['epoch']}/{self.sweep.train.epochs} "
                       f"bound {metrics[MetricName.train_vr_bound_alpha]:.2f}")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        last = trial.last_result or {}
        epoch = last.get("epoch", 0)
        points = trial_points(self.sweep, trial.config)
        if epoch < self.sweep.train.epochs:
            print(f"  stopped {', '.join(grid_point_label(**p) for p in points)} after epoch {epoch} (scheduler)", flush=True)
            return
        if trial.trial_id in self.replayed:
            pack = f" (+{len(points) - 1} in its pack)" if len(points) > 1 else ""
            print(f"  kept    {grid_point_label(**points[0])}{pack}: finished before, not trained again", flush=True)
            return
        for point, metrics in member_results(points, last):
            if MetricName.test_log_likelihood in metrics:
                print(f"  done    {grid_point_label(**point)}: test IS log-likelihood {metrics[MetricName.test_log_likelihood]:.2f}, "
                      f"{metrics.get(MetricName.active_components, '?')} active components", flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        """Each grid point of the trial not yet said failed: its own cause (a diverged member's message),
        else the trial's error line, and where the traceback is."""
        error = error_line(trial.error_file) or "unknown error"
        own = member_failures(trial.last_result or {})
        name = trial.run_metadata.error_filename  # in the trial's folder of the sweep, where it is kept
        kept = f" (traceback: {Path(trial.storage.trial_fs_path) / name})" if name else ""
        for point in trial_points(self.sweep, trial.config):
            self.say_failed(grid_point_label(**point), own.get(grid_point_label(**point), error), kept)

    def say_failed(self, label: str, cause: str, where: str = "") -> None:
        """``FAILED label: cause``, once per grid point."""
        if label not in self.failed:
            self.failed.add(label)
            print(f"  FAILED  {label}: {cause}{where}", flush=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.reporter is not None:
            if self.reporter.should_report(trials):
                self.reporter.report(trials, False)
        elif time.monotonic() - self.last >= INTERVAL_S:
            print(self.line(trials), flush=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.reporter is not None:
            self.reporter.report(trials, True)

    def line(self, trials: list) -> str:
        """One summary line of the sweep now."""
        self.last = now = time.monotonic()
        states = [t.status for t in trials]
        total = len(self.sweep.packs()) if self.sweep.search == "grid" else self.sweep.optuna.num_samples
        left = sum(self.sweep.train.epochs - self.epochs.get(t.trial_id, 0) for t in trials
                   if t.status not in ("TERMINATED", "ERROR")) + self.sweep.train.epochs * (total - len(trials))
        rate = self.trained / (now - self.start)
        remaining = f"remaining ~{clock(left / rate)}" if rate > 0 else "remaining: after the first epoch"
        unit = "packs " if self.sweep.packed else ""
        retrying = sum(t.status in ("RUNNING", "PENDING") and t.run_metadata.num_failures > 0 for t in trials)
        failed = f"{len(self.failed)} grid point{'s' * (len(self.failed) != 1)} failed" if self.sweep.packed else \
            f"{len(self.failed)} failed"
        return (f"[{clock(now - self.start)}] {states.count('TERMINATED')}/{total} {unit}finished, "
                f"{states.count('RUNNING')} running, {failed}, {retrying} retrying; {self.newest or 'starting'}; "
                f"{remaining}")
