"""Packed trials: with ``resources.pack: P`` > 1, grid points that share every setting but alpha and
seed train together in one Ray trial (vae/packed_train.py), and each keeps its own identity.

The packs are the grid points of one k, in grid order, at most P to a pack (``SweepConfig.packs``).
A pack's Ray trial has the config ``{"pack": index}``, so the saved sweep config alone says which
points it trains. Each epoch is one ``tune.report`` holding every member's metrics under
``members`` (label -> metrics) and the messages of members that diverged under ``failed``; the
final checkpoint folder holds, per member, ``members/<label>/`` with its own checkpoint, analysis
and metrics. Whoever reads results (the driver's MLflow callback, status, sync, the progress lines)
expands a trial into ``members``: one MLflow run, one status row, one result per grid point.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.aggregate import trial_label
from sweeps.config import SweepConfig

PACK_KEY = "pack"  # a pack trial's only config key: its index in SweepConfig.packs()
MEMBERS_KEY = "members"  # in a pack's result: label -> that member's metrics
FAILED_KEY = "failed"  # in a pack's result: label -> the diverged member's message
MEMBERS_DIR = "members"  # in a pack's final checkpoint folder: one folder per member


def label_of(point: Mapping[str, Any]) -> str:
    return trial_label(point["alpha"], point["k"], point["seed"])


def trial_points(sweep: SweepConfig, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The grid points a Ray trial trains: a pack's members, or the trial's own point."""
    if PACK_KEY in config:
        return sweep.packs()[int(config[PACK_KEY])]
    return [{key: config.get(key) for key in ("alpha", "k", "seed")}]


def member_results(points: list[dict[str, Any]], result: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict]]:
    """(point, its metrics) for each member with a result in ``result`` (a pack's or a single trial's)."""
    if MEMBERS_KEY not in result:
        return [(points[0], dict(result))] if len(points) == 1 else []
    members = result[MEMBERS_KEY]
    return [(point, {**members[label_of(point)], "epoch": result["epoch"]}) for point in points
            if label_of(point) in members]


def member_failures(result: Mapping[str, Any]) -> dict[str, str]:
    """Label -> divergence message of each member that failed in a pack ({} for a single trial)."""
    return dict(result.get(FAILED_KEY) or {})


def member_folder(checkpoint_dir: Path, point: Mapping[str, Any], packed: bool) -> Path:
    """Where a member's final checkpoint and analysis are in its trial's final checkpoint folder."""
    return checkpoint_dir / MEMBERS_DIR / label_of(point) if packed else checkpoint_dir
