"""The report's figure captions: what each figure shows, the study's claim it tests, and whether this
sweep supports it, computed from the trials (paper.md 2.1-2.3, science.md 3-5).

A verdict compares means over seeds: a difference counts only beyond ``Z`` standard errors, and a
grid point with fewer than ``MIN_SEEDS`` seeds gives no verdict ("cannot be judged") rather than a
guess. Verdicts say what the data show, whichever way; the study's answer is never assumed.
"""

from __future__ import annotations

from analysis.metrics import MetricName
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.aggregate import trial_label
from analysis.geodesics import fisher_rao_geodesic

MIN_SEEDS = 2  # below this a mean has no standard error
Z = 2.0  # a difference of means counts beyond this many standard errors
STUDY_EPOCHS = 1000  # the study trains every model this long (paper.md 2.1)
CANNOT = "Cannot be judged"


@dataclass(frozen=True)
class Caption:
    shows: str  # what the figure draws
    claim: str  # the study's claim it tests
    verdict: str  # whether this sweep supports it, with the numbers behind the answer


def significant(diff: float, se: float) -> int:
    """+1 or -1 when ``diff`` is beyond Z standard errors, else 0."""
    return int(np.sign(diff)) if abs(diff) > Z * se else 0


def contrast(terms: list[tuple[float, pd.Series]]) -> tuple[int, float, float]:
    """(significant sign, value, standard error) of sum(weight * mean(sample)) over independent samples."""
    value = float(sum(w * sample.mean() for w, sample in terms))
    se = math.sqrt(sum(w ** 2 * sample.var(ddof=1) / len(sample) for w, sample in terms))
    return significant(value, se), value, se


def difference(a: pd.Series, b: pd.Series) -> tuple[int, float, float]:
    """``contrast`` of mean(a) - mean(b)."""
    return contrast([(1.0, a), (-1.0, b)])


def by_point(trials: pd.DataFrame, values: pd.Series) -> dict[tuple[float, int], pd.Series]:
    """Finished trials' ``values`` (indexed like ``trials``) per (alpha, k), NaNs left out."""
    finished = trials["status"] == "FINISHED"
    frame = trials.loc[finished, ["alpha", "k"]].assign(value=values[finished]).dropna(subset=["value"])
    return {(float(a), int(k)): group["value"] for (a, k), group in frame.groupby(["alpha", "k"])}


def too_few_seeds(points: dict[tuple[float, int], pd.Series]) -> str | None:
    """Why these points cannot be compared, or None."""
    if not points:
        return f"{CANNOT}: no finished trial has the metric."
    thin = sorted(p for p, values in points.items() if len(values) < MIN_SEEDS)
    if thin:
        fewest = min(len(points[p]) for p in thin)
        return (f"{CANNOT}: {len(thin)} of {len(points)} grid points have fewer than {MIN_SEEDS} finished seeds "
                f"(as few as {fewest}), so there is no spread to tell a trend from noise.")
    return None


def combine(outcomes: list[str], details: list[str]) -> str:
    """The outcome every k shares ('Supported', 'Not supported'...), else 'Mixed', with the per-k numbers."""
    overall = outcomes[0] if len(set(outcomes)) == 1 else "Mixed"
    return f"{overall}: " + "; ".join(details) + "."


