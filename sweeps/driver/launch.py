"""``vaesweep run``: a sweep started, resumed or grown by name, in the steps a reader expects: preflight, the
sweep folder claimed, services started (the MLflow server, Ray), the fit, and the close.

Everything of a sweep lives in ``STORAGE/NAME/`` (sweeps/layout.py). Running the same name again
restores the Ray experiment: finished trials are kept, unfinished and errored ones resume from their
last checkpoint, and MLflow runs are adopted, not duplicated. One driver at a time holds the sweep
(sweeps/driver/lock.py). SIGINT or SIGTERM stops it gracefully, a second signal at once
(sweeps/driver/interruption.py); a disk about to fill stops it the same way (sweeps/driver/disk.py).
Either way the unfinished runs and the parent end KILLED, and the same command resumes.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sweeps import environment
from sweeps.config import SweepConfig
from sweeps.driver.context import DriverContext, running
from sweeps.driver.data_record import check_same_data, record_data
from sweeps.driver.disk_guard import DiskGuard
from sweeps.driver.estimate import record
from sweeps.driver.interruption import Interruption
from sweeps.driver.local_ray import init_ray
from sweeps.driver.lock import check_free, sweep_lock
from sweeps.driver.outcome import SweepOutcome, outcome_of
from sweeps.driver.growth import start_growth, sweep_change
from sweeps.driver.preflight import preflight
from sweeps.driver.ray_logs import filter_ray_logs, quiet_loggers
from sweeps.driver.recovery import prune_superseded
from sweeps.driver.sweep_runs import close_tracking, open_sweep_runs
from sweeps.driver.tracking_target import tracking_server
from sweeps.driver.tune_setup import fit
from sweeps.layout import write_settings

if TYPE_CHECKING:
    from vae.data import DataSet


def run_sweep(config: SweepConfig, address: str | None = None, data_dir: Path | None = None,
              verbose: bool = False, force: bool = False, autoscaling: bool = False,
              retry_failed: bool = False, max_hours: float | None = None, estimate: bool = True) -> SweepOutcome:
    """Run, resume or grow the sweep, holding its folder; returns how it ended. Refused (ConfigError) when
    the disk cannot hold what it will write, unless ``force``."""
    quiet_console(verbose)
    note_where_runs_are_seen(config, address)
    check_free(config.sweep_dir(), config.name, "run")  # a second driver is refused before the slow checks
    config, data, _, estimate = preflight(config, address, data_dir, force, autoscaling, max_hours=max_hours,
                                          estimate=estimate)
    interruption = Interruption()
    with sweep_lock(config.sweep_dir(), config.name, "run"):
        config = claim_sweep_folder(config, data)
        record(config, estimate)
        with interruption.handling(), tracking_server(config) as server, \
                running(DriverContext(server, verbose)) as context:
            runs = fit_on_ray(config, data, address, context, interruption, retry_failed)
            outcome = outcome_of(config, interruption.signum, context.disk.description())
            close(config, context, runs, outcome)
    return outcome


def quiet_console(verbose: bool) -> None:
    """The driver's console keeps to vaesweep's lines (``verbose``: Ray's and Tune's too)."""
    environment.quiet_libraries(verbose)
    quiet_loggers(verbose)


def note_where_runs_are_seen(config: SweepConfig, address: str | None) -> None:
    if address and not config.tracking.uri:
        print("vaesweep: note: the sweep's MLflow server listens on 127.0.0.1 of this machine; only this driver "
              "writes to it, but to browse the runs from elsewhere pass --tracking-uri of a shared server "
              "(mlflow/README.md)", file=sys.stderr)


def claim_sweep_folder(config: SweepConfig, data: DataSet) -> SweepConfig:
    """Under the lock: the checks again (another driver may have started or grown the sweep meanwhile), a
    growth's new Ray experiment prepared, then the sweep's settings and data record written; returns the
    config the sweep runs."""
    config, growth = sweep_change(config)
    check_same_data(config.sweep_dir(), data)
    if growth is not None:
        print(f"vaesweep: {start_growth(config, growth)}", file=sys.stderr)
    write_settings(config)
    record_data(config.sweep_dir(), data)
    return config


def fit_on_ray(config: SweepConfig, data: DataSet, address: str | None, context: DriverContext,
               interruption: Interruption, retry_failed: bool) -> tuple[str, str] | None:
    """Ray started (while the MLflow server starts), the sweep's runs opened, and the fit run until the
    sweep ends or is stopped; Ray shut down on the way out. Returns the runs' (experiment id, parent run
    id), None when the sweep ran untracked."""
    import ray

    runs = None
    try:
        init_ray(address, context.verbose)
        filter_ray_logs(context.verbose)
        interruption.install()  # ray.init installs a SIGTERM handler of its own
        runs = open_sweep_runs(context.tracking, config)
        fit(config, data, retry_failed)
    except KeyboardInterrupt:
        interruption.signum = interruption.signum or signal.SIGINT
    except Exception as err:
        if not context.disk.explains(err, config.sweep_dir(), DiskGuard(config, data.pixels).reserve(0)):
            raise
    finally:
        ray.shutdown()
    return runs


def close(config: SweepConfig, context: DriverContext, runs: tuple[str, str] | None, outcome: SweepOutcome) -> None:
    """Superseded checkpoints pruned after a clean end; the MLflow runs closed with the outcome."""
    if outcome.exit_code == 0 and (pruned := prune_superseded(config.sweep_dir())):
        print(f"vaesweep: {pruned}", file=sys.stderr)
    if runs is not None:
        close_tracking(context.tracking, config, *runs, outcome)
