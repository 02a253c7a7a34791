"""The sweep folder's reference (docs/sweep-folder.md), generated from the one table of its file names
(``sweeps/layout.py``'s ``FOLDER``), so the page cannot drift from the code
(``tests/test_cli_conventions.py`` checks it is current and that every name in layout.py is in the table).

Regenerate with ``python -m sweeps.folder_reference > docs/sweep-folder.md``.
"""

from __future__ import annotations

from sweeps.layout import FOLDER

HEAD = """# The sweep folder

Generated from `sweeps/layout.py` by `python -m sweeps.folder_reference > docs/sweep-folder.md`.
Everything of a sweep is in `STORAGE/NAME/` (`runs/NAME/` unless `--storage` says otherwise); nothing
outside it points to it, so moving or removing the folder moves or removes the sweep. vaesweep writes
its own files atomically (a file is whole or absent); Ray's state files are Ray's
([reliability](reliability.md) says what happens when they are damaged).

| name | where | holds |
|---|---|---|"""
TAIL = """
## `vaesweep status NAME --json`

One JSON object for scripts, read from the folder above and the sweep's MLflow runs. Its shape is
versioned by its `schema` number (1; raised whenever a key is renamed, moved or removed):

| key | holds |
|---|---|
| `schema` | the shape's version |
| `sweep`, `path` | the sweep's name and folder |
| `tracking_uri`, `experiment`, `experiment_id`, `parent_run_id` | where its MLflow records are (absent when `tracking.json` cannot be read) |
| `notes` | what could not be read |
| `estimate` | null, or the last run's cost estimate: `line`, `wall_s`, `started` and `ended` (Unix times), `against_actual` |
| `trials` | one entry per grid point (the key keeps its name for compatibility): `trial_id` (Ray's), `pack` (packed sweeps), `config` (`alpha`, `k`, `seed`), `state` (`TERMINATED`, `RUNNING`, `PENDING`, `ERROR`, or `-` when Ray's state is unreadable), `epochs_completed`, `stopped_early`, `mlflow_run_id`, `num_failures`, `error`, `step_mode`, and its final metrics once it has them ([metrics](metrics.md)) |
"""


def reference() -> str:
    rows = [f"| `{entry.name}` | {entry.where} | {entry.holds} |" for entry in FOLDER]
    return "\n".join([HEAD, *rows, TAIL])


if __name__ == "__main__":
    print(reference(), end="")
