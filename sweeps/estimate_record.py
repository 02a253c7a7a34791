"""A sweep's cost estimate as its run recorded it (``estimate.json``), read beside what happened: the
end line of `vaesweep run` and `vaesweep status` say both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sweeps.layout import ESTIMATE_FILE

DAY_S = 86400.0


def duration(seconds: float) -> str:
    """'40 s', '1 min 33 s', '3.5 h', '9 days'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        minutes, secs = divmod(round(seconds), 60)
        return f"{minutes} min {secs:02d} s"
    if seconds < 2 * DAY_S:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY_S:.0f} days"


def read_estimate(sweep_dir: Path) -> dict[str, Any] | None:
    """A sweep's ``estimate.json`` (None when it has none or it is unreadable)."""
    try:
        recorded = json.loads((sweep_dir / ESTIMATE_FILE).read_text())
        float(recorded["started"]), float(recorded["wall_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return recorded


def against_actual(recorded: dict[str, Any], now: float) -> str:
    """'ran 1 min 33 s, estimated 79 s before it started' (mid-sweep: 'running ... of about ...: ~... left')."""
    took, wall = (recorded.get("ended") or now) - recorded["started"], recorded["wall_s"]
    if recorded.get("ended"):
        return f"ran {duration(took)}, estimated {duration(wall)} before it started"
    return f"running {duration(took)} of about {duration(wall)}: ~{duration(max(0.0, wall - took))} left by the estimate"

