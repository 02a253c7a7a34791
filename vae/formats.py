"""The version of the files vaesweep writes, and the one place that reads or refuses an earlier version's.

Format 3 (written now): checkpoints, ``data.json`` and ``tracking.json`` carry ``format``; a pack
member's final metrics are in ``final_metrics.json``.
Format 2: checkpoints hold a pack's members (``configs``); a sweep folder has ``data.json`` and a
``sweep.yaml`` between a head and an end line; a pack member's final metrics are in ``metrics.json``
(the name of a `vaesweep train` run folder's record): read as such.
Format 1: a checkpoint of one trainer per model (``config``, no ``configs``): refused, it cannot be
resumed by a pack; a sweep folder without ``data.json`` (its data is not checked on resume, and the
report assumes labelled images) and a ``sweep.yaml`` without the head and end lines (read as whole).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vae.errors import CheckpointError

FORMAT = 3
FORMAT_KEY = "format"
MEMBER_METRICS_OF_FORMAT_2 = "metrics.json"
SETTINGS_HEAD = "# vaesweep: the validated settings of this sweep\n"
SETTINGS_END = "# end of settings\n"


def checkpoint_format(state: dict[str, Any]) -> int:
    """The format a loaded checkpoint was written in (2 for a pack's without the key, 1 without ``configs``)."""
    return int(state.get(FORMAT_KEY, 2 if "configs" in state else 1))


def is_current_checkpoint(state: dict[str, Any]) -> bool:
    """True for a checkpoint this version resumes: formats 2 and 3 (a pack's checkpoint is the same in both)."""
    return 2 <= checkpoint_format(state) <= FORMAT


def refuse_earlier_checkpoint(state: dict[str, Any], fix: str = "") -> None:
    """CheckpointError for a format-1 checkpoint, ``fix`` appended (what the user can do instead)."""
    if not is_current_checkpoint(state):
        raise CheckpointError("the checkpoint was written by an earlier vaesweep (format 1: one trainer per model, "
                              f"before packs of one), which this version does not resume{fix}")


def member_metrics_path(member_folder: Path, name: str) -> Path:
    """A finished member's final metrics file: ``name``, or a format-2 sweep's ``metrics.json``."""
    path = member_folder / name
    earlier = member_folder / MEMBER_METRICS_OF_FORMAT_2
    return earlier if not path.exists() and earlier.exists() else path


def settings_cut_short(text: str) -> bool:
    """True for a ``sweep.yaml`` begun with the head line but without the end line (a format-1 file has neither)."""
    return text.startswith(SETTINGS_HEAD) and not text.endswith(SETTINGS_END)


def data_record_of_earlier(title: str) -> dict[str, Any]:
    """What the report assumes of a format-1 sweep's data, which recorded none: labelled images."""
    return {"title": title, "labels": True}
