"""``vaesweep run``: a Tuner over the grid (or Optuna + ASHA), tracked in MLflow, resumable by name.

Everything of a sweep lives in ``STORAGE/NAME/``: ``sweep.yaml`` (the validated config),
``tracking.json`` (experiment and parent run ids), ``runs.json`` (trial -> MLflow run), ``tune/``
(Ray's experiment: trial results and checkpoints) and, for the embedded store, ``mlflow.db`` +
``mlartifacts/``. Running the same name again restores the Ray experiment (``Tuner.restore``):
finished trials are kept, unfinished and errored ones resume from their last checkpoint, and MLflow
runs are adopted, not duplicated. One driver at a time holds the sweep (sweeps/driver/lock.py).

End states: SIGINT or SIGTERM asks Tune to stop (it saves the experiment state); unfinished runs
and the parent end KILLED, and the outcome says so. A second signal stops at once. Disk space is
checked before the start and watched during the run (sweeps/driver/disk.py): a sweep about to fill its
disk stops the same way, KILLED, resumable. Ray state that cannot be read is rebuilt from the
sweep's own files (sweeps/driver/recovery.py).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.metrics import GRID, SELECTION_METRIC
from sweeps.config import ConfigError, SweepConfig
from sweeps.driver.disk import DiskFull, DiskFullLogFilter, DiskGuard, describe, free_bytes, is_disk_full, space_problem
from sweeps.layout import (CHECKPOINTS_KEPT, EXPERIMENT_STATE, TUNE_DIR, experiment_path, saved_config,
                           saved_settings, write_settings, write_tracking)
from sweeps.driver.lock import sweep_lock
from sweeps.driver.outcome import SweepOutcome, outcome_of
from sweeps.driver.tracking_target import RemoteTracking, open_tracking, tracking_server
from sweeps.mlflow_server import LocalMlflowServer
from sweeps.packs import PACK_KEY
from sweeps.driver.progress import VERBOSE_ENV, SweepProgress, TrialErrorLogFilter
from sweeps.ray_files import ray_state_problem
from sweeps.driver.data_record import check_same_data, record_data
from sweeps.driver.recovery import prune_superseded, rebuild, recovered_checkpoints

if TYPE_CHECKING:
    from vae.data import DataSet


def check_same_sweep(config: SweepConfig) -> None:
    """Refuse to resume a sweep under a changed config (Ray cannot change a restored search space)."""
    if saved_settings(config.sweep_dir()) is None:
        return
    saved = saved_config(config.sweep_dir()).to_dict()  # validated: settings added since then take their defaults
    current = config.to_dict()
    ignore = {"storage", "tracking"}
    if {k: v for k, v in saved.items() if k not in ignore} != {k: v for k, v in current.items() if k not in ignore}:
        changed = sorted(k for k in current if k not in ignore and saved.get(k) != current[k])
        raise ConfigError(f"sweep {config.name!r} already exists in {config.sweep_dir()} with different "
                          f"{', '.join(changed)}; choose another --name to start a new sweep")


def resolve_resources(config: SweepConfig, address: str | None) -> SweepConfig:
    """``auto`` resources made concrete: as the sweep was started (its ``sweep.yaml``: a resume packs as
    the start did, whatever machine it runs on), else for the GPUs the driver sees."""
    if "auto" not in (config.resources.gpu, config.resources.pack):
        return config
    if saved_settings(config.sweep_dir()) is not None:
        started = saved_config(config.sweep_dir()).resources
        update = {name: getattr(started, name) for name in ("gpu", "pack") if getattr(config.resources, name) == "auto"}
        config = config.model_copy(update={"resources": config.resources.model_copy(update=update)})
    # GPUs the trials can get now: an autoscaled cluster may have none yet (set resources.gpu there, as k8s/ does)
    return config.resolved(int(sum(node.get("GPU", 0.0) for node in node_resources(address))))


def device_line(config: SweepConfig, resolved: SweepConfig, address: str | None) -> str:
    """What torch sees on this machine and what the sweep will do with it, in one line: packs on GPUs, or a
    trial per grid point on CPU (and why, when ``auto`` decided it)."""
    from vae.devices import device_summary, probe_devices

    res = resolved.resources
    trials = len(resolved.packs())
    if res.gpu:
        plan = (f"{trials} trial{'s' * (trials > 1)} of up to {res.pack} grid points, {res.gpu:g} GPU each, steps "
                f"{'as CUDA graphs' if resolved.train.cuda_graphs == 'auto' else 'eager (train.cuda_graphs: off)'}")
    else:
        size = f"packs of up to {res.pack} grid points" if res.pack > 1 else "a trial per grid point"
        plan = f"{trials} trial{'s' * (trials > 1)}: {size} on CPU, {res.cpus:g} CPU each"
    if config.resources.gpu == "auto":
        plan += f" (resources.gpu auto: {'a GPU' if res.gpu else 'no GPU'} {'in the cluster' if address else 'here'})"
    where = "this machine (the driver)" if address else "device"
    return f"vaesweep: {where}: {device_summary(probe_devices())}; sweep: {plan}"


def node_resources(address: str | None) -> list[dict[str, float]]:
    """CPUs and GPUs of each node a trial could run on: this machine, or the cluster's live nodes."""
    if address is None:
        import torch

        return [{"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}]
    import ray

    init_ray(address, verbose=False)
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def check_resources(config: SweepConfig, address: str | None, autoscaling: bool) -> None:
    """Refuse a trial's request that no node can satisfy: Ray would keep such trials pending forever,
    silently. An autoscaled cluster (``--autoscaling``) may add the node later, so it is let through."""
    want = {"CPU": config.resources.cpus, "GPU": config.resources.gpu}
    nodes = node_resources(address)
    if any(all(node.get(kind, 0.0) >= amount for kind, amount in want.items()) for node in nodes) or (
            address and autoscaling):
        return
    where = "the cluster's nodes have" if address else "this machine has"
    have = "; ".join(f"{node.get('CPU', 0.0):g} CPUs and {node.get('GPU', 0.0):g} GPUs" for node in nodes) or "none"
    hint = ", or pass --autoscaling if the cluster adds nodes on demand" if address else ""
    raise ConfigError(f"resources: a trial asks for {want['CPU']:g} CPUs and {want['GPU']:g} GPUs, but no node can "
                      f"give that ({where} {have}): lower resources.cpus or resources.gpu (gpu auto fits the "
                      f"machine){hint}")


def param_space(config: SweepConfig) -> dict[str, Any]:
    from ray import tune

    if config.search == "grid" and config.packed:  # a trial per pack (sweeps/packs.py)
        return {PACK_KEY: tune.grid_search(list(range(len(config.packs()))))}
    if config.search == "grid":
        return {name: tune.grid_search(list(getattr(config.grid, name))) for name in GRID}
    low, high = config.optuna.alpha_range
    return {"alpha": tune.uniform(low, high), "k": tune.choice(config.grid.k), "seed": config.grid.seed[0]}


def tune_config(config: SweepConfig):
    from ray import tune

    if config.search == "grid":
        return tune.TuneConfig()
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    searcher = ConcurrencyLimiter(OptunaSearch(metric=SELECTION_METRIC, mode="max", seed=config.grid.seed[0]),
                                  max_concurrent=config.optuna.max_concurrent)
    scheduler = ASHAScheduler(metric=SELECTION_METRIC, mode="max", max_t=config.train.epochs,
                              grace_period=config.optuna.grace_period, reduction_factor=config.optuna.reduction_factor)
    return tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=config.optuna.num_samples)


class GoneCheckpointLogFilter(logging.Filter):
    """Ray's traceback when it cannot delete a checkpoint it remembers but that is gone, replaced by one
    line of ours. After a driver is SIGKILLed, Ray's saved state may still list a checkpoint that Ray had
    already deleted (keeping 2 per trial); on resume, registering the next one deletes it again and the
    missing path raises. Nothing is lost: Ray updates its bookkeeping before it deletes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not (isinstance(error, FileNotFoundError) and "Error handling checkpoint" in record.getMessage()):
            return True
        gone = re.search(r", (.+/checkpoint_\d+)\)", str(error))  # pyarrow's text: "Path not found: (<fs>, PATH)"
        print(f"vaesweep: note: Ray tried to delete a checkpoint it had already deleted before the last driver "
              f"stopped ({gone.group(1) if gone else error}); nothing is lost", file=sys.stderr)
        return False


def filter_ray_logs(*kinds: type[logging.Filter]) -> None:
    """Install these filters on the handlers of Ray's logger (after ``ray.init`` made them), once each."""
    for handler in logging.getLogger("ray").handlers:
        for kind in kinds:
            if not any(isinstance(f, kind) for f in handler.filters):
                handler.addFilter(kind())


def init_ray(address: str | None, verbose: bool) -> None:
    import ray

    if ray.is_initialized():  # connected early to read the cluster's nodes (node_resources)
        return
    level = logging.INFO if verbose else logging.WARNING  # "Started a local Ray instance", "Connected to..."
    if address:
        ray.init(address=address, log_to_driver=True, logging_level=level)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=level)


