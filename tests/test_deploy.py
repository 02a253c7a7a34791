"""The two ways past one laptop, for real: a team MLflow server started by ``mlflow/start-server.sh``
and a two-node Ray cluster (``ray start --head`` + ``ray start --address``) on this machine.
Marked slow: about a minute each."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from sweep_helpers import (
    START_SERVER,
    children,
    epoch_steps,
    start_server,
    stop_server,
    tracking,
    trial_results,
    vaesweep,
    write_config,
)

from sweeps.mlflow_server import free_port
from sweeps.environment import FAIL_FAST_MLFLOW as CLIENT_ENV

pytestmark = pytest.mark.slow
RAY = Path(sys.executable).with_name("ray")


@pytest.fixture(scope="module")
def team_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """``mlflow/start-server.sh`` on a free loopback port with its default sqlite store: (URI, home)."""
    home = tmp_path_factory.mktemp("mlflow-home")
    server, uri = start_server(home)
    yield uri, home
    stop_server(server)


def non_loopback_address() -> str | None:
    """This machine's address on its network, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_server_listens_on_loopback_only(team_server):
    uri, _ = team_server
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to probe")
    port = int(uri.rsplit(":", 1)[1])
    with socket.socket() as sock, pytest.raises(OSError):
        sock.settimeout(3)
        sock.connect((address, port))


