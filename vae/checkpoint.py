"""Checkpoints written atomically and read back with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain values (model and optimizer state, RNG states, epoch,
config; a pack's has its members' ``configs``: vae/packed_train.py). Writing goes to a temporary
file in the same folder, fsynced, then renamed, so a killed process leaves either the old
checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import torch

from vae.atomic import write_atomic
from vae.errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.pt"
REPLACE_HINT = "delete it to train that run afresh, or give another checkpoint"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (no pickled code); CheckpointError names the file if it is bad.

    ``torch.load`` does not check the CRC-32 of the zip records it reads, so a flipped bit would load
    as a wrong weight: the records are checked first (``testzip``, one read of a few megabytes).
    """
    damaged = None
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
        if damaged is None:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist; give a run directory or its {CHECKPOINT_NAME}") from None
    except Exception as err:  # noqa: BLE001 - zipfile and torch raise many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or partial ({type(err).__name__}); {REPLACE_HINT}") from None
    if damaged is not None:
        raise CheckpointError(f"checkpoint {path} fails the CRC-32 check of its record {damaged}; {REPLACE_HINT}")
    if not isinstance(state, dict) or not {"model", "epoch"} <= state.keys() or not {"config", "configs"} & state.keys():
        raise CheckpointError(f"{path} is not a vaesweep checkpoint; give a {CHECKPOINT_NAME} written by "
                              "`vaesweep train` or a sweep")
    return state
