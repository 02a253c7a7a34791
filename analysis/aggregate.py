"""A sweep's trials as tidy pandas frames, and their mean / std / count over seeds (paper.md figs 1-3).

Input is plain data (one dict per trial run, metric histories as rows), so this module knows
nothing of MLflow: ``sweeps/readers/runs.py`` reads the runs through the MLflow client and hands them here.

- ``trials``: one row per trial: run_id, status, alpha, k, seed, stopped_early (the epoch, if a
  scheduler stopped it) and the final metrics.
- ``history``: one row per (run_id, key, step, value), e.g. per-epoch probes or the PCA spectrum.
- ``summarize``: per (alpha, k) and metric, the mean, std (ddof=1, NaN for one seed) and count
  over the seeds that have the metric; a trial lacking a metric is left out of that metric's count
  and listed by ``missing_metrics``. ``pivot_summary`` lays it out for reading (a row per metric).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import pandas as pd

from analysis.metrics import FINAL_METRICS, GRID, check_metrics
from vae.config import grid_point_label



def trials_frame(records: Iterable[dict]) -> pd.DataFrame:
    """One row per trial from dicts with run_id, status, alpha, k, seed and metric values."""
    frame = pd.DataFrame.from_records(list(records))
    if frame.empty:
        return pd.DataFrame(columns=["run_id", "status", *GRID, *FINAL_METRICS])
    for metric in FINAL_METRICS:
        if metric not in frame:
            frame[metric] = float("nan")
    frame = frame.astype({"alpha": float, "k": int, "seed": int})
    return frame.sort_values(GRID).reset_index(drop=True)


def history_frame(rows: Iterable[tuple[str, str, int, float]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(list(rows), columns=["run_id", "key", "step", "value"])


def summarize(trials: pd.DataFrame, metrics: list[str] = FINAL_METRICS) -> pd.DataFrame:
    """Tidy summary: alpha, k, metric, mean, std, count (over seeds, NaNs left out); ``metrics`` must be
    in the schema (analysis/metrics.py), so a misspelt name fails instead of summarising nothing."""
    check_metrics(metrics)
    long = trials.melt(id_vars=GRID, value_vars=metrics, var_name="metric").dropna(subset=["value"])
    grouped = long.groupby(["alpha", "k", "metric"])["value"]
    return grouped.agg(mean="mean", std="std", count="count").reset_index()


def summary_cell(mean: float, std: float, count: int) -> str:
    """'-91.29 ± 0.12 (2)': the std to two significant digits and the mean to the same decimals; one seed
    (no std) or equal values: the mean to four significant digits."""
    if pd.isna(std) or std == 0:
        return f"{mean:.4g}{'' if pd.isna(std) else ' ± 0'} ({count})"
    decimals = max(0, 1 - math.floor(math.log10(std)))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f} ({count})"


def pivot_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as a readable table: rows = metrics (FINAL_METRICS first), columns = (k, alpha), cells
    ``summary_cell``; a point lacking a metric is NaN."""
    if summary.empty:
        return pd.DataFrame()
    stats = summary[["mean", "std", "count"]].itertuples(index=False)
    cells = summary.assign(cell=[summary_cell(mean, std, count) for mean, std, count in stats])
    table = cells.pivot(index="metric", columns=["k", "alpha"], values="cell").sort_index(axis=1)
    order = [m for m in FINAL_METRICS if m in table.index] + sorted(set(table.index) - set(FINAL_METRICS))
    return table.reindex(order)


def missing_metrics(trials: pd.DataFrame, metrics: list[str] = FINAL_METRICS) -> list[str]:
    """'a0.5_k30_s1: test_log_likelihood' lines for every finished trial lacking a metric (a trial a
    scheduler stopped early has no final metrics by design: ``stopped_early`` lists those)."""
    lines = []
    for row in trials.itertuples(index=False):
        absent = [m for m in metrics if pd.isna(getattr(row, m))]
        if absent and row.status == "FINISHED" and pd.isna(getattr(row, "stopped_early", None)):
            lines.append(f"{grid_point_label(row.alpha, row.k, row.seed)}: {', '.join(absent)}")
    return lines


def stopped_early(trials: pd.DataFrame) -> list[str]:
    """'a0.5_k30_s1: stopped early by the scheduler after epoch 3' for each trial a scheduler stopped."""
    if "stopped_early" not in trials:
        return []
    stopped = trials.dropna(subset=["stopped_early"])
    return [f"{grid_point_label(r.alpha, r.k, r.seed)}: stopped early by the scheduler after epoch {int(r.stopped_early)} "
            "(a valid, shorter run: no final evaluation)" for r in stopped.itertuples(index=False)]


def with_grid(history: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """History rows joined with their trial's alpha, k, seed."""
    return history.merge(trials[["run_id", *GRID]], on="run_id", how="inner")