class Interruption:
    """SIGINT / SIGTERM to the driver: the first asks Tune to stop gracefully (it saves the experiment
    state, stops the trials and returns), a second raises KeyboardInterrupt at once.

    Tune's own SIGINT handler is switched off (``TUNE_DISABLE_SIGINT_HANDLER``) so that both signals
    take the same path: Tune's stop handler, which it always installs on SIGUSR1 while it runs.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"

    def install(self) -> None:
        """(Re)install the handlers: ``ray.init`` installs a SIGTERM handler of its own."""
        for sig in self.previous:
            signal.signal(sig, self.handle)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            print(f"vaesweep: {signal.Signals(signum).name} again: stopping at once (the sweep resumes from the "
                  "state Ray saved last)", file=sys.stderr)
            raise KeyboardInterrupt
        self.signum = signum
        print(f"vaesweep: {signal.Signals(signum).name} received: stopping the sweep and saving its state "
              "(press Ctrl-C again to stop at once)", file=sys.stderr)
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if not callable(tune_stop):  # Tune is not running yet (or any more): nothing to save
            raise KeyboardInterrupt
        tune_stop(signum, frame)


def fit(config: SweepConfig, data: DataSet, server: LocalMlflowServer | RemoteTracking) -> None:
    """Run or restore the Tuner of the sweep until it ends or is interrupted (rebuilt first when Ray's
    state of it cannot be read)."""
    from ray import tune

    from sweeps.driver import mlflow_callback
    from sweeps.trial.trainable import train_trial

    # the callback starts the sweep's own server again if it dies (Tune may unpickle the callback)
    mlflow_callback.DRIVER_SERVER = server if isinstance(server, LocalMlflowServer) else None

    sweep_dir = config.sweep_dir()
    path = experiment_path(sweep_dir)
    if problem := ray_state_problem(sweep_dir):
        print(f"vaesweep: {rebuild(sweep_dir, config, problem)}", file=sys.stderr)
    resources = {"cpu": config.resources.cpus, "gpu": config.resources.gpu}
    trainable = tune.with_resources(tune.with_parameters(train_trial, sweep=config, data=data,
                                                         recovered=recovered_checkpoints(sweep_dir)), resources)
    if tune.Tuner.can_restore(str(path)):
        print(f"resuming sweep {config.name} from {path}")
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(trainable, param_space=param_space(config), tune_config=tune_config(config),
                           run_config=sweep_run_config(config, data.pixels))
    tuner.fit()


def sweep_run_config(config: SweepConfig, pixels: int):
    """Tune's run config of a new sweep: where it lives, the driver's callbacks, retries, checkpoints kept."""
    from ray import tune

    from sweeps.driver.loggers import result_loggers
    from sweeps.driver.mlflow_callback import MlflowTrialCallback
    from sweeps.driver.retries import NoRetryOfFatal

    return tune.RunConfig(
        name=TUNE_DIR, storage_path=str(config.sweep_dir()),
        callbacks=[NoRetryOfFatal(), MlflowTrialCallback(config), SweepProgress(config), DiskGuard(config, pixels),
                   *result_loggers()],
        failure_config=tune.FailureConfig(max_failures=config.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT), verbose=0)


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

    from sweeps.tracking import close_sweep

    try:
        if isinstance(server, LocalMlflowServer) and not server.alive():  # died after the last write
            print(f"vaesweep: the sweep's MLflow server stopped (its log: {server.log}); starting it again to close "
                  "the sweep's runs", file=sys.stderr)
            server.restart()
        close_sweep(MlflowClient(server.uri), experiment_id, parent_run_id, outcome.parent_status, outcome.trial_states)
    except Exception as err:  # noqa: BLE001 - the results are in Ray's storage either way
        print(f"vaesweep: could not close the sweep's MLflow runs ({str(err).splitlines()[0][:200]}); "
              f"`vaesweep sync {config.name}` will", file=sys.stderr)


def quiet_console(verbose: bool) -> None:
    """Keep the driver's console to our progress lines and the problems that matter: no MLflow
    "View run" links to a server gone a minute later, no notes about Ray's routine work."""
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "1"
    os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    if verbose:
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy reporter is silent at verbose=0
    # the snapshot Tune forces after every num_to_keep checkpoints is by design here, not a bottleneck
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    logging.getLogger("ray.tune").setLevel(logging.WARNING)  # "Wrote the latest version of all result files"
    # "Failed to fetch metrics" of trials stopped before their first result (the fit's result grid reads them)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # "Token authentication is enabled for this Ray cluster": on by default for a local cluster
    logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)


