"""What the end-to-end tests share: a tiny sweep config, the real CLI, and the sweep's MLflow runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from sweeps.mlflow_server import free_port, wait_until_healthy

VAESWEEP = Path(sys.executable).with_name("vaesweep")
# The smoke preset's 6 grid points (checkpoints of its sizes), on fewer images: seconds per epoch.
SMOKE_FAST = ["--set", "train.train_subset=2000", "--set", "train.test_subset=200", "--set", "eval.is_samples=20",
              "--set", "eval.probe_train_size=1000"]
START_SERVER = Path(__file__).resolve().parents[1] / "mlflow" / "start-server.sh"


def write_config(tmp_path: Path, name: str, alphas: list[float], epochs: int = 2, **extra) -> Path:
    """A sweep of k=5 models on MNIST subsets with small evaluation sample counts (seconds per trial)."""
    config = {
        "name": name,
        "grid": {"alpha": alphas, "k": [5], "seed": [0]},
        "train": {"epochs": epochs, "train_subset": 300, "test_subset": 100},
        "eval": {"is_samples": 20, "probe_epochs": [1], "probe_train_size": 300, "val_images": 100},
        "storage": str(tmp_path / "runs"),
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# A real run times its cost first (seconds): the tests of the estimate ask for it (``estimate=True``),
# every other test's run skips it, as a script that resumes sweeps may (``--no-estimate``).
NO_ESTIMATE = "--no-estimate"


def vaesweep(*args: str, env: dict[str, str] | None = None, timeout: int = 600,
             estimate: bool = False) -> subprocess.CompletedProcess:
    real_run = args[:1] == ("run",) and not {"--dry-run", "--max-hours"} & set(args)
    flags = [NO_ESTIMATE] if real_run and not estimate else []
    return subprocess.run([str(VAESWEEP), *args, *flags], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def tracking(sweep_dir: Path) -> dict:
    return json.loads((sweep_dir / "tracking.json").read_text())


def client_of(sweep_dir: Path) -> MlflowClient:
    """A client on the store the sweep logged to (its embedded sqlite file or a remote server)."""
    return MlflowClient(tracking(sweep_dir)["tracking_uri"])


def children(sweep_dir: Path) -> list:
    info = tracking(sweep_dir)
    return client_of(sweep_dir).search_runs([info["experiment_id"]], f"tags.`mlflow.parentRunId` = '{info['parent_run_id']}'")


def epoch_steps(sweep_dir: Path, run_id: str) -> list[int]:
    return sorted(m.step for m in client_of(sweep_dir).get_metric_history(run_id, "train_vr_bound_alpha"))


def trial_results(sweep_dir: Path) -> dict[str, list[dict]]:
    """Every trial's per-epoch results as Ray wrote them (result.json), by trial folder."""
    return {p.parent.name: [json.loads(line) for line in p.read_text().splitlines()]
            for p in (sweep_dir / "tune").glob("*/result.json")}


def start_sweep(config: Path, mnist_dir: Path, log: Path, *flags: str) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([str(VAESWEEP), "run", str(config), "--data-dir", str(mnist_dir), NO_ESTIMATE, *flags],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for_epochs(sweep_dir: Path, epochs: int, driver: subprocess.Popen, timeout_s: float = 300) -> dict:
    """The last result of the first trial to report ``epochs`` epochs (Ray's result.json)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert driver.poll() is None, "the sweep ended before the fault could be injected"
        for results in trial_results(sweep_dir).values():
            if len(results) >= epochs:
                return results[-1]
        time.sleep(0.2)
    raise AssertionError(f"no trial reached epoch {epochs} in {timeout_s} s")


def point_result(result: dict) -> dict:
    """The metrics of a one-point trial's result (under ``members``, by the point's label), with its epoch."""
    (metrics,) = result["members"].values()
    return {**metrics, "epoch": result["epoch"]}


def start_server(home: Path, *flags: str, env: dict[str, str] | None = None,
                 port: int | None = None) -> tuple[subprocess.Popen, str]:
    """``mlflow/start-server.sh`` on a loopback port (a free one by default), answering /health."""
    port = port or free_port()
    # without MLflow's job runner (seven worker processes for GenAI jobs no test runs), as the sweep's own server
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    home.mkdir(parents=True, exist_ok=True)
    log = home / "server.log"
    with open(log, "ab") as out:
        server = subprocess.Popen([str(START_SERVER), "--home", str(home), "--port", str(port), *flags,
                                   "--", "--workers", "1"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                  cwd=home, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(uri, server, log)
    except RuntimeError:
        stop_server(server)
        raise
    return server, uri


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


def descendants(pid: int) -> set[int]:
    """Live (not zombie) processes below ``pid``, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (a zombie does not)."""
    running = set()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                running.add(pid)
        except OSError:
            pass
    return running


def assert_every_run_finished_once(sweep_dir: Path, points: int, epochs: int) -> None:
    """``points`` child runs + the parent, all FINISHED, nothing else; each child holds each epoch once."""
    info = tracking(sweep_dir)
    everything = MlflowClient(info["tracking_uri"]).search_runs([info["experiment_id"]])
    assert len(everything) == points + 1 and {r.info.status for r in everything} == {"FINISHED"}, \
        [(r.data.tags.get("mlflow.runName"), r.info.status) for r in everything]
    for run in children(sweep_dir):
        steps = epoch_steps(sweep_dir, run.info.run_id)
        assert steps == list(range(1, epochs + 1)), (run.data.tags["mlflow.runName"], steps)


def server_below(pid: int, known: set[int]) -> int | None:
    """A new ``mlflow server`` process below ``pid`` (not in ``known``), None while there is none."""
    for child in descendants(pid) - known:
        with contextlib.suppress(OSError):
            if b"mlflow\0server" in Path(f"/proc/{child}/cmdline").read_bytes():
                return child
    return None
