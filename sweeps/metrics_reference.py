"""The metrics reference (docs/metrics.md), generated from the one schema (``analysis/metrics.py``): every
metric a trial reports with its unit, meaning and where it is found, so the page cannot drift from the
code (``tests/test_cli_conventions.py`` checks it is current).

Regenerate with ``python -m sweeps.metrics_reference > docs/metrics.md``.
"""

from __future__ import annotations

from analysis.metrics import EIGENVALUE_KEY, SCHEMA
from sweeps.packs import NODE_KEY
from sweeps.tracking import ERROR_TAG, ESTIMATE_TAG, STEP_MODE_TAG, STOPPED_TAG, TRIAL_TAG

HEAD = """# Metrics reference

Generated from `analysis/metrics.py` by `python -m sweeps.metrics_reference > docs/metrics.md`. Every
metric of a grid point is a metric of its MLflow child run (step = the epoch it was measured after), a
key of its members' entry in Ray's `result.json`, and, for the final ones, a key of its row in
`vaesweep status --json` and a column of the report's `trials.csv`. A result with a key outside this
table is an error where it is produced.

| metric | unit | when | meaning |
|---|---|---|---|"""
WHEN = {"epoch": "every epoch", "probe": "each probe epoch (`eval.probe_epochs`)",
        "final": "once, after the last epoch"}
TAIL = f"""
Also in each child run:

| name | kind | meaning |
|---|---|---|
| `{EIGENVALUE_KEY}` | metric, step = component 1..k | the PCA spectrum of the test posterior means after the last epoch (a run trained longer logs it again: readers keep each step's newest value) |
| `{STEP_MODE_TAG}` | tag | how the training steps ran (`eager on cpu`, `CUDA graphs of 25 steps`, ...) |
| `{TRIAL_TAG}`, `{NODE_KEY}` | tags | the Ray trial and node that last trained the grid point |
| `{ERROR_TAG}` | tag | why the run failed: the exception's first line |
| `{STOPPED_TAG}` | tag | the epoch a scheduler (ASHA) stopped the trial at |
| `analysis/`, `checkpoint/` | artifacts | the final analysis (analysis.json, spectrum.csv, probes.csv, interpolations, fig4_geodesics.png) and the member's checkpoint; `analysis-epoch-E/` keeps the analysis at epoch E of a sweep trained longer |

The parent run carries the tag `{ESTIMATE_TAG}`: the cost estimate the last run started with.
"""


def reference() -> str:
    rows = [f"| `{name}` | {metric.unit} | {WHEN[metric.when]} | {metric.description} |" for name, metric in SCHEMA.items()]
    return "\n".join([HEAD, *rows, TAIL])


if __name__ == "__main__":
    print(reference(), end="")
