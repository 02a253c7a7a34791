"""What a small sweep pays besides its trials' compute, part by part, and its wall time against that compute.

    .venv/bin/python bench/fixed_cost.py [--data-dir DIR]   (about 1.5 minutes)

Runs ``vaesweep run smoke`` as a user does (a fresh folder, the estimate included), timed, then reads its
parts from the sweep folder: the run's start and end in ``estimate.json``, the parent run's start in the
sweep's MLflow store, and each trial's first and last result in its ``result.json`` (a result's
``timestamp``, whole seconds, less its ``time_this_iter_s`` is when that epoch began; so each part is
+-1 s). The trials' compute is their ``time_total_s`` (epochs, probes, final evaluation) over the trials
Ray ran at once, and so are the handovers, which the slots pay side by side. Prints the table of
docs/benchmarks.md and the ratio of the command's time to the compute per slot (target 1.3x), both from
this one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from sweeps.estimate_record import read_estimate
from sweeps.layout import TUNE_DIR, backend_uri, read_tracking

VAESWEEP = Path(sys.executable).parent / "vaesweep"
PRESET = "smoke"  # the small sweep the targets are set for


def trial_spans(sweep_dir: Path) -> list[tuple[float, float, float]]:
    """(first epoch's start, last result, compute seconds) of each trial."""
    spans = []
    for path in (sweep_dir / TUNE_DIR).glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        spans.append((rows[0]["timestamp"] - rows[0]["time_this_iter_s"], rows[-1]["timestamp"],
                      rows[-1]["time_total_s"]))
    return sorted(spans)


def slot_handovers(spans: list[tuple[float, float, float]], at_once: int) -> list[float]:
    """Seconds from a trial's last result to the first epoch of the trial that took its slot."""
    free = sorted(end for _, end, _ in spans[:at_once])
    gaps = []
    for start, end, _ in spans[at_once:]:
        freed = max((e for e in free if e <= start), default=free[0])
        free.remove(freed)
        free.append(end)
        gaps.append(start - freed)
    return gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="MNIST idx files (default: the vaesweep cache)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        command = [str(VAESWEEP), "run", PRESET, "--storage", tmp]
        command += ["--data-dir", str(args.data_dir)] if args.data_dir else []
        begun = time.time()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        total = time.time() - begun
        sweep_dir = Path(tmp) / PRESET
        estimate = read_estimate(sweep_dir)
        parent = MlflowClient(backend_uri(sweep_dir)).get_run(read_tracking(sweep_dir)["parent_run_id"])
        spans, at_once = trial_spans(sweep_dir), estimate["at_once"]
    opened = parent.info.start_time / 1000
    handovers = slot_handovers(spans, at_once)
    compute = sum(seconds for *_, seconds in spans) / at_once
    parts = [
        (f"the command's start to the sweep's start (imports, data, checks, the estimate: "
         f"{estimate['measured_s']:.1f} s)", estimate["started"] - begun),
        ("the sweep's start to its MLflow parent run (Ray and the MLflow server started)", opened - estimate["started"]),
        ("then to the first trials' first epoch (workers, imports, data, trainers)", spans[0][0] - opened),
        (f"the trials' compute per slot ({len(spans)} trials, {at_once} at a time)", compute),
        (f"slot handovers per slot (a trial's last result to the next trial's first epoch: "
         f"{', '.join(f'{gap:.1f}' for gap in handovers) or 'none'})", sum(handovers) / at_once),
        ("the last result to the run's end (runs closed, Ray stopped)", estimate["ended"] - max(end for _, end, _ in spans)),
    ]
    parts.append(("the rest (the slots' uneven loads, the command's exit)", total - sum(seconds for _, seconds in parts)))
    print(f"\n{PRESET}: the command took {total:.1f} s")
    print("| part | seconds |\n|---|---|")
    for name, seconds in parts:
        print(f"| {name} | {seconds:.1f} |")
    print(f"| **the whole command** | **{total:.1f}** |")
    print(f"\n{total / compute:.2f}x its trials' compute per slot [target 1.3x]; "
          f"fixed cost {total - compute:.1f} s [target under 15 s]; estimated {estimate['wall_s']:.1f} s from the "
          f"sweep's start, ran {estimate['ended'] - estimate['started']:.1f} s")


if __name__ == "__main__":
    main()
