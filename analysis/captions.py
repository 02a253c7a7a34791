"""The report's figure captions: what each figure shows, the study's claim it tests, and this sweep's
verdict on it (analysis/claims.py), or for Figures 4 and 5 what can be measured without a verdict."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.claims import CLAIMS, Verdict
from analysis.geodesics import fisher_rao_geodesic
from vae.config import grid_point_label

STUDY_EPOCHS = 1000  # the study trains every model this long (paper.md 2.1)
FIGURE_CLAIMS = {"fig1_spectrum": "a", "fig2_active_components": "b", "fig2_bounds": "c", "fig3_probes": "d"}


@dataclass(frozen=True)
class Caption:
    shows: str  # what the figure draws
    claim: str  # the study's claim it tests
    verdict: str  # whether this sweep supports it, with the numbers behind the answer


def bulge_verdict(pairs: np.ndarray) -> str:
    """Figure 4: for each drawn pair (mu1, sigma1, mu2, sigma2) with mu1 != mu2, the geodesic passes above
    the straight segment in the (mu, sigma) plane: its sigma exceeds the segment's at the same mu."""
    mu, sigma = fisher_rao_geodesic(*pairs.T, np.linspace(0, 1, 101))
    mu1, sigma1, mu2, sigma2 = pairs.T
    segment = sigma1 + (sigma2 - sigma1) * (mu - mu1) / (mu2 - mu1)
    bulge = (sigma - segment).max(axis=0)
    holds = int((bulge > 0).sum())
    return (f"{'Shown' if holds == len(pairs) else 'Not shown'} for {holds} of {len(pairs)} pairs drawn (the "
            f"geodesic's sigma up to {bulge.max():.2f} above the segment's at the same mu). This is geometry of "
            "the Gaussian family; the sweep's data do not enter.")


def sharpness(row: np.ndarray) -> float:
    """Largest single step of an interpolation row as a share of its total change (1/(steps-1) if even)."""
    steps = np.linalg.norm(np.diff(row.reshape(len(row), -1), axis=0), axis=1)
    return float(steps.max() / steps.sum()) if steps.sum() > 0 else 0.0


def transition_verdict(rows: np.ndarray) -> str:
    """Figure 5: one image pair measures, but cannot establish, a sharper geodesic transition."""
    line, geodesic = sharpness(rows[1]), sharpness(rows[4])
    return (f"Cannot be judged from one image pair of one run. Measured: the largest step is {geodesic:.0%} of the "
            f"geodesic row's total change and {line:.0%} of the means line's ({1 / (rows.shape[1] - 1):.0%} if even).")


def verdict_line(verdict: Verdict, epochs: int) -> str:
    """The verdict's one line, capitalised, with the training length when it is short of the study's."""
    line = verdict.text[0].upper() + verdict.text[1:] + "."
    if epochs < STUDY_EPOCHS:
        line += f" After {epochs} epochs; the study trains {STUDY_EPOCHS}."
    return line


def figure_captions(verdicts: dict[str, Verdict], epochs: int, epsilon: float, bound_samples: int, is_samples: int,
                    probe_alpha: float | None, pairs: np.ndarray, interpolations: tuple[np.ndarray, pd.Series] | None,
                    data: str = "MNIST") -> dict[str, Caption]:
    """A caption per figure stem of the report; ``verdicts`` from ``analysis.claims.verdicts``;
    ``interpolations`` = (rows, the trial's row) of Figure 5; ``data`` names the data set in the captions of
    the figures drawn from it."""
    shows = {
        "fig1_spectrum":
            f"Figure 1. PCA eigenvalues of the test-set posterior means, mean over seeds: a curve per alpha, a panel "
            f"per latent size k, log scale; the dashed line is epsilon = {epsilon:g}, above which a component "
            "carries information.",
        "fig2_active_components":
            f"Figure 2, left. Active components (PCA eigenvalues > {epsilon:g}) vs alpha, a line per k, error bars = "
            "std over seeds. alpha = 1 is the ELBO, alpha = 0 the IWAE bound.",
        "fig2_bounds":
            f"Figure 2, right. Test VR bound at the trial's own alpha ({bound_samples} samples) and the importance-"
            f"sampling estimate of the log-likelihood ({is_samples} samples) vs alpha, on one axis per k, error "
            "bars = std over seeds.",
    }
    if probe_alpha is not None:
        shows["fig3_probes"] = (
            f"Figure 3. Test accuracy of logistic-regression probes fit during training on the posterior means, "
            f"means + variances, and sampled latents, for the alpha = {probe_alpha:g} trials (the study shows the "
            "KL VAE, alpha = 1), a line per k, mean over seeds; dotted: the same probe on binarised pixels.")
    captions = {stem: Caption(f"{text} Data: {data}.", CLAIMS[FIGURE_CLAIMS[stem]],
                              verdict_line(verdicts[FIGURE_CLAIMS[stem]], epochs)) for stem, text in shows.items()}
    captions["fig4_geodesics"] = Caption(
        "Figure 4. Fisher-Rao geodesics (solid) and straight segments (dotted) between pairs of univariate "
        "Gaussians in the (mu, sigma) half-plane: illustrative pairs, not data of this sweep.",
        "Along the geodesic the standard deviation rises above the straight line's (more variance mid-way).",
        bulge_verdict(pairs))
    if interpolations is not None:
        rows, trial = interpolations
        captions["fig5_interpolations"] = Caption(
            f"Figure 5. Interpolations between two {data} test images ({rows.shape[2]}x{rows.shape[3]}) by trial "
            f"{grid_point_label(trial.alpha, trial.k, trial.seed)} (rows: pixels; line between means; line between "
            "samples; geodesic, sampled; geodesic at its mean).",
            "Decoding along the geodesic without sampling gives a slightly sharper transition than the line "
            "between the means.",
            transition_verdict(rows))
    return captions
