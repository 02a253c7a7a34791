"""The sweep's MLflow runs, from the driver: opened (or adopted) at the start, brought up to Ray's records
on a resume, and closed with the sweep's outcome."""

from __future__ import annotations

import json
import sys

from sweeps.config import SweepConfig
from sweeps.driver.outcome import SweepOutcome
from sweeps.driver.tracking_target import RemoteTracking, open_tracking
from sweeps.layout import ESTIMATE_FILE, EXPERIMENT_STATE, TUNE_DIR, experiment_path, write_tracking
from sweeps.mlflow_server import LocalMlflowServer
from sweeps.tracking import ESTIMATE_TAG
from sweeps.ray_files import ray_state_problem


def open_sweep_runs(server: LocalMlflowServer | RemoteTracking, config: SweepConfig) -> tuple[str, str] | None:
    """The sweep's (experiment id, parent run id), opened, recorded in ``tracking.json``, announced, and on
    a resume brought up to Ray's records; None (and the sweep runs untracked) when MLflow is down."""
    experiment_id = parent_run_id = None
    try:
        experiment_id, parent_run_id = open_tracking(server, config)
    except Exception as err:  # noqa: BLE001 - a tracking outage must not stop the sweep
        print(f"vaesweep: MLflow at {server.uri} unavailable ({str(err).splitlines()[0][:200]}); the sweep runs "
              f"untracked, its results stay in {config.sweep_dir() / TUNE_DIR}: run `vaesweep sync {config.name}` "
              "once the server is back", file=sys.stderr)
    store = write_tracking(config, experiment_id, parent_run_id)
    print(f"sweep {config.name}: {config.sweep_dir()}  MLflow {store} experiment {config.tracking.experiment!r} "
          f"parent run {parent_run_id}")
    if experiment_id is None or parent_run_id is None:
        return None
    tag_estimate(server, config, parent_run_id)
    fill_before_resume(server, config, experiment_id, parent_run_id)
    return experiment_id, parent_run_id


def tag_estimate(server: LocalMlflowServer | RemoteTracking, config: SweepConfig, parent_run_id: str) -> None:
    """The run's estimate (``estimate.json``) as the parent run's tag ``vaesweep.estimate``."""
    from mlflow.tracking import MlflowClient

    try:
        line = json.loads((config.sweep_dir() / ESTIMATE_FILE).read_text())["line"]
        MlflowClient(server.uri).set_tag(parent_run_id, ESTIMATE_TAG, line)
    except Exception:  # noqa: BLE001 - a missing record or a tracking outage only loses the tag
        return


def fill_before_resume(server: LocalMlflowServer | RemoteTracking, config: SweepConfig, experiment_id: str,
                       parent_run_id: str) -> None:
    """A resumed sweep's MLflow runs first get every epoch Ray recorded and they lack (a write lost to a
    full disk or a dead server: ``sweeps.driver.sync.fill_missing_epochs``), so no epoch record is lost."""
    from mlflow.tracking import MlflowClient

    from sweeps.driver.sync import fill_missing_epochs

    sweep_dir = config.sweep_dir()
    if ray_state_problem(sweep_dir) or not any(experiment_path(sweep_dir).glob(EXPERIMENT_STATE)):
        return  # a new sweep, or one whose Ray state fit() rebuilds (its trials then log as they replay)
    try:
        filled = fill_missing_epochs(MlflowClient(server.uri), experiment_id, parent_run_id, config)
    except Exception as err:  # noqa: BLE001 - the records stay in Ray's results for `vaesweep sync`
        print(f"vaesweep: could not bring MLflow up to Ray's records ({str(err).splitlines()[0][:200]}); "
              f"`vaesweep sync {config.name}` will", file=sys.stderr)
        return
    if filled:
        print(f"vaesweep: wrote {filled} epoch records that Ray kept and MLflow lacked", file=sys.stderr)


def close_tracking(server: LocalMlflowServer | RemoteTracking, config: SweepConfig, experiment_id: str,
                   parent_run_id: str, outcome: SweepOutcome) -> None:
    """Parent run -> the outcome's status; children still RUNNING (interrupted trials) -> KILLED."""
    from mlflow.tracking import MlflowClient

    from sweeps.driver.run_writer import close_sweep

    try:
        if isinstance(server, LocalMlflowServer) and not server.alive():  # died after the last write
            print(f"vaesweep: the sweep's MLflow server stopped (its log: {server.log}); starting it again to close "
                  "the sweep's runs", file=sys.stderr)
            server.restart()
        close_sweep(MlflowClient(server.uri), experiment_id, parent_run_id, outcome.parent_status, outcome.trial_states)
    except Exception as err:  # noqa: BLE001 - the results are in Ray's storage either way
        print(f"vaesweep: could not close the sweep's MLflow runs ({str(err).splitlines()[0][:200]}); "
              f"`vaesweep sync {config.name}` will", file=sys.stderr)