def test_basic_auth_refuses_anonymous_clients(tmp_path):
    pytest.importorskip("flask_wtf", reason="basic auth needs mlflow[auth] (the project's auth extra)")
    config = tmp_path / "basic_auth.ini"
    config.write_text((START_SERVER.parent / "basic_auth.ini.example").read_text())
    password = secrets.token_hex(8)
    server, uri = start_server(tmp_path, "--auth", env={
        "MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)})
    try:
        anonymous = subprocess.run([sys.executable, "-c", f"from mlflow.tracking import MlflowClient; "
                                    f"MlflowClient('{uri}').search_experiments()"],
                                   capture_output=True, text=True, env={**os.environ, **CLIENT_ENV}, timeout=120)
        assert anonymous.returncode != 0 and "401" in anonymous.stderr
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            env.setenv("MLFLOW_TRACKING_PASSWORD", password)
            assert MlflowClient(uri).create_experiment("authorised")
    finally:
        stop_server(server)


def test_a_sweep_logs_runs_metrics_and_artifacts_to_the_team_server(team_server, mnist_dir, tmp_path):
    uri, home = team_server
    config = write_config(tmp_path, "team", [0.0, 1.0])
    done = vaesweep("run", str(config), "--data-dir", str(mnist_dir), "--tracking-uri", uri)
    assert done.returncode == 0, done.stderr[-3000:]
    console = done.stdout + done.stderr  # a quiet console: progress, results, the problems that matter
    assert "View run" not in console and "Traceback" not in console, console[-3000:]
    assert not [line for line in console.splitlines() if "WARNING" in line or "Warning:" in line], console[-3000:]
    sweep_dir = tmp_path / "runs" / "team"
    assert tracking(sweep_dir)["tracking_uri"] == uri
    assert not (sweep_dir / "mlflow.db").exists(), "with --tracking-uri no embedded store is written"

    client = MlflowClient(uri)
    parent = client.get_run(tracking(sweep_dir)["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.params["grid.alpha"] == "[0.0, 1.0]"
    runs = children(sweep_dir)
    assert sorted(r.data.tags["alpha"] for r in runs) == ["0", "1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert epoch_steps(sweep_dir, run.info.run_id) == [1, 2]
        assert run.data.params["trial.k"] == "5" and -1000 < run.data.metrics["test_log_likelihood"] < 0
        assert {a.path for a in client.list_artifacts(run.info.run_id, "analysis")} >= {
            "analysis/analysis.json", "analysis/interpolations.png", "analysis/spectrum.csv"}
        local = client.download_artifacts(run.info.run_id, "checkpoint/checkpoint.pt", str(tmp_path / run.info.run_id))
        assert torch.load(local, weights_only=True)["epoch"] == 2
        # artifacts are proxied: they land in the server's own artifact store, not on the client's disk
        assert list((home / "artifacts").rglob(f"{run.info.run_id}/artifacts/checkpoint/checkpoint.pt"))

    report = vaesweep("report", "team", "--storage", str(tmp_path / "runs"))
    assert report.returncode == 0, report.stderr[-3000:]
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} >= {"report/report.html",
                                                                                     "report/summary.csv"}


class TwoNodeCluster:
    """A Ray head and a second Ray node on this machine, each with its own ports and one CPU.

    Both ``ray start --block`` commands run in their own sessions; SIGTERM to one stops every process
    of that node. Token authentication uses a fresh token file shared by the nodes and the driver.
    """

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True)
        self.root = root
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        token = root / "auth_token"
        token.write_text(secrets.token_hex(32))
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                    "RAY_USAGE_STATS_ENABLED": "0"}
        self.nodes: list[subprocess.Popen] = []

    def node_command(self, head: bool) -> list[str]:
        ports = [free_port() for _ in range(16)]
        own = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
               "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port"]
        command = [str(RAY), "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0",
                   "--object-store-memory", str(100 * 2**20), "--disable-usage-stats",
                   "--worker-port-list", ",".join(map(str, ports[len(own):]))]
        for flag, port in zip(own, ports):
            command += [flag, str(port)]
        if head:
            return command + ["--head", "--port", str(self.port), "--include-dashboard", "false",
                              "--temp-dir", str(self.root / "ray")]
        return command + ["--address", self.address]

    def start(self) -> None:
        for head in (True, False):
            with open(self.root / f"{'head' if head else 'worker'}.log", "wb") as log:
                self.nodes.append(subprocess.Popen(self.node_command(head), stdout=log, stderr=subprocess.STDOUT,
                                                   env=self.env, start_new_session=True))
            self.wait_for_nodes(len(self.nodes))

    def node_ids(self) -> set[str]:
        """Ids of the nodes the cluster reports alive (``ray status``)."""
        status = subprocess.run([str(RAY), "status", "--address", self.address], capture_output=True, text=True,
                                env=self.env, timeout=60)
        active = status.stdout.partition("Active:")[2].partition("Pending:")[0]
        return set(re.findall(r"node_([0-9a-f]+)", active))

    def wait_for_nodes(self, count: int, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.node_ids()) < count:
            assert all(node.poll() is None for node in self.nodes), f"a Ray node exited; see {self.root}/*.log"
            assert time.monotonic() < deadline, f"{count} Ray nodes did not come up; see {self.root}/*.log"
            time.sleep(2)

    def stop(self) -> list[int]:
        """Stop the second node, then the head; returns the process groups still alive after 60 s."""
        for node in reversed(self.nodes):
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
                node.wait(timeout=60)
        deadline = time.monotonic() + 60
        alive = [node.pid for node in self.nodes if group_alive(node.pid)]
        while alive and time.monotonic() < deadline:
            time.sleep(1)
            alive = [pid for pid in alive if group_alive(pid)]
        for pid in alive:
            os.killpg(pid, signal.SIGKILL)
        return alive


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def cluster() -> Iterator[TwoNodeCluster]:
    root = Path(tempfile.mkdtemp(prefix="vs-ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    two_nodes = None
    try:
        for attempt in range(3):  # ports are picked free, then bound by Ray later: a rare race, so retry
            two_nodes = TwoNodeCluster(root / str(attempt))
            try:
                two_nodes.start()
                break
            except AssertionError:
                two_nodes.stop()
                if attempt == 2:
                    raise
        yield two_nodes
    finally:
        if two_nodes is not None:
            two_nodes.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_sweep_runs_on_both_nodes_of_a_two_node_cluster(cluster, mnist_dir, tmp_path):
    nodes = cluster.node_ids()
    assert len(nodes) == 2
    # two 1-CPU trials on two 1-CPU nodes: Ray must place one on the second node. No --tracking-uri:
    # the driver is the only MLflow writer, so the sweep's embedded store serves the whole cluster.
    config = write_config(tmp_path, "cluster", [0.0, 1.0], train={"epochs": 2, "train_subset": 3000, "test_subset": 100})
    done = vaesweep("run", str(config), "--address", cluster.address, "--data-dir", str(mnist_dir), env=cluster.env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sweep cluster: 2 of 2 grid points finished, 0 failed" in done.stdout

    sweep_dir = tmp_path / "runs" / "cluster"
    placed = {trial: {r["ray_node_id"] for r in results} for trial, results in trial_results(sweep_dir).items()}
    assert len(placed) == 2 and all(len(ids) == 1 for ids in placed.values())
    assert set().union(*placed.values()) == nodes, "trials ran on both nodes, and only on the cluster's nodes"
    runs = children(sweep_dir)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["ray_node_id"] for r in runs} == nodes
    assert tracking(sweep_dir)["tracking_uri"].startswith("sqlite:")

    assert cluster.stop() == [], "every Ray process of both nodes exits on SIGTERM"
    with socket.socket() as sock, pytest.raises(OSError):
        sock.connect(("127.0.0.1", cluster.port))  # the head's GCS port is closed
