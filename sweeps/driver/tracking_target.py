"""Where a sweep's driver writes MLflow: the sweep's own server on its store, or one someone else runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sweeps.config import SweepConfig
from sweeps.environment import fail_fast_mlflow_clients
from sweeps.mlflow_server import LocalMlflowServer
from sweeps.driver.run_writer import ensure_parent_run, get_or_create_experiment


class RemoteTracking:
    """A tracking server someone else runs: nothing to start or wait for."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def wait(self) -> str:
        return self.uri


@contextlib.contextmanager
def tracking_server(config: SweepConfig) -> Iterator[LocalMlflowServer | RemoteTracking]:
    """Where the driver writes: the configured server, or a local one on the sweep's store (starting)."""
    if config.tracking.uri:
        yield RemoteTracking(config.tracking.uri)
        return
    with LocalMlflowServer(config.sweep_dir()) as server:
        yield server


def open_tracking(server: LocalMlflowServer | RemoteTracking, config: SweepConfig) -> tuple[str, str]:
    """(experiment id, parent run id) of the sweep, created if missing (raises if MLflow is down)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.wait())
    fail_fast_mlflow_clients()
    experiment_id = get_or_create_experiment(client, config.tracking.experiment)
    return experiment_id, ensure_parent_run(client, experiment_id, config.name, config.to_dict())