def saturation_verdict(trials: pd.DataFrame) -> str:
    """Figure 2 left, over the alphas in [0, 1] of each k: more active components at the smallest alpha
    than at the largest (a rise), and a slope between the two smallest alphas below the average slope
    (levelling off; a straight rise has equal slopes)."""
    points = by_point(trials, trials[MetricName.active_components])
    if reason := too_few_seeds(points):
        return reason
    outcomes, details = [], []
    for k in sorted({k for _, k in points}):
        alphas = sorted(a for a, kk in points if kk == k and 0 <= a <= 1)
        if len(alphas) < 3:
            return f"{CANNOT}: k={k} has {len(alphas)} alphas in [0, 1]; a rise and a plateau need at least 3."
        low, near, high = alphas[0], alphas[1], alphas[-1]
        rise, gain, gain_se = difference(points[low, k], points[high, k])
        # average slope minus the slope at the low end, both in components per unit of alpha towards 0
        bend, _, _ = contrast([(1 / (high - low) - 1 / (near - low), points[low, k]),
                               (1 / (near - low), points[near, k]), (-1 / (high - low), points[high, k])])
        end_slope = (points[low, k].mean() - points[near, k].mean()) / (near - low)
        outcomes.append("Supported" if rise > 0 and bend > 0 else "Partly supported" if rise > 0 else "Not supported")
        shape = ("rises, then levels off" if rise > 0 and bend > 0 else
                 "rises without levelling off" if rise > 0 else "does not rise")
        details.append(f"k={k} {shape}: {points[high, k].mean():.1f} at alpha={high:g}, {points[low, k].mean():.1f} at "
                       f"alpha={low:g} ({gain:+.1f} ± {gain_se:.1f}); {end_slope:.1f} components per unit alpha "
                       f"between alpha={near:g} and {low:g} against {gain / (high - low):.1f} on average")
    return combine(outcomes, details)


def same_count_verdict(trials: pd.DataFrame) -> str:
    """Figure 1: at each alpha the active components of every k agree with the smallest k's."""
    points = by_point(trials, trials[MetricName.active_components])
    if reason := too_few_seeds(points):
        return reason
    ks = sorted({k for _, k in points})
    if len(ks) < 2:
        return f"{CANNOT}: the sweep has one latent size (k={ks[0]})."
    differing, largest = [], 0.0
    for alpha in sorted({a for a, _ in points}):
        sizes = sorted(k for a, k in points if a == alpha)
        for k in sizes[1:]:
            sign, diff, se = difference(points[alpha, k], points[alpha, sizes[0]])
            largest = max(largest, abs(diff))
            if sign:
                differing.append(f"alpha={alpha:g}: k={k} has {diff:+.1f} ± {se:.1f} components vs k={sizes[0]}")
    if differing:
        return "Not supported: " + "; ".join(differing) + "."
    return (f"Supported: at every alpha the counts for k={', '.join(map(str, ks))} agree within {Z:g} standard "
            f"errors (largest difference {largest:.1f} components).")


def gap_verdict(trials: pd.DataFrame) -> str:
    """Figure 2 right: the gap IS log-likelihood - VR bound is smaller at the smallest alpha >= 0 than at
    the largest (for alpha < 0 the bound need not stay below the log-likelihood)."""
    points = by_point(trials, trials[MetricName.test_log_likelihood] - trials[MetricName.test_vr_bound_alpha])
    points = {(a, k): v for (a, k), v in points.items() if a >= 0}
    if reason := too_few_seeds(points):
        return reason
    outcomes, details = [], []
    for k in sorted({k for _, k in points}):
        alphas = sorted(a for a, kk in points if kk == k)
        if len(alphas) < 2:
            return f"{CANNOT}: k={k} has one alpha >= 0."
        low, high = alphas[0], alphas[-1]
        sign, diff, se = difference(points[high, k], points[low, k])
        outcomes.append("Supported" if sign > 0 else "Not supported")
        details.append(f"k={k}: gap {points[high, k].mean():.2f} nats at alpha={high:g}, {points[low, k].mean():.2f} "
                       f"at alpha={low:g} ({-diff:+.2f} ± {se:.2f})")
    return combine(outcomes, details)


def variances_verdict(trials: pd.DataFrame, alpha: float) -> str:
    """Figure 3: the means + variances probe beats the means probe, paired per trial of ``alpha``."""
    shown = trials[trials["alpha"] == alpha]
    gains = shown[MetricName.final_probe_means_variances] - shown[MetricName.final_probe_means]
    points = by_point(shown, gains)
    if reason := too_few_seeds(points):
        return reason
    outcomes, details = [], []
    for (_, k), gain in sorted(points.items()):
        se = gain.std(ddof=1) / math.sqrt(len(gain))
        outcomes.append("Supported" if significant(gain.mean(), se) > 0 else "Not supported")
        details.append(f"k={k}: {gain.mean():+.3f} ± {se:.3f} accuracy over {len(gain)} seeds")
    return combine(outcomes, details)


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
    return (f"{CANNOT} from one image pair of one run. Measured: the largest step is {geodesic:.0%} of the "
            f"geodesic row's total change and {line:.0%} of the means line's ({1 / (rows.shape[1] - 1):.0%} if even).")


