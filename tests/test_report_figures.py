"""Aggregation over seeds and the figures' data, on hand-built frames with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.aggregate import history_frame, missing_metrics, summarize, trials_frame, with_grid
from analysis.figures import (active_components_figure, bounds_figure, interpolation_figure, probes_figure,
                              spectrum_figure)


@pytest.fixture
def trials() -> pd.DataFrame:
    records = []
    for alpha in (0.0, 1.0):
        for k in (5, 10):
            for seed in (0, 1, 2):
                records.append({"run_id": f"r{alpha}_{k}_{seed}", "status": "FINISHED", "alpha": str(alpha), "k": str(k),
                                "seed": str(seed), "test_log_likelihood": -100 + 10 * alpha + k + seed,
                                "active_components": k // 5 + seed, "test_vr_bound_alpha": -110 + seed})
    records[0]["test_log_likelihood"] = math.nan  # one trial lacks a metric
    return trials_frame(records)


def errorbar_lines(ax) -> dict:
    """Label -> the data line of each errorbar series."""
    return {c.get_label(): c.lines[0] for c in ax.containers}


def test_summary_matches_a_hand_computation(trials):
    summary = summarize(trials)
    row = summary[(summary.alpha == 1.0) & (summary.k == 10) & (summary.metric == "test_log_likelihood")].iloc[0]
    values = [-100 + 10 + 10 + s for s in (0, 1, 2)]
    assert row["mean"] == pytest.approx(np.mean(values)) and row["std"] == pytest.approx(np.std(values, ddof=1))
    assert row["count"] == 3
    partial = summary[(summary.alpha == 0.0) & (summary.k == 5) & (summary.metric == "test_log_likelihood")].iloc[0]
    assert partial["count"] == 2 and partial["mean"] == pytest.approx(np.mean([-100 + 5 + 1, -100 + 5 + 2]))


def test_missing_metric_is_reported_not_fatal(trials):
    lines = missing_metrics(trials)
    assert any(line.startswith("a0_k5_s0:") and "test_log_likelihood" in line for line in lines)


def test_active_components_figure_plots_means_with_std_error_bars(trials):
    fig = active_components_figure(summarize(trials))
    lines = errorbar_lines(fig.axes[0])
    assert set(lines) == {"k=5", "k=10"}
    np.testing.assert_allclose(lines["k=10"].get_xdata(), [0.0, 1.0])
    np.testing.assert_allclose(lines["k=10"].get_ydata(), [3.0, 3.0])  # 10 // 5 + mean(seed) = 2 + 1


def test_bounds_figure_has_two_panels_one_line_per_k(trials):
    fig = bounds_figure(summarize(trials))
    assert len(fig.axes) == 2
    assert [list(errorbar_lines(ax)) for ax in fig.axes] == [["k=5", "k=10"], ["k=5", "k=10"]]
    ll = errorbar_lines(fig.axes[1])["k=5"].get_ydata()
    np.testing.assert_allclose(ll, [np.mean([-94, -93]), np.mean([-85, -84, -83])])


def test_spectrum_figure_one_panel_per_k_one_curve_per_alpha(trials):
    rows = [(r.run_id, "pca_eigenvalue", c, 2.0 ** -c * (1 + r.seed)) for r in trials.itertuples() for c in range(1, r.k + 1)]
    spectra = with_grid(history_frame(rows), trials)
    fig = spectrum_figure(spectra, epsilon=0.01)
    assert [ax.get_title() for ax in fig.axes] == ["k = 5", "k = 10"]
    curve = {line.get_label(): line for line in fig.axes[0].get_lines()}["alpha=1"]
    np.testing.assert_allclose(curve.get_ydata(), [2.0 ** -c * 2 for c in range(1, 6)])  # mean over seeds of (1+seed)
    assert fig.axes[0].get_yscale() == "log"
    eps = {line.get_label(): line for line in fig.axes[0].get_lines()}["epsilon=0.01"]
    assert set(eps.get_ydata()) == {0.01}


def test_probes_figure_three_panels_with_pixel_baseline(trials):
    rows = [(r.run_id, key, epoch, 0.5 + 0.1 * epoch / 10) for r in trials.itertuples()
            for key in ("probe_means", "probe_means_variances", "probe_samples") for epoch in (1, 2, 5)]
    fig = probes_figure(with_grid(history_frame(rows), trials), pixel_accuracy=0.86)
    assert [ax.get_title() for ax in fig.axes] == ["means", "means + variances", "sampled latents"]
    for ax in fig.axes:
        lines = {line.get_label(): line for line in ax.get_lines()}
        np.testing.assert_allclose(lines["k=5"].get_xdata(), [1, 2, 5])
        np.testing.assert_allclose(lines["k=5"].get_ydata(), [0.51, 0.52, 0.55])
        assert set(lines["pixels"].get_ydata()) == {0.86}


def test_interpolation_figure_shows_every_image():
    rows = np.random.default_rng(0).random((5, 4, 28, 28))
    fig = interpolation_figure(rows, "t")
    assert len(fig.axes) == 20
    np.testing.assert_allclose(fig.axes[5].images[0].get_array(), rows[1, 1])
