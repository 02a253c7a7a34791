"""The sweep's own MLflow server on 127.0.0.1: one process writes the embedded sqlite store.

Several trial processes writing one sqlite file race on its locks and migrations; routing every
write through one ``mlflow server`` is the same path a cluster takes with a shared server. The
store (``mlflow.db``) and artifacts (``mlartifacts/``) live in the sweep's folder, so the records
outlive the server: ``vaesweep ui NAME`` serves them again.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

STARTUP_TIMEOUT_S = 120


def backend_uri(sweep_dir: Path) -> str:
    return f"sqlite:///{sweep_dir / 'mlflow.db'}"


def artifacts_dir(sweep_dir: Path) -> Path:
    return sweep_dir / "mlartifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def wait_until_healthy(uri: str, process: subprocess.Popen, log: Path, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Block until the server at ``uri`` answers /health; RuntimeError if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited at start; see {log}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer within {timeout_s:.0f} s; see {log}")


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
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.sweep_dir / "mlflow-server.log", "ab")
        self.process = subprocess.Popen(server_command(self.sweep_dir, self.port), stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        return self

    def wait(self) -> str:
        """Block until the server answers /health; returns its URI."""
        try:
            wait_until_healthy(self.uri, self.process, self.sweep_dir / "mlflow-server.log")
        except RuntimeError:
            self.stop()
            raise
        return self.uri

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def __exit__(self, *exc) -> None:
        self.stop()
