"""Matplotlib figures of the study, each a function of arrays or frames that returns a Figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # figures are written to files; no display is assumed
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullFormatter, StrMethodFormatter

from analysis.geodesics import fisher_rao_geodesic, straight_line
from analysis.metrics import MetricName


def geodesic_figure(mu1, sigma1, mu2, sigma2, points: int = 100) -> Figure:
    """Figure 4: Fisher-Rao geodesics (solid) vs straight segments (dotted) in the (mu, sigma) half-plane.

    Takes 1-D arrays of endpoint pairs, one curve each.
    """
    t = np.linspace(0, 1, points)
    geo_mu, geo_sigma = fisher_rao_geodesic(mu1, sigma1, mu2, sigma2, t)
    line_mu, line_sigma = straight_line(mu1, sigma1, mu2, sigma2, t)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i in range(geo_mu.shape[1]):
        (curve,) = ax.plot(geo_mu[:, i], geo_sigma[:, i], "-", label="Fisher-Rao geodesic" if i == 0 else None)
        ax.plot(line_mu[:, i], line_sigma[:, i], ":", color=curve.get_color(), label="straight line" if i == 0 else None)
        ax.plot([line_mu[0, i], line_mu[-1, i]], [line_sigma[0, i], line_sigma[-1, i]], "o", color=curve.get_color())
    ax.set_xlabel(r"$\mu$")
    ax.set_ylabel(r"$\sigma$")
    ax.set_ylim(bottom=0)
    ax.set_title("Geodesics between univariate Gaussians vs straight lines")
    ax.legend()
    fig.tight_layout()
    return fig


def _panels(n: int, width: float = 4.5) -> tuple[Figure, list]:
    fig, axes = plt.subplots(1, n, figsize=(width * n, 3.8), squeeze=False)
    return fig, list(axes[0])


def spectrum_figure(spectra: pd.DataFrame, epsilon: float) -> Figure:
    """Figure 1: mean PCA eigenvalue per component, one curve per alpha, one panel per k (log scale).

    ``spectra`` has columns alpha, k, seed, step (component, 1-based), value.
    """
    ks = sorted(spectra["k"].unique())
    fig, axes = _panels(max(1, len(ks)))
    for ax, k in zip(axes, ks):
        panel = spectra[spectra["k"] == k].groupby(["alpha", "step"])["value"].mean().reset_index()
        for alpha, curve in panel.groupby("alpha"):
            ax.plot(curve["step"], curve["value"], marker=".", label=f"alpha={alpha:g}")
        ax.axhline(epsilon, color="k", linestyle="--", linewidth=1, label=f"epsilon={epsilon:g}")
        ax.set_yscale("log")
        ax.set_title(f"k = {k}")
        ax.set_xlabel("component")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finished(fig, axes, "PCA eigenvalue of posterior means", legend_size=7)


def _finished(fig: Figure, axes: list, ylabel: str, legend_size: int = 8) -> Figure:
    """A row of panels with the y label on the first and the legend on the last, laid out."""
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(fontsize=legend_size)
    fig.tight_layout()
    return fig


def _errorbar(ax, rows: pd.DataFrame, label: str, **style) -> None:
    """Summary rows (alpha, mean, std) as one line vs alpha with std error bars."""
    rows = rows.sort_values("alpha")
    ax.errorbar(rows["alpha"].to_numpy(float), rows["mean"].to_numpy(float), yerr=rows["std"].fillna(0).to_numpy(float),
                capsize=3, label=label, **style)


def _errorbar_by_k(ax, summary: pd.DataFrame, metric: str) -> None:
    for k, line in summary[summary["metric"] == metric].groupby("k"):
        _errorbar(ax, line, f"k={k}", marker="o")
    ax.set_xlabel("alpha")


def active_components_figure(summary: pd.DataFrame) -> Figure:
    """Figure 2 left: active components vs alpha, one line per k, error bars = std over seeds."""
    fig, (ax,) = _panels(1, 5.5)
    _errorbar_by_k(ax, summary, MetricName.active_components)
    ax.set_ylabel("active components (eigenvalue > epsilon)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    return fig


def bounds_figure(summary: pd.DataFrame, bound_samples: int, is_samples: int) -> Figure:
    """Figure 2 right: test VR bound (the trial's alpha) and IS log-likelihood vs alpha on one axis per k,
    so the gap between them, which the study says closes as alpha -> 0, is read off directly."""
    ks = sorted(summary["k"].unique())
    fig, axes = _panels(max(1, len(ks)))
    for ax, k in zip(axes, ks):
        rows = summary[summary["k"] == k]
        _errorbar(ax, rows[rows["metric"] == MetricName.test_log_likelihood], f"IS log-likelihood ({is_samples} samples)",
                  marker="o")
        _errorbar(ax, rows[rows["metric"] == MetricName.test_vr_bound_alpha], f"VR bound at alpha ({bound_samples} samples)",
                  marker="s", linestyle="--")
        ax.set_title(f"k = {k}")
        ax.set_xlabel("alpha")
    return _finished(fig, axes, "test nats per image")


PROBE_PANELS = {MetricName.probe_means: "means", MetricName.probe_means_variances: "means + variances", MetricName.probe_samples: "sampled latents"}


def probes_figure(probe_history: pd.DataFrame, pixel_accuracy: float | None, alpha: float) -> Figure:
    """Figure 3: probe accuracy vs epoch, a panel per feature set, a line per k, the pixel baseline.

    ``probe_history`` has columns k, key, step (epoch), value, for the trials of one ``alpha`` (named
    in the titles); seeds are averaged. The epoch axis is logarithmic with the probe epochs as ticks.
    """
    epochs = sorted(probe_history["step"].unique())
    fig, axes = _panels(3)
    for ax, (key, title) in zip(axes, PROBE_PANELS.items()):
        panel = probe_history[probe_history["key"] == key].groupby(["k", "step"])["value"].mean().reset_index()
        for k, line in panel.groupby("k"):
            ax.plot(line["step"], line["value"], marker="o", label=f"k={k}")
        if pixel_accuracy is not None:
            ax.axhline(pixel_accuracy, color="k", linestyle=":", label="pixels")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(FixedLocator(epochs))
        ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{title}, alpha = {alpha:g}")
        ax.set_xlabel("epoch")
    return _finished(fig, axes, "test accuracy")


INTERPOLATION_LABELS = ["pixels", "means line", "samples line", "geodesic, sampled", "geodesic, mean"]


def interpolation_figure(rows: np.ndarray, title: str = "") -> Figure:
    """Figure 5: the five interpolation rows [5, steps, height, width], labelled."""
    n_rows, steps = rows.shape[:2]
    fig, axes = plt.subplots(n_rows, steps, figsize=(steps * 0.9, n_rows * 1.0), squeeze=False)
    for r in range(n_rows):
        for c in range(steps):
            ax = axes[r][c]
            ax.imshow(rows[r, c], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        axes[r][0].set_ylabel(INTERPOLATION_LABELS[r], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
