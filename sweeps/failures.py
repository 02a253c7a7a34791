"""Which errors inside a trial a retry can fix, and how a failure is told: the one list the trial side,
the driver and the README's failure table follow.

A retry starts the trial again from its last checkpoint with the same seed and settings, so an error
that those inputs cause is raised again: retrying it only multiplies the compute. Such an error ends
its grid points at once (FAILED, with the cause); everything else (a worker or node that died, a
process killed for memory, a lost connection, any error not listed here) is retried up to the sweep's
``max_failures``. A full disk stops the whole sweep instead (sweeps/driver/disk.py).
"""

from __future__ import annotations

import re

from pydantic import ValidationError

from vae.errors import DataError, NonFiniteLossError

class FailedBefore(RuntimeError):
    """Grid points that ended on one of these errors, run again without ``--retry-failed``: they stay FAILED."""


RETRY_HINT = "failed so before, not retried (rerun with --retry-failed to retry, e.g. after a fix)"
# Error class -> what it means; a trial that raises one is not retried.
NOT_RETRIED: dict[type[Exception], str] = {
    NonFiniteLossError: "the loss diverged (same seed and settings: same divergence)",
    DataError: "the data set cannot be used as the config asks",
    ValidationError: "a config value is invalid",
    FailedBefore: "the grid point failed so before, and the run did not ask to retry it",
}
FATAL_KEY = "fatal"  # in a trial's last result: the error that ended it for good (one line)
DIVERGED = re.compile(r"non-finite loss \([^)]*\) at epoch (\d+)")


def first_cause(error: str) -> str:
    """A failure's message as it first happened (a point that failed so before carries its first cause)."""
    return error.removeprefix(f"{FailedBefore.__name__}: ").removesuffix(f"; {RETRY_HINT}")


def cause_of(error: str) -> str:
    """A failure's cause in a few words: 'non-finite loss', else the error's class (or its first words)."""
    error = first_cause(error)
    if DIVERGED.search(error):
        return "non-finite loss"
    head = error.split(":", 1)[0].strip()
    return head if re.fullmatch(r"\w+", head) else error[:60]


def diverged_epoch(error: str) -> int | None:
    """The epoch a divergence message names."""
    found = DIVERGED.search(error)
    return int(found.group(1)) if found else None


def failure_summary(failures: dict[str, str], total: int, lr: float) -> list[str]:
    """The end of a run's failures grouped by cause ('6 of 6 grid points diverged in epoch 1: non-finite
    loss'), and the likely fix when every grid point diverged in its first epoch."""
    groups: dict[str, list[str]] = {}
    for error in failures.values():
        groups.setdefault(cause_of(error), []).append(error)
    lines = []
    for cause, errors in sorted(groups.items(), key=lambda item: -len(item[1])):
        if cause == "non-finite loss":
            epochs = sorted({diverged_epoch(error) for error in errors})
            when = f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}-{epochs[-1]}"
            lines.append(f"{len(errors)} of {total} grid points diverged in {when}: non-finite loss")
        else:
            lines.append(f"{len(errors)} of {total} grid points failed: {cause}")
    if again := sum(RETRY_HINT in error for error in failures.values()):
        lines.append(f"{again} of them failed so before and were not retried: rerun with --retry-failed to retry them")
    if len(failures) == total and all(diverged_epoch(error) == 1 for error in failures.values()):
        lines.append(f"every grid point diverged in its first epoch: the learning rate is likely too high "
                     f"(train.lr={lr:g}; the study's is 0.001), or the alpha range too extreme; e.g. --set train.lr=0.001")
    return lines
