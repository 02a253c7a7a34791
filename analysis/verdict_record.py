"""What lets anyone recompute a report's verdicts: ``trials.csv`` (one row per grid point: status, alpha,
k, seed and every final metric) and ``verdicts.json`` (the four claims' verdicts, keyed "a" to "d"), and
the reading back of a ``trials.csv`` that ``vaesweep report --trials`` judges without MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.claims import Verdict
from analysis.metrics import FINAL_METRICS, GRID

TRIALS_FILE = "trials.csv"
VERDICTS_FILE = "verdicts.json"
TRIALS_COLUMNS = ["status", *GRID, *FINAL_METRICS]
REQUIRED_COLUMNS = ["status", *GRID]


class TrialsFileError(ValueError):
    """A trials.csv that cannot be judged; its message is one line naming the file and the fix."""


def trials_table(trials: pd.DataFrame) -> pd.DataFrame:
    """The report's trials frame as ``trials.csv`` holds it: its own columns, no run ids."""
    table = trials.copy()
    for column in TRIALS_COLUMNS:
        if column not in table:
            table[column] = float("nan")
    return table[TRIALS_COLUMNS]


def verdicts_json(verdicts: dict[str, Verdict]) -> str:
    return json.dumps({claim: verdict.to_dict() for claim, verdict in verdicts.items()}, indent=2,
                      ensure_ascii=False) + "\n"


def write_verdict_record(trials: pd.DataFrame, verdicts: dict[str, Verdict], out: Path) -> None:
    trials_table(trials).to_csv(out / TRIALS_FILE, index=False)
    (out / VERDICTS_FILE).write_text(verdicts_json(verdicts))


def read_trials(path: Path) -> pd.DataFrame:
    """A ``trials.csv`` as the report's frame: status, alpha, k, seed, and every final metric (absent ones NaN)."""
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise TrialsFileError(f"--trials {path}: no such file; give the trials.csv a report wrote") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise TrialsFileError(f"--trials {path}: not a CSV file ({str(err).splitlines()[0][:120]}); give the "
                              "trials.csv a report wrote") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table]
    if missing:
        raise TrialsFileError(f"--trials {path}: no column {', '.join(missing)}; a trials.csv has the columns "
                              f"{', '.join(REQUIRED_COLUMNS)} and the final metrics")
    try:
        table = table.astype({"alpha": float, "k": int, "seed": int})
        for metric in FINAL_METRICS:
            table[metric] = pd.to_numeric(table[metric], errors="raise") if metric in table else float("nan")
    except (ValueError, TypeError) as err:
        raise TrialsFileError(f"--trials {path}: a value is not a number ({str(err).splitlines()[0][:120]}); "
                              "fix that row or write the file again with `vaesweep report`") from None
    return table


def verdict_table(record: dict[str, dict]) -> list[dict[str, str]]:
    """The rows of a verdicts table, from ``verdicts.json``'s form: a row per claim, and one per latent size
    for a claim judged per k (the report's page and docs/results.md draw them)."""
    def row(label: str, verdict: dict) -> dict[str, str]:
        found = verdict["effect"]
        effect = "-" if found is None else (
            f"{found['name']} {found['value']:+.3g} {found['unit']}"
            + (f" ({found['interval'][0]:+.3g} to {found['interval'][1]:+.3g})" if found["interval"] else ""))
        low, high = verdict["seeds"]
        return {"claim": label, "outcome": verdict["outcome"], "effect": effect,
                "p_values": "; ".join(f"{name} {p:.3g}" for name, p in verdict["p_values"].items()) or "-",
                "seeds": f"{low}" if low == high else f"{low}-{high}",
                "to_decide": str(verdict["seeds_to_decide"] or "-")}

    return [line for claim, verdict in record.items()
            for line in [row(f"({claim})", verdict), *(row(f"({claim}) k={k}", v) for k, v in verdict["per_k"].items())]]


def verdicts_markdown(record: dict[str, dict]) -> str:
    """A ``verdicts.json`` as a markdown table (docs/results.md holds these, checked by tests/test_docs.py)."""
    lines = ["| claim | outcome | effect (95% interval) | seeds | seeds to decide |", "|---|---|---|---|---|"]
    lines += [f"| {r['claim']} | **{r['outcome']}** | {r['effect']} | {r['seeds']} | {r['to_decide']} |"
              for r in verdict_table(record)]
    return "\n".join(lines)
