"""Tune's loggers of a sweep: only ``result.json``, the one file vaesweep reads (``status``, ``sync``).

Tune adds its JSON, CSV and (with tensorboardX installed) TensorBoard loggers to every run config
that lacks one of each kind. The CSV and TensorBoard loggers flatten every key of every result, a
pack's every member's metrics included, on the driver, per result, and nothing reads
``progress.csv`` or the event files (``bench/driver_cost.py --tune-loggers default`` measures them).
A run config therefore holds the JSON logger and two stand-ins of the other kinds that write nothing,
so that Tune adds none; a format-1 sweep (``vae/formats.py``), whose saved run config has none of
them, keeps Tune's three on resume.
"""

from __future__ import annotations

from typing import Any

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback


class WritesNothing:
    """A logger's hooks that write nothing (mixed in ahead of a Tune logger)."""

    def log_trial_start(self, trial: Any) -> None:
        pass

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        pass

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        pass


class NoCsvLogger(WritesNothing, CSVLoggerCallback):
    """In place of Tune's ``progress.csv`` writer."""


class NoTensorBoardLogger(WritesNothing, TBXLoggerCallback):
    """In place of Tune's TensorBoard event writer."""

    def __init__(self) -> None:  # the parent's imports tensorboardX, which a sweep does not need
        self._trial_writer: dict = {}
        self._trial_result: dict = {}


def result_loggers() -> list:
    """The loggers of a new sweep's run config: ``result.json`` only."""
    return [JsonLoggerCallback(), NoCsvLogger(), NoTensorBoardLogger()]
