"""The driver's filters on Ray's log records: what Ray would print as a traceback becomes one line of
ours (or nothing, where the driver says it itself), and every other record passes untouched."""

from __future__ import annotations

import errno
import logging
import sys

from sweeps.driver.ray_logs import DiskFullLogFilter, GoneCheckpointLogFilter

GONE = "/tmp/runs/a sweep/tune/train_trial_1/checkpoint_000001"


def record(message: str, error: BaseException | None = None) -> logging.LogRecord:
    """A log record as ``logger.exception`` makes it inside an ``except`` block."""
    try:
        if error is not None:
            raise error
        exc_info = None
    except BaseException:  # noqa: BLE001 - any error, as Ray logs it
        exc_info = sys.exc_info()
    return logging.LogRecord("ray.tune.execution.tune_controller", logging.ERROR, __file__, 1, message, (), exc_info)


def test_a_checkpoint_ray_had_already_deleted_is_one_line_not_a_traceback(capsys):
    gone = record("Trial t_1: Error handling checkpoint TrainingResult(...)",
                  FileNotFoundError(f"Path not found: (<pyarrow._fs.LocalFileSystem object at 0x7f>, {GONE})"))
    assert GoneCheckpointLogFilter().filter(gone) is False
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (f"vaesweep: note: Ray tried to delete a checkpoint it had already deleted before the last driver "
                    f"stopped ({GONE}); nothing is lost")


def test_other_checkpoint_errors_and_records_pass(capsys):
    kept = [record("Trial t_1: Error handling checkpoint TrainingResult(...)", PermissionError("denied")),
            record("Trial t_1: something else", FileNotFoundError("x")),
            record("a plain warning")]
    assert all(GoneCheckpointLogFilter().filter(r) for r in kept)
    assert all(DiskFullLogFilter().filter(r) for r in kept)
    assert capsys.readouterr().err == ""


def test_a_full_disk_is_left_to_the_driver_s_own_line():
    assert DiskFullLogFilter().filter(record("Error saving", OSError(errno.ENOSPC, "No space left on device"))) is False
    assert DiskFullLogFilter().filter(record("upload failed: [Errno 28] No space left on device")) is False
