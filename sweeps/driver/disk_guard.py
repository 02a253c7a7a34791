"""The Tune callback that stops a sweep while its state can still be saved (sweeps/driver/disk.py
says what a sweep writes, and how a full disk is told apart from a failure)."""

from __future__ import annotations

from typing import Any

from ray import tune

from sweeps.config import SweepConfig
from sweeps.driver.context import current
from sweeps.driver.disk import ANALYSIS_BYTES, RECORD_BYTES, estimate, free_bytes, is_disk_full
from sweeps.ray_files import error_line


class DiskGuard(tune.Callback):
    """Stops the sweep when the free space of the sweep's filesystem falls below what the running trials
    write next (a checkpoint and a final analysis each, twice with the embedded store's artifacts) plus
    room for the records; and when a trial fails on a full disk anyway (another program filled it). The
    verdict goes to the driver run's ``DiskVerdict``. Holds only the sweep's config and the largest
    checkpoint's size (estimated once, not per result), so it pickles with the experiment (as Tune does
    on restore)."""

    def __init__(self, sweep: SweepConfig, pixels: int) -> None:
        self.sweep = sweep
        self.checkpoint = estimate(sweep, pixels).checkpoint * sweep.pack_size  # a trial's: its pack's members

    def reserve(self, running: int) -> int:
        return max(1, running) * 2 * (self.checkpoint + ANALYSIS_BYTES) + RECORD_BYTES

    def check(self, trials: list) -> None:
        sweep_dir = self.sweep.sweep_dir()
        free = free_bytes(sweep_dir)
        running = sum(t.status == "RUNNING" for t in trials)
        if free < self.reserve(running):
            current().disk.stop(sweep_dir, free)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        self.check(trials)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.on_trial_error(iteration, trials, trial)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        if is_disk_full(error_line(trial.error_file)):
            current().disk.stop(self.sweep.sweep_dir(), free_bytes(self.sweep.sweep_dir()))