def preflight(config: SweepConfig, address: str | None, data_dir: Path | None, force: bool,
              autoscaling: bool, check_nodes: bool = True) -> tuple[SweepConfig, DataSet]:
    """Every check a run makes before it writes anything or starts Ray (the dry run makes them too):
    resources against this machine or the cluster (the device line printed), a sweep of that name with
    another config or data, the data read and checked against the config, the disk space (unless
    ``force``). Returns the config with its resources resolved and the data; ConfigError or DataError
    says what is refused. ``check_nodes`` False: the nodes are not asked (a dry run of a cluster sweep)."""
    from vae.data_sets import load_data

    resolved = resolve_resources(config, address)
    if check_nodes:
        check_resources(resolved, address, autoscaling)
    print(device_line(config, resolved, address))
    check_same_sweep(resolved)  # before the lock: a refused config leaves no file behind
    data = load_data(resolved.data, data_dir)  # verified once, before anything is written; trials get it from the object store
    if problem := resolved.data_problem(len(data.train_images), len(data.test_images)):
        raise ConfigError(problem)
    check_same_data(resolved.sweep_dir(), data)
    if not force and (problem := space_problem(resolved, data.pixels)):
        raise ConfigError(problem)
    return resolved, data


def run_sweep(config: SweepConfig, address: str | None = None, data_dir: Path | None = None,
              verbose: bool = False, force: bool = False, autoscaling: bool = False) -> SweepOutcome:
    """Run or resume the sweep, holding its folder; returns how it ended. Refused (ConfigError) when
    the disk cannot hold what it will write, unless ``force``."""
    import ray

    quiet_console(verbose)

    if address and not config.tracking.uri:
        print("vaesweep: note: the sweep's MLflow server listens on 127.0.0.1 of this machine; only this driver "
              "writes to it, but to browse the runs from elsewhere pass --tracking-uri of a shared server "
              "(mlflow/README.md)", file=sys.stderr)
    config, data = preflight(config, address, data_dir, force, autoscaling)
    sweep_dir = config.sweep_dir()
    pixels = data.pixels
    interruption = Interruption()
    with sweep_lock(sweep_dir, config.name, "run"):
        check_same_sweep(config)  # again: another driver may have started the sweep meanwhile
        check_same_data(sweep_dir, data)
        write_settings(config)
        record_data(sweep_dir, data)
        interruption.install()
        try:
            with tracking_server(config) as server:
                os.environ["MLFLOW_TRACKING_URI"] = server.uri  # the driver's callback writes here
                experiment_id = parent_run_id = None
                try:
                    init_ray(address, verbose)  # while the server starts
                    filter_ray_logs(DiskFullLogFilter, GoneCheckpointLogFilter, *(() if verbose else (TrialErrorLogFilter,)))
                    interruption.install()
                    try:
                        experiment_id, parent_run_id = open_tracking(server, config)
                    except Exception as err:  # noqa: BLE001 - a tracking outage must not stop the sweep
                        print(f"vaesweep: MLflow at {server.uri} unavailable ({str(err).splitlines()[0][:200]}); "
                              f"the sweep runs untracked, its results stay in {sweep_dir / TUNE_DIR}: run "
                              f"`vaesweep sync {config.name}` once the server is back", file=sys.stderr)
                    store = write_tracking(config, experiment_id, parent_run_id)
                    print(f"sweep {config.name}: {sweep_dir}  MLflow {store} experiment "
                          f"{config.tracking.experiment!r} parent run {parent_run_id}")
                    if parent_run_id is not None:
                        fill_before_resume(server, config, experiment_id, parent_run_id)
                    fit(config, data, server)
                except KeyboardInterrupt:
                    interruption.signum = interruption.signum or signal.SIGINT
                except Exception as err:
                    # after a full disk, Tune's own ending may trip over what it could not write (a cut-off
                    # error pickle): that is the full disk too, said in one line, not a new failure
                    reserve = DiskGuard(config, pixels).reserve(0)
                    if not (DiskFull.path or is_disk_full(err) or free_bytes(sweep_dir) < reserve):
                        raise
                    DiskFull.path = DiskFull.path or sweep_dir
                    DiskFull.free = free_bytes(sweep_dir)
                finally:
                    ray.shutdown()
                full = describe(DiskFull.path, DiskFull.free) if DiskFull.path else None
                outcome = outcome_of(config, interruption.signum, full)
                if outcome.exit_code == 0 and (pruned := prune_superseded(sweep_dir)):
                    print(f"vaesweep: {pruned}", file=sys.stderr)
                if parent_run_id is not None:
                    close_tracking(server, config, experiment_id, parent_run_id, outcome)
        finally:
            interruption.restore()
    return outcome
