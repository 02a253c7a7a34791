"""How a sweep's driver run ended, read from Ray's saved state: what `vaesweep run` exits with and
closes the MLflow runs as, and what `vaesweep sync` closes them as."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sweeps.config import ConfigError, SweepConfig
from sweeps.driver.disk import describe, free_bytes, is_disk_full
from sweeps import exit_codes
from vae.config import grid_point_label


@dataclass(frozen=True)
class SweepOutcome:
    """What a driver run ended with, from Ray's saved experiment state (what `vaesweep status` shows)."""

    total: int
    finished: int
    stopped_early: int
    failed: int
    signum: int | None
    trial_states: dict[str, str]  # Ray trial id -> Ray's state (INTERRUPTED: stopped by a full disk)
    disk_full: str | None = None  # 'disk full at PATH (N MB free)' when that stopped the sweep
    failures: dict[str, str] = field(default_factory=dict)  # grid point label -> its error line

    @property
    def parent_status(self) -> str:
        """FINISHED only when every trial finished; KILLED when interrupted; FAILED when a trial failed."""
        if self.signum is not None or self.disk_full:
            return "KILLED"
        if self.failed:
            return "FAILED"
        return "FINISHED" if self.finished >= self.total else "KILLED"

    @property
    def exit_code(self) -> int:
        if self.signum is not None:
            return exit_codes.interrupted(self.signum)
        if self.disk_full:
            return exit_codes.DISK_FULL
        return exit_codes.FAILED if self.failed or self.finished < self.total else exit_codes.DONE


def outcome_of(config: SweepConfig, signum: int | None, disk_full: str | None = None) -> SweepOutcome:
    """The outcome as Ray's saved state tells it; a trial that failed on a full disk was interrupted, not failed."""
    from sweeps.readers.status import sweep_status

    try:
        trials = sweep_status(Path(config.storage), config.name)["trials"]
    except ConfigError:  # stopped before Ray saved any state
        trials = []
    full = {t["trial_id"] for t in trials if t["state"] == "ERROR" and is_disk_full(t["error"])}
    if full and disk_full is None:
        disk_full = describe(config.sweep_dir(), free_bytes(config.sweep_dir()))
    total = len(config.grid_points()) if config.search == "grid" else config.optuna.num_samples
    failures = {(grid_point_label(**t["config"]) if None not in t["config"].values() else t["trial_id"]): t["error"] or "unknown error"
                for t in trials if t["state"] == "ERROR" and t["trial_id"] not in full}
    return SweepOutcome(total=total, finished=sum(t["state"] == "TERMINATED" for t in trials),
                        stopped_early=sum(t["stopped_early"] for t in trials), failed=len(failures), signum=signum,
                        trial_states={t["trial_id"]: "INTERRUPTED" if t["trial_id"] in full else t["state"]
                                      for t in trials}, disk_full=disk_full, failures=failures)
