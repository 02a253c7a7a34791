"""Aggregation over seeds, the figures' data, the summary table and the captions' verdicts, on
hand-built frames with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.aggregate import history_frame, missing_metrics, pivot_summary, summarize, trials_frame, with_grid
from analysis.captions import Caption, bulge_verdict, figure_captions, transition_verdict
from analysis.claims import gap_shrinks, same_count, saturation, variances_help, verdicts
from analysis.verdict_record import read_trials, verdicts_json, write_verdict_record
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


def test_active_components_axis_has_integer_ticks(trials):
    fig = active_components_figure(summarize(trials))
    ticks = fig.axes[0].get_yticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


def test_bounds_figure_draws_bound_and_log_likelihood_on_one_axis_per_k(trials):
    fig = bounds_figure(summarize(trials), bound_samples=10, is_samples=2000)
    assert [ax.get_title() for ax in fig.axes] == ["k = 5", "k = 10"]
    lines = errorbar_lines(fig.axes[0])
    assert set(lines) == {"IS log-likelihood (2000 samples)", "VR bound at alpha (10 samples)"}
    np.testing.assert_allclose(lines["IS log-likelihood (2000 samples)"].get_ydata(),
                               [np.mean([-94, -93]), np.mean([-85, -84, -83])])
    np.testing.assert_allclose(lines["VR bound at alpha (10 samples)"].get_ydata(), [-109, -109])


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
    history = with_grid(history_frame(rows), trials)
    fig = probes_figure(history[history["alpha"] == 1.0], pixel_accuracy=0.86, alpha=1.0)
    fig.canvas.draw()
    assert [ax.get_title() for ax in fig.axes] == ["means, alpha = 1", "means + variances, alpha = 1",
                                                   "sampled latents, alpha = 1"]
    for ax in fig.axes:
        lines = {line.get_label(): line for line in ax.get_lines()}
        np.testing.assert_allclose(lines["k=5"].get_xdata(), [1, 2, 5])
        np.testing.assert_allclose(lines["k=5"].get_ydata(), [0.51, 0.52, 0.55])
        assert set(lines["pixels"].get_ydata()) == {0.86}
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "5"]  # every probe epoch, as integers


def test_interpolation_figure_shows_every_image():
    rows = np.random.default_rng(0).random((5, 4, 28, 28))
    fig = interpolation_figure(rows, "t")
    assert len(fig.axes) == 20
    np.testing.assert_allclose(fig.axes[5].images[0].get_array(), rows[1, 1])


def test_summary_pivots_to_one_row_per_metric_and_a_column_per_k_and_alpha(trials):
    table = pivot_summary(summarize(trials))
    assert list(table.columns) == [(5, 0.0), (5, 1.0), (10, 0.0), (10, 1.0)]
    assert list(table.index) == ["test_vr_bound_alpha", "test_log_likelihood", "active_components"]
    assert table.loc["test_log_likelihood", (10, 1.0)] == "-79.0 ± 1.0 (3)"  # -80, -79, -78
    assert table.loc["test_log_likelihood", (5, 0.0)] == "-93.50 ± 0.71 (2)"  # the seed lacking it is not counted
    one_seed = pivot_summary(summarize(trials[trials["seed"] == 0]))
    assert one_seed.loc["active_components", (10, 1.0)] == "2 (1)"  # no std from one seed


def grid(metrics, alphas=(0.0, 0.5, 1.0), ks=(10, 20), seeds=(0, 1, 2, 3)) -> pd.DataFrame:
    """Finished trials whose metrics are ``metrics(alpha, k, seed)``."""
    return trials_frame({"run_id": f"r{a}_{k}_{s}", "status": "FINISHED", "alpha": a, "k": k, "seed": s,
                         **metrics(a, k, s)} for a in alphas for k in ks for s in seeds)


NOISE = (-0.2, 0.1, 0.2, -0.1)  # per seed: mean 0, std 0.18


def test_saturation_verdict_follows_the_data():
    saturating = grid(lambda a, k, s: {"active_components": 17 - 4 * a ** 2 + NOISE[s]}, alphas=(0, 0.2, 0.6, 1.0))
    verdict = saturation(saturating)
    assert verdict.outcome == "supported" and set(verdict.per_k) == {10, 20}
    assert verdict.per_k[10].text.startswith("k=10: supported: rises and levels off from alpha=1 to 0; rise +")
    assert verdict.per_k[10].effect.value == pytest.approx(4.0 * 1.1 / 1.0, rel=0.2)  # the fitted line's rise
    straight = saturation(grid(lambda a, k, s: {"active_components": 17 - 4 * a + NOISE[s]}))
    assert straight.outcome == "undecided" and "rises without levelling off" in straight.text  # not "partly"
    assert saturation(grid(lambda a, k, s: {"active_components": 13 + 4 * a + NOISE[s]})).outcome == "not supported"
    one_seed = saturation(grid(lambda a, k, s: {"active_components": 17 - 4 * a}, seeds=(0,)))
    assert one_seed.outcome == "undecided" and "one seed" in one_seed.text


def test_same_count_verdict_compares_latent_sizes():
    same = same_count(grid(lambda a, k, s: {"active_components": 15 + NOISE[s]}))
    assert same.outcome == "supported" and "within ±1 component (90% intervals" in same.text
    grows = same_count(grid(lambda a, k, s: {"active_components": k + NOISE[s]}))
    assert grows.outcome == "not supported" and "k=20 vs k=10 at alpha=0: +10.0" in grows.text
    assert grows.effect.value == pytest.approx(10.0) and grows.effect.interval[0] > 9
    assert grows.p_values["difference (Holm, smallest)"] < 0.05
    single = same_count(grid(lambda a, k, s: {"active_components": 15 + NOISE[s]}, ks=(30,)))
    assert single.outcome == "undecided" and "1 latent size" in single.text


def test_a_count_with_no_spread_decides_nothing_by_itself():
    """6, 6, 6 against 5, 5, 5 at one of 24 pairs: a standard error of 0 would call that difference
    certain; the count's rounding spread and Holm's correction keep it undecided with 3 seeds, and the
    verdict says how many seeds would decide it."""
    flat = grid(lambda a, k, s: {"active_components": 5.0 + (a == 0 and k == 20)}, alphas=(0, 0.2, 0.4, 0.6, 0.8, 1, 1.5, 2),
                ks=(20, 30, 40), seeds=(0, 1, 2))
    verdict = same_count(flat)
    assert verdict.outcome == "undecided" and verdict.seeds_to_decide > 3
    assert f"about {verdict.seeds_to_decide} seeds per grid point would decide it" in verdict.text


def test_gap_verdict_reads_the_gap_between_bound_and_log_likelihood():
    closing = gap_shrinks(grid(lambda a, k, s: {"test_log_likelihood": -91 + NOISE[s], "test_vr_bound_alpha": -94 - 3 * a}))
    assert closing.outcome == "supported"
    assert closing.per_k[10].text.startswith("k=10: supported: gap 6.00 nats at alpha=1, 3.00 at alpha=0")
    assert closing.per_k[10].effect.value == pytest.approx(3.0)
    widening = grid(lambda a, k, s: {"test_log_likelihood": -91 + NOISE[s], "test_vr_bound_alpha": -97 + 3 * a})
    assert gap_shrinks(widening).outcome == "not supported"


def test_variances_verdict_pairs_the_probes_of_each_trial():
    helps = grid(lambda a, k, s: {"final_probe_means": 0.90 + NOISE[s] / 10,
                                  "final_probe_means_variances": 0.92 + NOISE[s] / 10 + NOISE[(s + 1) % 4] / 100})
    verdict = variances_help(helps, 1.0)
    assert verdict.outcome == "supported" and verdict.per_k[10].effect.value == pytest.approx(0.02)
    hurts = grid(lambda a, k, s: {"final_probe_means": 0.92, "final_probe_means_variances": 0.90 + NOISE[s] / 100})
    assert variances_help(hurts, 1.0).outcome == "not supported"
    exact = grid(lambda a, k, s: {"final_probe_means": 0.90 + NOISE[s] / 10, "final_probe_means_variances": 0.92 + NOISE[s] / 10})
    assert variances_help(exact, 1.0).outcome == "undecided"  # every seed gains exactly 0.02: no spread
    assert variances_help(helps, None).outcome == "undecided"


def test_verdicts_are_keyed_by_claim_and_read_back_from_trials_csv(tmp_path):
    trials = grid(lambda a, k, s: {"active_components": 17 - 4 * a ** 2 + NOISE[s], "test_log_likelihood": -91 + NOISE[s],
                                   "test_vr_bound_alpha": -94 - 3 * a, "final_probe_means": 0.9 + NOISE[s] / 10,
                                   "final_probe_means_variances": 0.92 + NOISE[s] / 10 + NOISE[(s + 1) % 4] / 100})
    judged = verdicts(trials)
    assert list(judged) == ["a", "b", "c", "d"] and judged["d"].settings == {"probe_alpha": 1.0}
    write_verdict_record(trials, judged, tmp_path)
    assert list(pd.read_csv(tmp_path / "trials.csv").columns[:4]) == ["status", "alpha", "k", "seed"]
    again = verdicts(read_trials(tmp_path / "trials.csv"))
    assert verdicts_json(again) == (tmp_path / "verdicts.json").read_text()
    assert json.loads(verdicts_json(again))["b"]["per_k"]["10"]["outcome"] == judged["b"].per_k[10].outcome


def test_geometry_and_interpolation_verdicts():
    pairs = np.array([[-2.0, 0.5, 2.0, 0.5], [-1.0, 0.2, 1.5, 1.0]])
    assert bulge_verdict(pairs).startswith("Shown for 2 of 2 pairs drawn (the geodesic's sigma up to 1.00 above")
    rows = np.zeros((5, 5, 28, 28))
    rows[:, 3:] = 1.0  # every row jumps at one step
    assert transition_verdict(rows) == ("Cannot be judged from one image pair of one run. Measured: the largest step "
                                        "is 100% of the geodesic row's total change and 100% of the means line's "
                                        "(25% if even).")


def test_every_figure_gets_a_caption_with_its_claim_and_the_sweeps_epochs():
    trials = grid(lambda a, k, s: {"active_components": 17 - 4 * a ** 2 + NOISE[s],
                                   "test_log_likelihood": -91 + NOISE[s], "test_vr_bound_alpha": -94 - 3 * a,
                                   "final_probe_means": 0.9 + NOISE[s] / 10,
                                   "final_probe_means_variances": 0.92 + NOISE[s] / 10})
    rows = np.random.default_rng(0).random((5, 10, 28, 28))
    captions = figure_captions(verdicts(trials), epochs=30, epsilon=0.01, bound_samples=10, is_samples=2000, probe_alpha=1.0,
                               pairs=np.array([[-2.0, 0.5, 2.0, 0.5]]), interpolations=(rows, trials.iloc[-1]))
    assert list(captions) == ["fig1_spectrum", "fig2_active_components", "fig2_bounds", "fig3_probes", "fig4_geodesics",
                              "fig5_interpolations"]
    assert "saturate as alpha -> 0" in captions["fig2_active_components"].claim
    assert "bound gets closer to the log-likelihood" in captions["fig2_bounds"].claim
    assert "2000 samples" in captions["fig2_bounds"].shows and "alpha = 1 trials" in captions["fig3_probes"].shows
    assert "a1_k20_s3" in captions["fig5_interpolations"].shows
    assert captions["fig2_bounds"].verdict.endswith("After 30 epochs; the study trains 1000.")
    assert "After" not in captions["fig4_geodesics"].verdict  # geometry: no epochs involved
    no_probes = figure_captions(verdicts(trials), 1000, 0.01, 10, 2000, None, np.array([[-2.0, 0.5, 2.0, 0.5]]), None)
    assert set(no_probes) == {"fig1_spectrum", "fig2_active_components", "fig2_bounds", "fig4_geodesics"}
    assert "After" not in no_probes["fig2_bounds"].verdict  # the study's length: nothing to add


def test_report_page_shows_captions_a_table_per_k_and_no_red_when_nothing_is_missing(trials):
    from sweeps.config import load_sweep  # imports MLflow: only this test needs the sweeps package
    from sweeps.readers.report import render_html

    config = load_sweep("smoke")
    data = {"spec": "digits", "title": "UCI digits", "sha256": "7ec527b6dfdd" + "0" * 52, "side": [8, 8],
            "train_images": 1497, "test_images": 300, "labels": True}
    caption = Caption("Figure 2, left. what it draws", "Active components saturate as alpha -> 0.", "Supported: k=5 ...")
    judged = verdicts(trials)
    page = render_html(config, data, {"fig2_active_components": b"png"}, {"fig2_active_components": caption},
                       judged, summarize(trials), trials, problems=[])
    assert "<p><b>Claim tested:</b> Active components saturate as alpha -&gt; 0.</p>" in page
    assert "<p><b>This sweep:</b> Supported: k=5 ...</p>" in page
    assert page.index("<h3>k = 5</h3>") < page.index("<h3>k = 10</h3>")
    assert "<td>-79.0 ± 1.0 (3)</td>" in page and "<th>alpha = 1</th>" in page
    assert "<ul><li>none</li></ul>" in page and 'class="problems"' not in page
    assert "<b>Data:</b> UCI digits (digits): 1497 training and 300 test images of 8x8, labelled" in page
    assert f"<tr><th>(a)</th><td><b>{judged['a'].outcome}</b></td>" in page and "<th>(c) k=5</th>" in page
    failing = render_html(config, data, {}, {}, judged, summarize(trials), trials, problems=["a0_k5_s0: no finished run"])
    assert '<ul class="problems"><li>a0_k5_s0: no finished run</li></ul>' in failing
