"""The sweep's own MLflow server on 127.0.0.1: one process writes the embedded sqlite store.

Several trial processes writing one sqlite file race on its locks and migrations; routing every
write through one ``mlflow server`` is the same path a cluster takes with a shared server. The
store (``mlflow.db``) and artifacts (``mlartifacts/``) live in the sweep's folder, so the records
outlive the server: ``vaesweep ui NAME`` serves them again.

A server never outlives the vaesweep process that started it: ``mlflow server`` runs uvicorn (and
may run a job runner) as children of its own, so it is started in a process group of its own, which
``stop_server`` signals as a whole, and with ``PR_SET_PDEATHSIG``, so that it gets SIGTERM (which
it passes on to uvicorn) when its parent dies without stopping it, even by SIGKILL. Its own group
also keeps a terminal's Ctrl-C away from it: the vaesweep process gets it and stops the server last.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeVar

from sweeps.environment import fail_fast_mlflow_clients
from sweeps.layout import SERVER_LOG, STORE_FILE, artifacts_dir, backend_uri

STARTUP_TIMEOUT_S = 120


def store_problem(sweep_dir: Path) -> str | None:
    """Why the sweep's embedded store cannot be read (missing, damaged, emptied), None if it looks whole.
    Asked before a server is started on it: a server would take an emptied file for a new store."""
    path = sweep_dir / STORE_FILE
    if not path.is_file() or path.stat().st_size == 0:
        return f"its MLflow store {path} is missing or empty"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            check = db.execute("pragma quick_check").fetchone()[0]
            tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.Error as err:
        return f"its MLflow store {path} is damaged ({err})"
    if check != "ok" or "runs" not in tables:
        return f"its MLflow store {path} is damaged ({check if check != 'ok' else 'no runs table'})"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_problem(port: int) -> str | None:
    """Why a server could not listen on 127.0.0.1:``port``, None if it can. Asked before starting
    one: ``mlflow ui`` on a busy port reports it only in its log, after saying where it listens."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT does not count
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return f"port {port} is in use; pass --port N"
            return f"cannot listen on port {port} ({err.strerror}); pass --port N"
    return None


def die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the driver dies, even by SIGKILL (Linux only)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


def server_command(sweep_dir: Path, port: int, ui_only: bool = False) -> list[str]:
    """``mlflow server`` (or ``mlflow ui``) on the sweep's store, bound to loopback."""
    return [sys.executable, "-m", "mlflow", "ui" if ui_only else "server",
            "--backend-store-uri", backend_uri(sweep_dir),
            "--artifacts-destination", str(artifacts_dir(sweep_dir)),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


def start_server(command: list[str], output: IO[bytes] | None) -> subprocess.Popen:
    """Start ``command`` in a process group of its own that gets SIGTERM when we die (module docstring).

    MLflow 3's job runner (7 worker processes, each importing MLflow, for GenAI jobs this project never
    runs) is switched off: on 2 cores its start-up tripled a 2,400-run report (bench/report_scale.py)."""
    return subprocess.Popen(command, stdout=output, stderr=output, stdin=subprocess.DEVNULL,
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                            preexec_fn=die_with_parent, start_new_session=True)


def signal_group(process: subprocess.Popen, signum: int) -> bool:
    """Send ``signum`` to the process group ``process`` leads; False if nothing is left in it."""
    process.poll()  # reap the leader if it exited: a zombie would still count as a member
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        return False
    return True


def stop_server(process: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM to the server's whole process group; SIGKILL to whatever is left after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    signal_group(process, signal.SIGTERM)
    while signal_group(process, 0):
        if time.monotonic() > deadline:
            signal_group(process, signal.SIGKILL)
            break
        time.sleep(0.1)
    process.wait()


def wait_until_healthy(uri: str, process: subprocess.Popen, log: Path | str,
                       timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Block until the server at ``uri`` answers /health; RuntimeError if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the MLflow server exited at start (exit code {process.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the MLflow server did not answer within {timeout_s:.0f} s; see {log}")


def exit_on_signal(signum: int, _frame: object) -> None:
    """A signal handler that unwinds the stack, so ``finally`` blocks run, instead of dying on the spot."""
    raise SystemExit(128 + signum)


def serve_ui(sweep_dir: Path, port: int, announce: Callable[[str], None], say: Callable[[str], None]) -> int:
    """Serve the MLflow UI on the sweep's store until we are stopped (Ctrl-C, SIGTERM, or SIGHUP when the
    terminal closes), then stop it. ``announce`` gets the URL. A server that dies (killed, or at start)
    is started again once; a second death is a TrackingError."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, exit_on_signal)
    uri = f"http://127.0.0.1:{port}"
    for attempt in (1, 2):
        process = start_server(server_command(sweep_dir, port, ui_only=True), None)
        try:
            wait_until_healthy(uri, process, "its messages above")
            announce(uri)
            code = process.wait()
        except RuntimeError:
            code = process.returncode
        finally:
            stop_server(process)
        if attempt == 1:
            say(f"the MLflow UI server exited (code {code}); starting it again")
    raise TrackingError(f"the MLflow UI server exited twice (code {code}); see its messages above")


class TrackingError(Exception):
    """The tracking server is gone or broken: one line for the user, with where to look."""


def forget_artifact_locations() -> None:
    """Empty MLflow's process-wide cache of each run's artifact store: it holds the server's address
    (``mlflow-artifacts:`` resolves through it), so after a server is started again on a new port the
    cached entries would send uploads to the dead one."""
    from mlflow.tracking._tracking_service import utils

    utils._artifact_repos_cache.clear()


class LocalMlflowServer:
    """Context manager: starts the server on enter, ``wait()`` until it answers, stops it on exit.

    Starting returns at once so the caller can start Ray meanwhile (each takes several seconds).
    """

    def __init__(self, sweep_dir: Path) -> None:
        self.sweep_dir = sweep_dir
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "LocalMlflowServer":
        fail_fast_mlflow_clients()  # the server is our child: when it dies, every call to it must fail at once
        forget_artifact_locations()
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:  # the child keeps its own copy
            self.process = start_server(server_command(self.sweep_dir, self.port), log)
        return self

    def restart(self) -> str:
        """Start the server again after it died, on a new port; returns its URI once it answers."""
        self.stop()
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.__enter__()
        return self.wait()

    def wait(self) -> str:
        """Block until the server answers /health; returns its URI."""
        try:
            wait_until_healthy(self.uri, self.process, self.log)
        except RuntimeError:
            self.stop()
            raise
        return self.uri

    @property
    def log(self) -> Path:
        return self.sweep_dir / SERVER_LOG

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None:
            stop_server(self.process)

    def __exit__(self, *exc) -> None:
        self.stop()


T = TypeVar("T")


def with_restart(sweep_dir: Path, work: Callable[[LocalMlflowServer], T], say: Callable[[str], None]) -> T:
    """``work(server)`` with the sweep's own server; when the server dies under it (killed, or at start),
    a new one is started and ``work`` runs again, once: ``work`` must be safe to repeat (a report is
    built afresh, a sync adds only what is missing). A second death is a ``TrackingError`` naming the log."""
    for attempt in (1, 2):
        with LocalMlflowServer(sweep_dir) as server:
            try:
                return work(server)
            except Exception:
                if server.alive():
                    raise  # not the server's doing
        if attempt == 1:
            say(f"the sweep's MLflow server stopped (its log: {server.log}); starting it again")
    raise TrackingError(f"the sweep's MLflow server stopped twice; see its log {server.log}") from None
