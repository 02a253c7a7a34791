"""The data a sweep trains on, recorded when it starts (``data.json``) and checked when it resumes, so that
no sweep mixes two versions of its data (a user's files changed in place, a different MNIST copy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from sweeps.config import ConfigError
from sweeps.layout import DATA_FILE, read_json
from vae.atomic import write_atomic
from vae.formats import FORMAT, FORMAT_KEY

if TYPE_CHECKING:  # the driver's quick paths (the dry run) do not import torch
    from vae.data import DataSet


def check_same_data(sweep_dir: Path, data: DataSet) -> None:
    """ConfigError if the sweep was started on data with another checksum; nothing for a new sweep (or a
    format-1 sweep, which recorded none: ``vae/formats.py``)."""
    path = sweep_dir / DATA_FILE
    if not path.exists():
        return
    try:
        started = read_json(path)["sha256"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path} is corrupt; restore it, or delete it to accept the data as it is now") from None
    if started != data.sha256:
        raise ConfigError(f"the data set {data.title} ({data.spec}) changed since sweep {sweep_dir.name!r} started "
                          f"(sha256 {started[:12]}... then, {data.sha256[:12]}... now): restore the data it started "
                          "on, or start a new sweep with another --name")


def record_data(sweep_dir: Path, data: DataSet) -> None:
    """Write ``data.json`` (spec, title, checksum, sizes, image side, labels or not) once."""
    path = sweep_dir / DATA_FILE
    if not path.exists():
        write_atomic(path, json.dumps({FORMAT_KEY: FORMAT, **data.describe()}, indent=2).encode())
