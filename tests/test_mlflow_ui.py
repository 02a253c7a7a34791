"""What a user sees of MLflow: the UI's port, servers that never outlive their parent, the experiment's kind.

Real ``mlflow ui`` / ``mlflow server`` processes on loopback ports (each takes 5-30 s to start on a
busy 2-core machine) and a real sqlite store.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from sweep_helpers import alive, descendants
from sweeps.mlflow_server import free_port
from sweeps.driver.run_writer import EXPERIMENT_KIND, get_or_create_experiment

VAESWEEP = Path(sys.executable).with_name("vaesweep")
REPO = Path(__file__).resolve().parents[1]


def sweep_with_embedded_store(storage: Path, name: str = "s") -> Path:
    """A sweep folder as `vaesweep run` leaves it for `vaesweep ui` (the store is created on first use)."""
    sweep_dir = storage / name
    sweep_dir.mkdir(parents=True)
    record = {"tracking_uri": f"sqlite:///{sweep_dir / 'mlflow.db'}", "experiment": "vaesweep",
              "experiment_id": "1", "parent_run_id": None}
    (sweep_dir / "tracking.json").write_text(json.dumps(record))
    return sweep_dir


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start(command: list[str], out: Path) -> subprocess.Popen:
    """``command`` in a session of its own, its output to ``out`` (a pipe could be held open by a leftover server)."""
    with open(out, "w") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)


def wait_for_line(process: subprocess.Popen, out: Path, text: str, timeout_s: float = 180) -> str:
    """The first line of ``out`` holding ``text``; fails if ``process`` exits or the time runs out first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [line for line in out.read_text().splitlines() if text in line]
        if found:
            return found[0]
        assert process.poll() is None, f"exited with code {process.returncode}: {out.read_text()[-2000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no line with {text!r} within {timeout_s} s: {out.read_text()[-2000:]}")


def kill_leftovers(process: subprocess.Popen, pids: set[int]) -> None:
    """Whatever a failing test left running: ``process``'s group and the server processes seen below it."""
    for pid in alive(pids):
        os.kill(pid, signal.SIGKILL)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_until_gone(pids: set[int], port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while (alive(pids) or listening(port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pids), f"server processes outlived their parent: {alive(pids)}"
    assert not listening(port), f"something still listens on port {port}"


def test_ui_on_a_busy_port_exits_2_at_once_naming_the_port(tmp_path):
    sweep_dir = sweep_with_embedded_store(tmp_path / "runs")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ui = subprocess.Popen([str(VAESWEEP), "ui", "s", "--storage", str(tmp_path / "runs"), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = ui.communicate(timeout=15)  # the busy port is found before any server starts
        finally:
            kill_leftovers(ui, set())
    assert ui.returncode == 2, err
    assert err == f"vaesweep: error: port {port} is in use; pass --port N\n"
    assert "MLflow UI" not in out and not (sweep_dir / "mlflow.db").exists()


def test_sigterm_to_ui_stops_its_server(tmp_path):
    sweep_with_embedded_store(tmp_path / "runs")
    port, out = free_port(), tmp_path / "ui.out"
    ui = start([str(VAESWEEP), "ui", "s", "--storage", str(tmp_path / "runs"), "--port", str(port)], out)
    server: set[int] = set()
    try:
        announced = wait_for_line(ui, out, "MLflow UI for sweep s on")
        assert listening(port), "the URL is announced once the server answers"
        server = descendants(ui.pid)
        assert len(server) >= 2, "mlflow ui and its uvicorn"
        ui.send_signal(signal.SIGTERM)  # to vaesweep alone, as `kill PID` does: not to its process group
        code = ui.wait(timeout=30)
        wait_until_gone(server, port)
        assert code == 128 + signal.SIGTERM
        assert f"http://127.0.0.1:{port}/#/experiments/1 " in announced, "the link opens the sweep's experiment"
    finally:
        kill_leftovers(ui, server)


def test_a_sweep_server_dies_with_the_process_that_started_it(tmp_path):
    """`run` and `report` start a LocalMlflowServer: killing them (no cleanup runs) must not leave it behind."""
    out = tmp_path / "driver.out"
    driver = start([sys.executable, "-c",
                    "import sys, time; from pathlib import Path; from sweeps.mlflow_server import LocalMlflowServer\n"
                    "server = LocalMlflowServer(Path(sys.argv[1])).__enter__(); server.wait()\n"
                    "print('listening on', server.port, flush=True); time.sleep(600)", str(tmp_path / "sweep")], out)
    server: set[int] = set()
    try:
        port = int(wait_for_line(driver, out, "listening on").split()[-1])
        server = descendants(driver.pid)
        assert listening(port) and len(server) >= 2, "mlflow server and its uvicorn"
        driver.send_signal(signal.SIGTERM)  # the default action: the driver dies on the spot, no cleanup runs
        driver.wait(timeout=30)
        wait_until_gone(server, port)
    finally:
        kill_leftovers(driver, server)


def test_the_experiment_is_tagged_to_open_on_its_runs(tmp_path):
    """Created or adopted (even restored from deleted), the experiment carries the UI's model-development kind."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    key, kind = EXPERIMENT_KIND
    assert (key, kind) == ("mlflow.experimentKind", "custom_model_development")
    created = get_or_create_experiment(client, "fresh")
    assert client.get_experiment(created).tags[key] == kind
    older = client.create_experiment("older")  # as a sweep made before the tag existed left it
    client.delete_experiment(older)
    assert get_or_create_experiment(client, "older") == older
    adopted = client.get_experiment(older)
    assert adopted.lifecycle_stage == "active" and adopted.tags[key] == kind
