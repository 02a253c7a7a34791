"""Matplotlib figures of the study, each a function of arrays or frames that returns a Figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # figures are written to files; no display is assumed
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from analysis.geodesics import fisher_rao_geodesic, straight_line


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
