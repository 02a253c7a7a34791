"""The exit codes of every vaesweep command, defined once (``vaesweep --help`` lists them)."""

from __future__ import annotations

import signal

DONE = 0  # a sweep: every grid point finished
FAILED = 1  # a grid point failed, training diverged, or MLflow failed under a command
BAD_INPUT = 2  # a flag, a config value, a data file: one line says which and how to fix it
DISK_FULL = 75  # EX_TEMPFAIL: free space, then run the same command again


def interrupted(signum: int) -> int:
    """The shell's code of a command ended by ``signum``: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + signum


HELP = f"""exit codes:
  {DONE}    done (a sweep: every grid point finished)
  {FAILED}    a grid point failed, or training diverged
  {BAD_INPUT}    bad input: a flag, a config value, a data file (one line says which and how to fix it)
  {DISK_FULL}   the disk is full: free space, then run the same command again
  {interrupted(signal.SIGINT)}  interrupted (Ctrl-C); {interrupted(signal.SIGTERM)}: SIGTERM (a sweep resumes with the same command)"""
