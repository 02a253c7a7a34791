"""One driver per sweep: ``vaesweep run`` and ``vaesweep sync`` hold an exclusive lock on the sweep
folder for their whole life (``filelock``: an OS lock, released when the process dies however it
dies, so a killed driver never blocks the resume). Who holds it is written beside the lock, so a
second driver can say whom it is waiting for.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from sweeps.config import ConfigError
from sweeps.layout import HOLDER_FILE, LOCK_FILE
from vae.atomic import write_atomic


def holder(sweep_dir: Path) -> str:
    """'pid P on host H since T' of the process holding the sweep, as far as it wrote it down."""
    try:
        record = json.loads((sweep_dir / HOLDER_FILE).read_text())
        return f"pid {record['pid']} on host {record['host']} since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


def busy(sweep_dir: Path, name: str, action: str) -> ConfigError:
    return ConfigError(f"sweep {name} is already running ({holder(sweep_dir)}); wait for it to end or stop it "
                       f"(Ctrl-C in its terminal) before `vaesweep {action} {name}`")


def check_free(sweep_dir: Path, name: str, action: str) -> None:
    """ConfigError at once if another process holds the sweep: before a run's slower checks (it creates
    nothing; the run takes the lock itself later)."""
    if not (sweep_dir / LOCK_FILE).exists():
        return
    lock = FileLock(sweep_dir / LOCK_FILE)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise busy(sweep_dir, name, action) from None
    lock.release()


@contextlib.contextmanager
def sweep_lock(sweep_dir: Path, name: str, action: str) -> Iterator[None]:
    """Hold ``sweep_dir`` for ``action`` ('run', 'sync'); ConfigError at once if another process has it."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(sweep_dir / LOCK_FILE)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise busy(sweep_dir, name, action) from None
    try:
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        write_atomic(sweep_dir / HOLDER_FILE,
                     json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}).encode())
        yield
    finally:
        (sweep_dir / HOLDER_FILE).unlink(missing_ok=True)
        lock.release()
