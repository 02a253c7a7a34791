"""Disk space of a sweep: refused up front when what it will write does not fit, stopped cleanly
before the disk fills up mid-sweep, and a full disk told apart from a failure.

What a sweep writes on its folder's filesystem, per trial: the ``CHECKPOINTS_KEPT`` newest
checkpoints in ``tune/`` (model + Adam's two moments, float32: 12 bytes per parameter), the final
analysis beside the last one, and, for the embedded MLflow store, the final checkpoint and analysis
again as artifacts; plus one checkpoint in flight per running trial (written before the oldest is
deleted) and the stores' own records; in the temp folder, the checkpoints trials stage there and
Ray's session. A full disk mid-sweep would tear whatever was being written
(Ray's experiment state, a result, an artifact), so the driver stops the sweep while there is still
room to save its state (``sweeps/driver/disk_guard.py``), as Ctrl-C does, and the same command resumes it.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sweeps.config import SweepConfig
from sweeps.layout import CHECKPOINTS_KEPT

ANALYSIS_BYTES = 1 << 20  # a final analysis folder: interpolations, figures, tables (about 0.3 MB measured)
RECORD_BYTES = 8 << 20  # Ray's experiment state, per-epoch results, the MLflow database (about 1 MB on smoke)
# Ray's session folder in the temp folder: 0.3-0.5 MB measured after small sweeps (logs, sockets), but
# objects spilled from the object store land there too, and MNIST's arrays alone are 55 MB.
RAY_SESSION_BYTES = 64 << 20
MB = 1 << 20
DISK_FULL_TEXT = "No space left on device"


def parameter_count(k: int, hidden: tuple[int, ...], pixels: int) -> int:
    """Weights and biases of the encoder (pixels -> hidden -> 2k) and decoder (k -> reversed hidden -> pixels)."""
    def mlp(widths: list[int]) -> int:
        return sum((a + 1) * b for a, b in zip(widths, widths[1:]))

    return mlp([pixels, *hidden, 2 * k]) + mlp([k, *hidden[::-1], pixels])


def checkpoint_bytes(k: int, hidden: tuple[int, ...], pixels: int) -> int:
    """A checkpoint's size: parameters and Adam's two moments in float32, plus RNG states and config."""
    return 12 * parameter_count(k, hidden, pixels) + (64 << 10)


@dataclass(frozen=True)
class SpaceEstimate:
    """What a sweep will write on its folder's filesystem, in bytes."""

    total: int
    trials: int
    per_trial: int
    checkpoint: int  # the largest trial's checkpoint
    concurrent: int  # trials running at once

    def explain(self) -> str:
        return (f"{self.trials} trials x {self.per_trial / MB:.1f} MB: {CHECKPOINTS_KEPT} checkpoints of up to "
                f"{self.checkpoint / MB:.1f} MB kept per trial, its own final checkpoint and analysis, and artifacts")


