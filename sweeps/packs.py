"""Packs: every Ray trial trains its grid points as one pack (vae/packed_train.py), and each point
keeps its own identity. With ``resources.pack: P`` > 1, grid points that share every setting but
alpha and seed train together; otherwise a trial is a pack of one.

The packs are the grid points of one k, in grid order, at most P to a pack (``SweepConfig.packs``).
A pack's Ray trial has the config ``{"pack": index}``, so the saved sweep config alone says which
points it trains; a pack of one has its point's own config {alpha, k, seed} (Ray's trial names and
searches read them). Each epoch is one ``tune.report`` holding every member's metrics under
``members`` (label -> metrics) and the messages of members that diverged under ``failed``; the
final checkpoint folder holds, per member, ``members/<label>/`` with its own checkpoint, analysis
and metrics. Whoever reads results (the driver's MLflow callback, status, sync, the progress lines)
expands a trial into ``members``: one MLflow run, one status row, one result per grid point.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.metrics import GRID
from sweeps.config import SweepConfig
from sweeps.layout import MEMBERS_DIR
from vae.config import grid_point_label

PACK_KEY = "pack"  # a pack trial's only config key: its index in SweepConfig.packs()
MEMBERS_KEY = "members"  # in a pack's result: label -> that member's metrics
FAILED_KEY = "failed"  # in a pack's result: label -> the diverged member's message
STEP_MODE_KEY = "step_mode"  # in a trial's result: how its steps ran (PackedTrainer.step_mode), for every member
NODE_KEY = "ray_node_id"  # in a trial's result: the Ray node it ran on (a tag of each member's MLflow run)


def trial_points(sweep: SweepConfig, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The grid points a Ray trial trains: a pack's members, or the trial's own point."""
    if PACK_KEY in config:
        return sweep.packs()[int(config[PACK_KEY])]
    return [{key: config.get(key) for key in GRID}]


def member_results(points: list[dict[str, Any]], result: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict]]:
    """(point, its metrics) for each member with metrics in a trial's ``result`` (with the trial's step mode)."""
    members = result.get(MEMBERS_KEY) or {}
    if not members:
        return []
    shared = {"epoch": result["epoch"], **({STEP_MODE_KEY: result[STEP_MODE_KEY]} if STEP_MODE_KEY in result else {})}
    return [(point, {**members[grid_point_label(**point)], **shared}) for point in points if grid_point_label(**point) in members]


def member_failures(result: Mapping[str, Any]) -> dict[str, str]:
    """Label -> divergence message of each member of a trial that failed."""
    return dict(result.get(FAILED_KEY) or {})


def member_folder(checkpoint_dir: Path, point: Mapping[str, Any]) -> Path:
    """Where a member's final checkpoint and analysis are in its trial's final checkpoint folder."""
    return checkpoint_dir / MEMBERS_DIR / grid_point_label(**point)
