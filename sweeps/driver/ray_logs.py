"""The driver's console keeps to vaesweep's lines: Ray's log records that say, with a traceback, what
vaesweep says in one line are filtered out, and the loggers of Ray's routine work quieted
(``--verbose`` keeps the failed trials' records and the routine notes)."""

from __future__ import annotations

import logging
import re
import sys

from sweeps.driver.disk import DISK_FULL_TEXT


class DiskFullLogFilter(logging.Filter):
    """Drops Ray's log records (with their tracebacks) about a full disk: the driver says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        return not (DISK_FULL_TEXT in text or "[Errno 28]" in text)


class GoneCheckpointLogFilter(logging.Filter):
    """Ray's traceback when it cannot delete a checkpoint it remembers but that is gone, replaced by one
    line of ours. After a driver is SIGKILLed, Ray's saved state may still list a checkpoint that Ray had
    already deleted (keeping 2 per trial); on resume, registering the next one deletes it again and the
    missing path raises. Nothing is lost: Ray updates its bookkeeping before it deletes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not (isinstance(error, FileNotFoundError) and "Error handling checkpoint" in record.getMessage()):
            return True
        gone = re.search(r", (.+/checkpoint_\d+)\)", str(error))  # pyarrow's text: "Path not found: (<fs>, PATH)"
        print(f"vaesweep: note: Ray tried to delete a checkpoint it had already deleted before the last driver "
              f"stopped ({gone.group(1) if gone else error}); nothing is lost", file=sys.stderr)
        return False


class TrialErrorLogFilter(logging.Filter):
    """Drops Ray's ERROR records of a failed trial (each with its traceback) and its closing list of the
    trials that did not complete: ``SweepProgress`` says each failed grid point in one line, with where
    the traceback is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Trial task failed for trial", "Trials did not complete:"))


def filter_ray_logs(verbose: bool) -> None:
    """Install the filters on the handlers of Ray's logger (after ``ray.init`` made them), once each."""
    kinds = (DiskFullLogFilter, GoneCheckpointLogFilter, *(() if verbose else (TrialErrorLogFilter,)))
    for handler in logging.getLogger("ray").handlers:
        for kind in kinds:
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())


def quiet_loggers(verbose: bool) -> None:
    """Without ``verbose``: no notes about Ray's routine work."""
    if verbose:
        return
    logging.getLogger("ray.tune").setLevel(logging.WARNING)  # "Wrote the latest version of all result files"
    # "Failed to fetch metrics" of trials stopped before their first result (the fit's result grid reads them)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # "Token authentication is enabled for this Ray cluster": on by default for a local cluster
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