def estimate(config: SweepConfig, pixels: int) -> SpaceEstimate:
    """What the whole sweep writes in its folder when it has run (an estimate, on the high side)."""
    trials = config.grid_points() if config.search == "grid" else [
        config.point_config({"alpha": 1.0, "k": max(config.grid.k), "seed": 0})] * config.optuna.num_samples
    sizes = [checkpoint_bytes(t.k, tuple(t.hidden), pixels) for t in trials]
    artifacts = 0 if config.tracking.uri else 1  # the embedded store keeps a copy of the final checkpoint
    # the kept checkpoints, the grid point's own copy in the final folder (members/<label>/), and the artifacts
    per_trial = [(CHECKPOINTS_KEPT + 1 + artifacts) * size + (1 + artifacts) * ANALYSIS_BYTES for size in sizes]
    concurrent = max(1, min(len(trials), int((os.cpu_count() or 1) // max(config.resources.cpus, 1e-9))))
    total = sum(per_trial) + concurrent * max(sizes) + RECORD_BYTES
    return SpaceEstimate(total, len(trials), max(per_trial), max(sizes), concurrent)


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 if it does not exist)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def free_bytes(folder: Path) -> int:
    """Free space on the filesystem that holds (or will hold) ``folder``."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    return shutil.disk_usage(existing).free


def temp_folder() -> Path:
    """Where a sweep writes outside its folder: each trial stages every checkpoint in the system temp
    folder before Ray copies it into ``tune/``, and Ray keeps its session (logs, sockets, objects
    spilled from the object store) in ``<temp>/ray``. Both follow TMPDIR (Ray: RAY_TMPDIR first)."""
    return Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir())


def filesystem(folder: Path) -> int:
    """The device id of the filesystem that holds (or will hold) ``folder``."""
    return next(p for p in (folder, *folder.parents) if p.exists()).stat().st_dev


def space_problem(config: SweepConfig, pixels: int) -> str | None:
    """Why the sweep would fill a disk (what it needs beyond what it already wrote, and what is free),
    None if it fits: its own folder's filesystem, and the temp folder's (counted together when one
    filesystem holds both)."""
    sweep_dir, temp = config.sweep_dir(), temp_folder()
    need = estimate(config, pixels)
    missing = need.total - folder_bytes(sweep_dir)
    staging = need.concurrent * need.checkpoint + RAY_SESSION_BYTES
    shared = filesystem(sweep_dir) == filesystem(temp)
    free = free_bytes(sweep_dir)
    if missing + (staging if shared else 0) > free:
        also = f" and {staging / MB:.0f} MB in the temp folder {temp} on the same disk" if shared else ""
        return (f"not enough disk space: sweep {config.name} needs about {missing / MB:.0f} MB more in {sweep_dir} "
                f"({need.explain()}){also} but {free / MB:.0f} MB are free there; free space, choose another "
                "--storage, log to a tracking server (--tracking-uri: no artifacts kept here), run fewer grid points, "
                "or pass --force to start anyway")
    if not shared and staging > free_bytes(temp):
        return (f"not enough disk space in the temp folder {temp}: the sweep stages each checkpoint there and Ray "
                f"keeps its session there, about {staging / MB:.0f} MB ({need.concurrent} checkpoints of "
                f"{need.checkpoint / MB:.1f} MB in flight and {RAY_SESSION_BYTES / MB:.0f} MB for Ray), but "
                f"{free_bytes(temp) / MB:.0f} MB are free there; set TMPDIR to a folder with room, or pass --force")
    return None


def is_disk_full(error: BaseException | str | None) -> bool:
    """True for ENOSPC, raised or as the text of a trial's error."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    # pyarrow's copies (Ray's checkpoint and state uploads) raise OSError with the errno in the text only
    return error is not None and any(mark in str(error) for mark in (DISK_FULL_TEXT, "[Errno 28]", "ENOSPC"))


def describe(path: Path, free: int) -> str:
    return f"disk full at {path} ({free / MB:.0f} MB free)"


class DiskVerdict:
    """Whether, where and with how much space left this driver run stopped its sweep for want of space:
    the disk guard's verdict, owned by the run (``sweeps.driver.context.DriverContext``)."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.free = 0

    def stop(self, path: Path, free: int) -> None:
        """Record it, say it, and ask Tune to stop gracefully (its SIGUSR1 handler, as Ctrl-C does)."""
        if self.path is not None:
            return
        self.path, self.free = path, free
        print(f"vaesweep: {describe(path, free)}: stopping the sweep and saving its state", file=sys.stderr)
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if callable(tune_stop):
            tune_stop(signal.SIGUSR1, None)

    def explains(self, error: BaseException, sweep_dir: Path, reserve: int) -> bool:
        """Whether ``error``, ending the fit, is the full disk: after one, Tune's own ending may trip over what
        it could not write (a cut-off error pickle), which is the full disk too, said in one line."""
        if not (self.path or is_disk_full(error) or free_bytes(sweep_dir) < reserve):
            return False
        self.path = self.path or sweep_dir
        self.free = free_bytes(sweep_dir)
        return True

    def description(self) -> str | None:
        return describe(self.path, self.free) if self.path else None
