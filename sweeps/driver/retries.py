"""No retry of what a retry cannot fix: a trial that reported why it ends for good (``FATAL_KEY``,
sweeps/failures.py: a divergence, a data or config error) has its retries spent before its error
reaches Tune, which then ends it ERROR at once instead of starting it again ``max_failures`` times.
Every other error keeps ``max_failures``'s meaning."""

from __future__ import annotations

from typing import Any

from ray import tune

from sweeps.failures import FATAL_KEY


class NoRetryOfFatal(tune.Callback):
    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        if FATAL_KEY in result:
            trial.max_failures = 0  # Trial.should_recover: num_failures <= max_failures
