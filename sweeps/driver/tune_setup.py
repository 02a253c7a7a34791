"""Ray Tune's side of a sweep: its search space, search algorithm and scheduler, run config and
callbacks, and the Tuner, new or restored."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from analysis.metrics import GRID, SELECTION_METRIC
from sweeps.config import SweepConfig
from sweeps.driver.recovery import rebuild, recovered_checkpoints
from sweeps.layout import CHECKPOINTS_KEPT, TUNE_DIR, experiment_path
from sweeps.packs import PACK_KEY
from sweeps.ray_files import failed_for_good, ray_state_problem

if TYPE_CHECKING:
    from vae.data import DataSet


def param_space(config: SweepConfig) -> dict[str, Any]:
    from ray import tune

    if config.search == "grid" and config.packed:  # a trial per pack (sweeps/packs.py)
        return {PACK_KEY: tune.grid_search(list(range(len(config.packs()))))}
    if config.search == "grid":
        return {name: tune.grid_search(list(getattr(config.grid, name))) for name in GRID}
    low, high = config.optuna.alpha_range
    return {"alpha": tune.uniform(low, high), "k": tune.choice(config.grid.k), "seed": config.grid.seed[0]}


def tune_config(config: SweepConfig):
    """Grid or Optuna search. A trial's worker is reused by the next trial (``reuse_actors``: every trial
    asks the same resources), which then skips a process start and its imports (about 6 s on 2 cores)."""
    from ray import tune

    if config.search == "grid":
        return tune.TuneConfig(reuse_actors=True)
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    searcher = ConcurrencyLimiter(OptunaSearch(metric=SELECTION_METRIC, mode="max", seed=config.grid.seed[0]),
                                  max_concurrent=config.optuna.max_concurrent)
    scheduler = ASHAScheduler(metric=SELECTION_METRIC, mode="max", max_t=config.train.epochs,
                              grace_period=config.optuna.grace_period, reduction_factor=config.optuna.reduction_factor)
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=config.optuna.num_samples,
                           reuse_actors=True)


def sweep_run_config(config: SweepConfig, pixels: int):
    """Tune's run config of a new sweep: where it lives, the driver's callbacks, retries, checkpoints kept."""
    from ray import tune

    from sweeps.driver.disk_guard import DiskGuard
    from sweeps.driver.loggers import result_loggers
    from sweeps.driver.mlflow_callback import MlflowTrialCallback
    from sweeps.driver.progress import SweepProgress
    from sweeps.driver.retries import NoRetryOfFatal

    return tune.RunConfig(
        name=TUNE_DIR, storage_path=str(config.sweep_dir()),
        callbacks=[NoRetryOfFatal(), MlflowTrialCallback(config), SweepProgress(config), DiskGuard(config, pixels),
                   *result_loggers()],
        failure_config=tune.FailureConfig(max_failures=config.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT), verbose=0)


def fit(config: SweepConfig, data: DataSet, retry_failed: bool = False) -> None:
    """Run or restore the Tuner of the sweep until it ends or is interrupted (rebuilt first when Ray's
    state of it cannot be read). Grid points that failed for good stay failed unless ``retry_failed``."""
    from ray import tune

    from sweeps.trial.trainable import train_trial

    sweep_dir = config.sweep_dir()
    path = experiment_path(sweep_dir)
    if problem := ray_state_problem(sweep_dir):
        print(f"vaesweep: {rebuild(sweep_dir, config, problem)}", file=sys.stderr)
    resources = {"cpu": config.resources.cpus, "gpu": config.resources.gpu}
    failed_before = {} if retry_failed else failed_for_good(path)
    trainable = tune.with_resources(tune.with_parameters(train_trial, sweep=config, data=data,
                                                         recovered=recovered_checkpoints(sweep_dir),
                                                         failed_before=failed_before), resources)
    if tune.Tuner.can_restore(str(path)):
        print(f"resuming sweep {config.name} from {path}")
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=param_space(config), tune_config=tune_config(config),
                           run_config=sweep_run_config(config, data.pixels))
    tuner.fit()
