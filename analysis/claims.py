"""The study's four claims judged on a sweep's trials (paper.md 2.1-2.3, science.md 3-5), each verdict
from a test whose error rates are measured by simulation (tests/test_verdict_calibration.py):

- (a) the active components do not depend on k: equivalence within a margin (TOST on every pair of
  latent sizes at every alpha), a difference after Holm's correction, or undecided;
- (b) they grow as alpha falls from 1 and level off towards 0: the fitted rise and the curvature
  over alpha in [0, 1], per k;
- (c) the gap between the IS log-likelihood and the VR bound shrinks as alpha falls: its fitted change
  over alpha >= 0, per k;
- (d) adding the posterior variances raises probe accuracy: the paired gain per trial, per k.

Every contrast takes each grid point's own spread over its seeds (Welch-Satterthwaite t), a count's
never below its rounding. A claim judged per k corrects over its latent sizes with Holm. Absence of
evidence is "undecided", with the seeds that would decide it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import pandas as pd

from analysis.contrasts import LEVEL, Cells, Estimate, cells_of, curvature_weights, holm, slope_weights
from analysis.metrics import MetricName
from analysis.settings import EQUIVALENCE_MARGIN as MARGIN

Outcome = Literal["supported", "not supported", "undecided", "mixed"]
CLAIMS = {
    "a": "The number of components carrying information does not depend on k (the study: the same for "
         "k = 30, 40 and 50).",
    "b": "Active components saturate as alpha -> 0: the count grows as alpha falls from 1, then levels off.",
    "c": "As alpha -> 0 the bound gets closer to the log-likelihood (the gap between the two lines shrinks).",
    "d": "Adding the posterior variances to the means raises probe accuracy.",
}
COUNT_FLOOR = 1 / math.sqrt(12)  # an integer count's rounding spread: the least a point's spread may be


@dataclass(frozen=True)
class Effect:
    """What a verdict measured: a value with its 95% interval (None when the spread is unknown)."""

    name: str
    value: float
    interval: tuple[float, float] | None
    unit: str

    def text(self) -> str:
        inside = f" (95% interval {self.interval[0]:+.3g} to {self.interval[1]:+.3g})" if self.interval else ""
        return f"{self.name} {self.value:+.3g} {self.unit}{inside}"


@dataclass(frozen=True)
class Verdict:
    """One claim's answer on one sweep. ``p_values`` are those of the tests that decide it, adjusted for
    the claim's family (Holm); ``seeds`` the fewest and most seeds at a grid point used; a claim judged
    per latent size keeps each k's verdict in ``per_k`` and is "mixed" when they differ."""

    claim: str
    outcome: Outcome
    text: str
    test: str
    effect: Effect | None = None
    also: tuple[Effect, ...] = ()
    p_values: dict[str, float] = field(default_factory=dict)
    seeds: tuple[int, int] = (0, 0)
    seeds_to_decide: int | None = None
    per_k: dict[int, Verdict] = field(default_factory=dict)
    settings: dict[str, float | None] = field(default_factory=dict)  # what the rule was given: margin, probe alpha

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``per_k`` keyed by str(k)."""
        data = asdict(self)
        data["per_k"] = {str(k): v.to_dict() for k, v in self.per_k.items()}
        return data


def undecided(claim: str, why: str, test: str, seeds: tuple[int, int] = (0, 0)) -> Verdict:
    return Verdict(claim, "undecided", f"undecided: {why}", test, seeds=seeds)


def effect(name: str, estimate: Estimate, unit: str) -> Effect:
    return Effect(name, estimate.value, estimate.interval(), unit)


def components(count: float) -> str:
    return "component" if count == 1 else "components"


def seeds_phrase(needed: int | None, seeds: tuple[int, int]) -> str:
    if needed is None:
        return ""
    if needed <= seeds[1]:
        needed = seeds[1] + 1
    return f"; about {needed} seeds per grid point would decide it at this spread"


def unjudged(claim: str, cells: Cells, test: str, nothing: str) -> Verdict | None:
    """Undecided, saying why, when no grid point has the metric (``nothing``) or one has a single seed."""
    if not cells.values:
        return undecided(claim, nothing, test)
    if cells.seeds()[0] < 2:
        return undecided(claim, "a grid point has one seed: its spread is unknown", test, cells.seeds())
    return None


def same_count(trials: pd.DataFrame, margin: float = MARGIN) -> Verdict:
    """(a): at every alpha, every pair of latent sizes has its difference of mean active components inside
    ±margin (90% intervals: supported, needing no correction), or one pair differs after Holm's correction
    over all pairs (not supported); else undecided."""
    test = (f"mean active components per grid point, Welch t; TOST within ±{margin:g} on every pair of latent "
            "sizes at every alpha; two-sided tests of the same pairs with Holm's correction")
    cells = cells_of(trials, trials[MetricName.active_components], COUNT_FLOOR)
    seeds = cells.seeds()
    ks = sorted({k for _, k in cells.points})
    if len(ks) < 2:
        return undecided("a", f"the sweep has {len(ks)} latent size{'s' * (len(ks) != 1)}; the claim compares several",
                         test, seeds)
    if reason := unjudged("a", cells, test, "no finished trial has active components"):
        return reason
    pairs = [(alpha, small, large) for alpha in sorted({a for a, _ in cells.points})
             for small in ks for large in ks if small < large and {(alpha, small), (alpha, large)} <= set(cells.points)]
    estimates = [cells.contrast({(a, large): 1.0, (a, small): -1.0}) for a, small, large in pairs]
    adjusted = holm([e.p_differs() for e in estimates])
    within = max(e.p_within(margin) for e in estimates)
    worst = max(range(len(pairs)), key=lambda i: abs(estimates[i].value))
    label = "difference k={2} - k={1} at alpha={0:g}"
    biggest = effect(label.format(*pairs[worst]), estimates[worst], "components")
    p_values = {"difference (Holm, smallest)": min(adjusted), "equivalence (TOST, largest)": within}
    common = dict(test=test, effect=biggest, p_values=p_values, seeds=seeds)
    if min(adjusted) < LEVEL:
        found = [f"k={large} vs k={small} at alpha={a:g}: {e.value:+.1f}"
                 for (a, small, large), e, p in zip(pairs, estimates, adjusted) if p < LEVEL]
        return Verdict("a", "not supported", f"not supported: {len(found)} of {len(pairs)} differences between latent "
                       f"sizes are significant after Holm's correction ({'; '.join(found[:3])}"
                       f"{'; ...' if len(found) > 3 else ''} components)", **common)
    if within < LEVEL:
        return Verdict("a", "supported", f"supported: at every alpha every pair of latent sizes ({len(pairs)} "
                       f"differences) agrees within ±{margin:g} {components(margin)} (90% intervals; largest "
                       f"difference {biggest.value:+.2f})", **common)
    distance = margin - abs(estimates[worst].value)  # equivalence needs the true difference inside the margin
    needed = (estimates[worst].seeds_to_show(distance, LEVEL) if distance > 0 else
              estimates[worst].seeds_to_show(abs(estimates[worst].value), LEVEL / (2 * len(pairs))))
    return Verdict("a", "undecided", f"undecided: no difference between latent sizes is significant after Holm's "
                   f"correction over {len(pairs)}, nor is every one shown within ±{margin:g} {components(margin)} (largest: "
                   f"{biggest.text()}){seeds_phrase(needed, seeds)}", seeds_to_decide=needed, **common)


Judged = tuple[Estimate, float, float, str, tuple[Estimate, ...]]


def per_k_verdict(claim: str, test: str, judged: dict[int, Judged], seeds: tuple[int, int], unit: str,
                  names: tuple[str, ...]) -> Verdict:
    """Combine per-k tests: ``judged[k]`` = (the main estimate, p of the claim, p against it, what the data
    show, further estimates the claim needs), the estimates named by ``names``. Each family (for,
    against) is Holm-corrected over the latent sizes; an undecided k needs the seeds its weakest
    estimate needs."""
    ks = sorted(judged)
    p_for = dict(zip(ks, holm([judged[k][1] for k in ks])))
    p_against = dict(zip(ks, holm([judged[k][2] for k in ks])))
    per_k = {}
    for k in ks:
        estimate, _, _, shape, more = judged[k]
        main, *also = [effect(name, e, unit) for name, e in zip(names, (estimate, *more))]
        p_values = {"for the claim (Holm over k)": p_for[k], "against it (Holm over k)": p_against[k]}
        measured = "; ".join(e.text() for e in (main, *also))
        if p_for[k] < LEVEL:
            outcome, needed, why = "supported", None, ""
        elif p_against[k] < LEVEL:
            outcome, needed, why = "not supported", None, ""
        elif not all(e.decides for e in (estimate, *more)):
            outcome, needed, why = "undecided", None, "; its seeds agree exactly, so there is no spread to judge by"
        else:
            outcome = "undecided"
            needed = max((e.seeds_to_show(abs(e.value), LEVEL / len(ks)) or 0) for e in (estimate, *more)) or None
            why = seeds_phrase(needed, seeds)
        text = f"k={k}: {outcome}: {shape}; {measured}{why}"
        per_k[k] = Verdict(claim, outcome, text, test, main, tuple(also), p_values, seeds, needed)
    outcomes = {v.outcome for v in per_k.values()}
    overall: Outcome = outcomes.pop() if len(outcomes) == 1 else "mixed"
    needed = max((v.seeds_to_decide for v in per_k.values() if v.seeds_to_decide), default=None)
    text = f"{overall}: " + "; ".join(v.text.replace(f": {v.outcome}:", f" {v.outcome}:", 1) for v in per_k.values())
    return Verdict(claim, overall, text, test, seeds=seeds, seeds_to_decide=needed, per_k=per_k)


def saturation(trials: pd.DataFrame, margin: float = MARGIN) -> Verdict:
    """(b), per k over the alphas in [0, 1]: the least-squares line's rise from the largest alpha to the
    smallest is positive and the least-squares parabola is concave (levels off towards 0): both one-sided,
    an intersection-union test. Against: a rise shown below ``margin`` (no growth worth a component) or a
    parabola shown convex (steepening towards 0), Bonferroni over the two."""
    test = ("least-squares rise and curvature of mean active components over alpha in [0, 1], Welch t; "
            "one-sided tests (both needed for the claim), Holm over k")
    cells = cells_of(trials, trials[MetricName.active_components], COUNT_FLOOR).where(lambda alpha: 0 <= alpha <= 1)
    seeds = cells.seeds()
    if reason := unjudged("b", cells, test, "no finished trial with active components at an alpha in [0, 1]"):
        return reason
    judged = {}
    for k in sorted({k for _, k in cells.points}):
        alphas = sorted(a for a, kk in cells.points if kk == k)
        if len(alphas) < 3:
            return undecided("b", f"k={k} has {len(alphas)} alphas in [0, 1]; a rise and a levelling off need 3",
                             test, seeds)
        rise = cells.contrast({(a, k): -w for a, w in slope_weights(alphas).items()})
        bend = cells.contrast({(a, k): -w for a, w in curvature_weights(alphas).items()})
        p_for = max(rise.p_greater(), bend.p_greater())
        p_against = min(1.0, 2 * min(rise.p_less(margin), bend.p_less()))
        shape = ("rises and levels off" if rise.value > 0 and bend.value > 0 else
                 "rises without levelling off" if rise.value > 0 else "does not rise")
        judged[k] = (rise, p_for, p_against, f"{shape} from alpha={alphas[-1]:g} to {alphas[0]:g}", (bend,))
    # concavity: minus the least-squares parabola's alpha^2 coefficient
    return per_k_verdict("b", test, judged, seeds, "components", ("rise", "concavity"))


def gap_shrinks(trials: pd.DataFrame) -> Verdict:
    """(c), per k over the alphas >= 0 (below 0 the bound need not stay under the log-likelihood): the
    least-squares change of the gap log-likelihood - bound from the smallest alpha to the largest is
    positive (for), or negative (against); one-sided Welch t tests, Holm over k."""
    test = ("least-squares change of the gap (IS log-likelihood - VR bound) over alpha >= 0, Welch t; "
            "one-sided tests, Holm over k")
    gap = trials[MetricName.test_log_likelihood] - trials[MetricName.test_vr_bound_alpha]
    cells = cells_of(trials, gap).where(lambda alpha: alpha >= 0)
    seeds = cells.seeds()
    if reason := unjudged("c", cells, test, "no finished trial with both the log-likelihood and the bound at an alpha >= 0"):
        return reason
    judged = {}
    for k in sorted({k for _, k in cells.points}):
        alphas = sorted(a for a, kk in cells.points if kk == k)
        if len(alphas) < 2:
            return undecided("c", f"k={k} has one alpha >= 0", test, seeds)
        change = cells.contrast({(a, k): w for a, w in slope_weights(alphas).items()})
        shape = (f"gap {cells.mean((alphas[-1], k)):.2f} nats at alpha={alphas[-1]:g}, "
                 f"{cells.mean((alphas[0], k)):.2f} at alpha={alphas[0]:g}")
        judged[k] = (change, change.p_greater(), change.p_less(), shape, ())
    return per_k_verdict("c", test, judged, seeds, "nats", ("gap change from the smallest alpha to the largest",))


def variances_help(trials: pd.DataFrame, probe_alpha: float | None) -> Verdict:
    """(d), per k at ``probe_alpha``: the paired gain (means + variances probe - means probe of one trial)
    has a positive mean (for) or a negative one (against); one-sample t tests, Holm over k."""
    test = "paired gain in probe accuracy per trial; one-sample one-sided t tests, Holm over k"
    if probe_alpha is None:
        return undecided("d", "no trial has probe accuracies (no labels, or no probes yet)", test)
    shown = trials[trials["alpha"] == probe_alpha]
    gains = shown[MetricName.final_probe_means_variances] - shown[MetricName.final_probe_means]
    cells = cells_of(shown, gains)
    seeds = cells.seeds()
    if reason := unjudged("d", cells, test, f"no finished trial at alpha={probe_alpha:g} has both final probes"):
        return reason
    judged = {}
    for point in cells.points:
        gain = cells.contrast({point: 1.0})
        judged[point[1]] = (gain, gain.p_greater(), gain.p_less(),
                            f"{len(cells.values[point])} seeds at alpha={probe_alpha:g}", ())
    return per_k_verdict("d", test, judged, seeds, "accuracy", ("mean gain",))


def nearest_to_one(alphas: Iterable[float]) -> float | None:
    """Figure 3's alpha: the study's Figure 3 is the KL VAE (alpha = 1); else the alpha nearest it."""
    values = sorted(set(alphas), key=lambda a: (abs(a - 1.0), a))
    return float(values[0]) if values else None


def probe_alpha_of(trials: pd.DataFrame) -> float | None:
    """``nearest_to_one`` of the finished trials that have final probe accuracies."""
    return nearest_to_one(trials[trials["status"] == "FINISHED"].dropna(subset=[MetricName.final_probe_means])["alpha"])


def verdicts(trials: pd.DataFrame, probe_alpha: float | None = None, margin: float = MARGIN) -> dict[str, Verdict]:
    """The four claims' verdicts, keyed "a" to "d", from the report's trials frame (status, alpha, k, seed
    and the final metrics by MetricName); ``probe_alpha`` defaults to ``probe_alpha_of(trials)``."""
    alpha = probe_alpha if probe_alpha is not None else probe_alpha_of(trials)
    judged = {"a": same_count(trials, margin), "b": saturation(trials, margin), "c": gap_shrinks(trials),
              "d": variances_help(trials, alpha)}
    settings = {"a": {"margin": margin}, "b": {"margin": margin}, "c": {}, "d": {"probe_alpha": alpha}}
    return {claim: replace(verdict, settings=settings[claim]) for claim, verdict in judged.items()}
