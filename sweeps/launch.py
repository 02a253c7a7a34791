"""``vaesweep run``: a Tuner over the grid (or Optuna + ASHA), tracked in MLflow, resumable by name.

Everything of a sweep lives in ``STORAGE/NAME/``: ``sweep.yaml`` (the validated config),
``tracking.json`` (experiment and parent run ids), ``tune/`` (Ray's experiment: trial results and
checkpoints) and, for the embedded store, ``mlflow.db`` + ``mlartifacts/``. Running the same name
again restores the Ray experiment (``Tuner.restore``): finished trials are kept, unfinished and
errored ones resume from their last checkpoint, and MLflow runs are adopted, not duplicated.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from sweeps.config import ConfigError, SweepConfig
from sweeps.layout import SWEEP_FILE, TUNE_DIR, experiment_path, saved_settings, write_tracking
from sweeps.mlflow_server import LocalMlflowServer
from sweeps.tracking import CLIENT_ENV, ensure_parent_run, get_or_create_experiment
from sweeps.trainable import OBJECTIVE

# MLflow credentials the trials need on every node (a remote cluster's workers do not inherit the
# driver's environment; Ray's runtime_env carries them).
CREDENTIAL_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def check_same_sweep(config: SweepConfig) -> None:
    """Refuse to resume a sweep under a changed config (Ray cannot change a restored search space)."""
    saved = saved_settings(config.sweep_dir())
    if saved is None:
        return
    current = config.to_dict()
    ignore = {"storage", "tracking"}
    if {k: v for k, v in saved.items() if k not in ignore} != {k: v for k, v in current.items() if k not in ignore}:
        changed = sorted(k for k in current if k not in ignore and saved.get(k) != current[k])
        raise ConfigError(f"sweep {config.name!r} already exists in {config.sweep_dir()} with different "
                          f"{', '.join(changed)}; choose another --name to start a new sweep")


class RemoteTracking:
    """A tracking server someone else runs: nothing to start or wait for."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def wait(self) -> str:
        return self.uri


@contextlib.contextmanager
def tracking_server(config: SweepConfig) -> Iterator[LocalMlflowServer | RemoteTracking]:
    """Where trials write: the configured server, or a local one on the sweep's store (starting)."""
    if config.tracking.uri:
        yield RemoteTracking(config.tracking.uri)
        return
    with LocalMlflowServer(config.sweep_dir()) as server:
        yield server


def open_tracking(server: LocalMlflowServer | RemoteTracking, config: SweepConfig) -> tuple[str, str]:
    """(experiment id, parent run id) of the sweep, created if missing (raises if MLflow is down)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.wait())
    os.environ.update({k: v for k, v in CLIENT_ENV.items() if k not in os.environ})
    experiment_id = get_or_create_experiment(client, config.tracking.experiment)
    return experiment_id, ensure_parent_run(client, experiment_id, config.name, config.to_dict())


def param_space(config: SweepConfig) -> dict[str, Any]:
    from ray import tune

    if config.search == "grid":
        return {name: tune.grid_search(list(getattr(config.grid, name))) for name in ("alpha", "k", "seed")}
    low, high = config.optuna.alpha_range
    return {"alpha": tune.uniform(low, high), "k": tune.choice(config.grid.k), "seed": config.grid.seed[0]}


def tune_config(config: SweepConfig):
    from ray import tune

    if config.search == "grid":
        return tune.TuneConfig()
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    searcher = ConcurrencyLimiter(OptunaSearch(metric=OBJECTIVE, mode="max", seed=config.grid.seed[0]),
                                  max_concurrent=config.optuna.max_concurrent)
    scheduler = ASHAScheduler(metric="val_vr_bound_0", mode="max", max_t=config.train.epochs,
                              grace_period=config.optuna.grace_period, reduction_factor=config.optuna.reduction_factor)
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=config.optuna.num_samples)


def init_ray(address: str | None, env: dict[str, str]) -> None:
    import ray

    runtime_env = {"env_vars": env}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, runtime_env=runtime_env)


def run_sweep(config: SweepConfig, address: str | None = None, data_dir: Path | None = None) -> Any:
    """Run or resume the sweep; returns Ray's ResultGrid."""
    import ray
    from mlflow.tracking import MlflowClient
    from ray import tune

    from sweeps.trainable import TrialContext, train_trial
    from vae.data import load_arrays

    check_same_sweep(config)
    if address and not config.tracking.uri:
        print("vaesweep: note: the sweep's own MLflow server listens on 127.0.0.1; trials on other machines "
              "of the cluster cannot reach it: pass --tracking-uri of a shared server (mlflow/README.md)",
              file=sys.stderr)
    sweep_dir = config.sweep_dir()
    config_dict = config.to_dict()
    data = load_arrays(data_dir)  # verified once here; trials get it from the object store
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / SWEEP_FILE).write_text(yaml.safe_dump(config_dict, sort_keys=False))
    with tracking_server(config) as server:
        credentials = {k: os.environ[k] for k in CREDENTIAL_ENV if k in os.environ}
        init_ray(address, {"MLFLOW_TRACKING_URI": server.uri, **CLIENT_ENV, **credentials})  # while the server starts
        try:
            try:
                experiment_id, parent_run_id = open_tracking(server, config)
            except Exception as err:  # noqa: BLE001 - a tracking outage must not stop the sweep
                print(f"vaesweep: MLflow at {server.uri} unavailable ({str(err).splitlines()[0][:200]}); the sweep "
                      f"runs untracked, its results stay in {sweep_dir / TUNE_DIR}: run `vaesweep sync {config.name}` "
                      "once the server is back", file=sys.stderr)
                experiment_id = parent_run_id = None
            store = write_tracking(config, experiment_id, parent_run_id)
            print(f"sweep {config.name}: {sweep_dir}  MLflow {store} experiment {config.tracking.experiment!r} "
                  f"parent run {parent_run_id}")
            context = TrialContext(config, server.uri, experiment_id, parent_run_id)
            resources = {"cpu": config.resources.cpus, "gpu": config.resources.gpu}
            trainable = tune.with_resources(tune.with_parameters(train_trial, context=context, data=data), resources)
            path = experiment_path(sweep_dir)
            if tune.Tuner.can_restore(str(path)):
                print(f"resuming sweep {config.name} from {path}")
                tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
            else:
                run_config = tune.RunConfig(
                    name=TUNE_DIR, storage_path=str(sweep_dir),
                    failure_config=tune.FailureConfig(max_failures=config.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2), verbose=1)
                tuner = tune.Tuner(trainable, param_space=param_space(config), tune_config=tune_config(config),
                                   run_config=run_config)
            results = tuner.fit()
        finally:
            ray.shutdown()
        if parent_run_id is not None:
            try:
                MlflowClient(server.uri).set_terminated(parent_run_id, "FINISHED" if results.num_errors == 0 else "FAILED")
            except Exception as err:  # noqa: BLE001 - the results are in Ray's storage either way
                print(f"vaesweep: could not close the MLflow parent run ({str(err).splitlines()[0][:200]}); "
                      f"`vaesweep sync {config.name}` will", file=sys.stderr)
    return results
