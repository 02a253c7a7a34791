"""What a running driver shares with its Tune callbacks: where MLflow is (and the sweep's own server,
to start again if it dies), whether to be verbose, and the disk guard's verdict.

Tune pickles the callbacks with the experiment and unpickles them on ``Tuner.restore``, so they cannot
be handed these when they are made; they read ``current()``, which ``run_sweep`` sets with
``running(...)`` around the fit (Tune calls the callbacks in that thread). Outside a driver run
(a benchmark's Tuner, a test) ``current()`` is a quiet default with no server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from sweeps.driver.disk import DiskVerdict
from sweeps.driver.tracking_target import RemoteTracking
from sweeps.mlflow_server import LocalMlflowServer


@dataclass
class DriverContext:
    tracking: LocalMlflowServer | RemoteTracking | None  # where the callbacks write; None: MLflow's default
    verbose: bool = False
    disk: DiskVerdict = field(default_factory=DiskVerdict)

    @property
    def tracking_uri(self) -> str | None:
        """The server's address now (the sweep's own server moves to a new port when started again)."""
        return self.tracking.uri if self.tracking is not None else None

    @property
    def own_server(self) -> LocalMlflowServer | None:
        """The sweep's own server, which the driver started and may start again; None for a remote one."""
        return self.tracking if isinstance(self.tracking, LocalMlflowServer) else None


_CURRENT: ContextVar[DriverContext | None] = ContextVar("vaesweep_driver_context", default=None)


def current() -> DriverContext:
    return _CURRENT.get() or DriverContext(None)


@contextlib.contextmanager
def running(context: DriverContext) -> Iterator[DriverContext]:
    """``current()`` is ``context`` inside."""
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)
