"""Checkpoints written atomically and read back with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain values (model and optimizer state, RNG states, epoch,
config). Writing goes to a temporary file in the same folder, fsynced, then renamed, so a killed
process leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from vae.atomic import write_atomic
from vae.errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint safely (no pickled code); CheckpointError names the file if it is bad."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        raise CheckpointError(f"checkpoint {path} is corrupt or partial ({type(err).__name__})") from None
    if not isinstance(state, dict) or not {"model", "epoch", "config"} <= state.keys():
        raise CheckpointError(f"{path} is not a vaesweep checkpoint")
    return state
