"""A sweep's trials as tidy pandas frames, and their mean / std / count over seeds (paper.md figs 1-3).

Input is plain data (one dict per trial run, metric histories as rows), so this module knows
nothing of MLflow: ``sweeps/runs.py`` reads the runs through the MLflow client and hands them here.

- ``trials``: one row per trial: run_id, status, alpha, k, seed and the final metrics.
- ``history``: one row per (run_id, key, step, value), e.g. per-epoch probes or the PCA spectrum.
- ``summarize``: per (alpha, k) and metric, the mean, std (ddof=1, NaN for one seed) and count
  over the seeds that have the metric; a trial lacking a metric is left out of that metric's count
  and listed by ``missing_metrics``.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

GRID = ["alpha", "k", "seed"]
FINAL_METRICS = ["test_vr_bound_alpha", "test_vr_bound_0", "test_log_likelihood", "active_components",
                 "active_units", "axis_alignment", "final_probe_means", "final_probe_means_variances",
                 "final_probe_samples", "final_probe_pixels"]


def trial_label(alpha: float, k: int, seed: int) -> str:
    """The name of a trial everywhere (MLflow run name, reports): a0.5_k30_s1."""
    return f"a{alpha:g}_k{k}_s{seed}"


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
    """Tidy summary: alpha, k, metric, mean, std, count (over seeds, NaNs left out)."""
    long = trials.melt(id_vars=GRID, value_vars=metrics, var_name="metric").dropna(subset=["value"])
    grouped = long.groupby(["alpha", "k", "metric"])["value"]
    return grouped.agg(mean="mean", std="std", count="count").reset_index()


def missing_metrics(trials: pd.DataFrame, metrics: list[str] = FINAL_METRICS) -> list[str]:
    """'a0.5_k30_s1: test_log_likelihood' lines for every finished trial lacking a metric."""
    lines = []
    for row in trials.itertuples(index=False):
        absent = [m for m in metrics if pd.isna(getattr(row, m))]
        if absent and row.status == "FINISHED":
            lines.append(f"{trial_label(row.alpha, row.k, row.seed)}: {', '.join(absent)}")
    return lines


def with_grid(history: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """History rows joined with their trial's alpha, k, seed."""
    return history.merge(trials[["run_id", *GRID]], on="run_id", how="inner")