def with_epochs(verdict: str, epochs: int) -> str:
    if epochs >= STUDY_EPOCHS or verdict.startswith(CANNOT):
        return verdict
    return f"{verdict} After {epochs} epochs; the study trains {STUDY_EPOCHS}."


def figure_captions(trials: pd.DataFrame, epochs: int, epsilon: float, bound_samples: int, is_samples: int,
                    probe_alpha: float | None, pairs: np.ndarray, interpolations: tuple[np.ndarray, pd.Series] | None,
                    data: str = "MNIST") -> dict[str, Caption]:
    """A caption per figure stem of the report; ``interpolations`` = (rows, the trial's row) of Figure 5;
    ``data`` names the data set in the captions of the figures drawn from it."""
    captions = {
        "fig1_spectrum": Caption(
            f"Figure 1. PCA eigenvalues of the test-set posterior means, mean over seeds: a curve per alpha, a panel "
            f"per latent size k, log scale; the dashed line is epsilon = {epsilon:g}, above which a component "
            "carries information.",
            "The number of components carrying information does not depend on k (the study: the same for "
            "k = 30, 40 and 50).",
            with_epochs(same_count_verdict(trials), epochs)),
        "fig2_active_components": Caption(
            f"Figure 2, left. Active components (PCA eigenvalues > {epsilon:g}) vs alpha, a line per k, error bars = "
            "std over seeds. alpha = 1 is the ELBO, alpha = 0 the IWAE bound.",
            "Active components saturate as alpha -> 0: the count grows as alpha falls from 1, then levels off.",
            with_epochs(saturation_verdict(trials), epochs)),
        "fig2_bounds": Caption(
            f"Figure 2, right. Test VR bound at the trial's own alpha ({bound_samples} samples) and the importance-"
            f"sampling estimate of the log-likelihood ({is_samples} samples) vs alpha, on one axis per k, error "
            "bars = std over seeds.",
            "As alpha -> 0 the bound gets closer to the log-likelihood (the gap between the two lines shrinks).",
            with_epochs(gap_verdict(trials), epochs)),
    }
    if probe_alpha is not None:
        captions["fig3_probes"] = Caption(
            f"Figure 3. Test accuracy of logistic-regression probes fit during training on the posterior means, "
            f"means + variances, and sampled latents, for the alpha = {probe_alpha:g} trials (the study shows the "
            "KL VAE, alpha = 1), a line per k, mean over seeds; dotted: the same probe on binarised pixels.",
            "Adding the posterior variances to the means raises probe accuracy.",
            with_epochs(variances_verdict(trials, probe_alpha), epochs))
    captions = {stem: Caption(f"{caption.shows} Data: {data}.", caption.claim, caption.verdict)
                for stem, caption in captions.items()}
    captions["fig4_geodesics"] = Caption(
        "Figure 4. Fisher-Rao geodesics (solid) and straight segments (dotted) between pairs of univariate "
        "Gaussians in the (mu, sigma) half-plane: illustrative pairs, not data of this sweep.",
        "Along the geodesic the standard deviation rises above the straight line's (more variance mid-way).",
        bulge_verdict(pairs))
    if interpolations is not None:
        rows, trial = interpolations
        captions["fig5_interpolations"] = Caption(
            f"Figure 5. Interpolations between two {data} test images ({rows.shape[2]}x{rows.shape[3]}) by trial "
            f"{trial_label(trial.alpha, trial.k, trial.seed)} (rows: pixels; line between means; line between "
            "samples; geodesic, sampled; geodesic at its mean).",
            "Decoding along the geodesic without sampling gives a slightly sharper transition than the line "
            "between the means.",
            transition_verdict(rows))
    return captions
