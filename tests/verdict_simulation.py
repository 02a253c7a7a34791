"""Simulated sweeps whose truth is set, to measure the verdict rules' error rates and power (the
calibration test, and the table in docs/results.md: `python tests/verdict_simulation.py`).

Each scenario draws the digits grid (8 alphas x 3 latent sizes) with a given number of seeds and the
metrics' own shapes: integer counts of active components (a true mean plus seed noise, rounded),
a log-likelihood - bound gap whose seed spread grows with alpha, and probe accuracies on 300 test
images (steps of 1/300) whose means and means + variances probes share a seed's noise.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from analysis.claims import gap_shrinks, same_count, saturation, variances_help  # noqa: E402
from analysis.metrics import MetricName  # noqa: E402

ALPHAS = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0])
KS = np.array([20, 30, 40])
TEST_IMAGES = 300
PROBE_ALPHA = 1.0
Truth = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (alpha, k) -> the metric's true mean


def flat(alpha: np.ndarray, k: np.ndarray) -> np.ndarray:
    return np.full(alpha.shape, 5.0)


def alpha_only(alpha: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Counts that fall linearly from 7 at alpha 0 to 4 at alpha 1 and keep falling: no k effect."""
    return 7.0 - 3.0 * alpha


def k_effect(size: float) -> Truth:
    """``alpha_only`` with ``size`` more components at the smallest latent size."""
    return lambda alpha, k: alpha_only(alpha, k) + size * (k == KS.min())


def saturating(alpha: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Rises by 3 from alpha 1 to 0 and levels off towards 0 (a concave parabola), flat beyond 1."""
    a = np.minimum(alpha, 1.0)
    return 4.0 + 3.0 * (1.0 - a ** 2)


def gap_change(size: float) -> Truth:
    """A gap of 0.3 nats at alpha 0 growing linearly by ``size`` up to alpha 2."""
    return lambda alpha, k: 0.3 + size * alpha / ALPHAS.max()


def constant(value: float) -> Truth:
    return lambda alpha, k: np.full(alpha.shape, value)


@dataclass(frozen=True)
class Scenario:
    claim: str  # "a" to "d"
    name: str  # the truth in words
    truth: Truth  # the claim's metric's true mean (counts, gap in nats, or probe gain)
    seeds: int
    wrong: str | None  # the outcome that would be wrong here ("supported" / "not supported"), else None
    found: str | None  # the outcome that finds the effect, for a power scenario
    spread: float = 0.6  # seed spread of the metric (counts; nats and accuracy set below)

    def draw(self, rng: np.random.Generator) -> pd.DataFrame:
        """One simulated sweep: every grid point finished, each with ``seeds`` seeds."""
        alpha = np.repeat(ALPHAS, len(KS) * self.seeds)
        k = np.tile(np.repeat(KS, self.seeds), len(ALPHAS))
        seed = np.tile(np.arange(self.seeds), len(ALPHAS) * len(KS))
        n = len(alpha)
        columns = {"status": np.full(n, "FINISHED"), "alpha": alpha, "k": k, "seed": seed}
        count_mean = self.truth(alpha, k) if self.claim in "ab" else alpha_only(alpha, k)
        columns[MetricName.active_components] = np.maximum(0, np.rint(count_mean + rng.normal(0, self.spread, n)))
        gap = self.truth(alpha, k) if self.claim == "c" else 0.4
        likelihood = -22.0 - 0.2 * alpha + rng.normal(0, 0.02 + 0.05 * alpha, n)
        columns[MetricName.test_log_likelihood] = likelihood
        columns[MetricName.test_vr_bound_alpha] = likelihood - gap - rng.normal(0, 0.02 + 0.02 * alpha, n)
        gain = self.truth(alpha, k) if self.claim == "d" else 0.0
        means = 0.82 + rng.normal(0, 0.015, n)  # a seed's probe noise, shared by both probes
        columns[MetricName.final_probe_means] = np.rint(means * TEST_IMAGES) / TEST_IMAGES
        columns[MetricName.final_probe_means_variances] = np.rint(
            (means + gain + rng.normal(0, 0.008, n)) * TEST_IMAGES) / TEST_IMAGES
        return pd.DataFrame(columns)

    def outcome(self, trials: pd.DataFrame) -> tuple[str, set[str]]:
        """(the claim's outcome, the outcomes its latent sizes got) on one simulated sweep."""
        verdict = {"a": lambda: same_count(trials), "b": lambda: saturation(trials), "c": lambda: gap_shrinks(trials),
                   "d": lambda: variances_help(trials, PROBE_ALPHA)}[self.claim]()
        return verdict.outcome, {v.outcome for v in verdict.per_k.values()} or {verdict.outcome}

    def rates(self, sims: int, seed: int = 0) -> dict[str, float]:
        """Over ``sims`` sweeps: how often the wrong outcome comes up for any k, and how often the effect
        is found (the claim's outcome is ``found``)."""
        rng = np.random.default_rng(seed)
        wrong = found = 0
        for _ in range(sims):
            overall, per_k = self.outcome(self.draw(rng))
            wrong += self.wrong is not None and self.wrong in per_k
            found += self.found is not None and overall == self.found
        return {"wrong": wrong / sims, "found": found / sims}


def scenarios() -> list[Scenario]:
    """Each claim's null (a wrong verdict measured) at 3 and 10 seeds, and a stated effect at 10 seeds
    (power measured)."""
    nulls = []
    for seeds in (3, 10):
        nulls += [
            Scenario("a", "no k effect (spread 0.6)", alpha_only, seeds, "not supported", None),
            Scenario("a", "k = 20 keeps 1 more component (the margin)", k_effect(1.0), seeds, "supported", None),
            Scenario("b", "counts flat in alpha", flat, seeds, "supported", None),
            Scenario("b", "a straight rise in alpha (no levelling off)", alpha_only, seeds, "supported", None),
            Scenario("c", "gap flat in alpha", constant(0.4), seeds, "supported", None),
            Scenario("d", "no gain from the variances", constant(0.0), seeds, "supported", None),
        ]
    effects = [
        Scenario("a", "k = 20 keeps 2 more components", k_effect(2.0), 10, None, "not supported"),
        Scenario("a", "no k effect (spread 0.3)", alpha_only, 10, "not supported", "supported", spread=0.3),
        Scenario("b", "rises by 3, levelling off (concave)", saturating, 10, "not supported", "supported"),
        Scenario("c", "gap grows by 0.1 nats from alpha 0 to 2", gap_change(0.1), 10, "not supported", "supported"),
        Scenario("d", "gain of +0.01 accuracy", constant(0.01), 10, "not supported", "supported"),
    ]
    return nulls + effects


def table(sims: int = 500) -> str:
    """The calibration table as markdown."""
    lines = ["| claim | truth | seeds | wrong verdict | its rate | effect found |", "|---|---|---|---|---|---|"]
    for scenario in scenarios():
        rates = scenario.rates(sims)
        found = f"{rates['found']:.1%}" if scenario.found else "-"
        wrong = f'"{scenario.wrong}" for any k' if scenario.wrong else "-"
        lines.append(f"| ({scenario.claim}) | {scenario.name} | {scenario.seeds} | {wrong} | {rates['wrong']:.1%} | {found} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(int(sys.argv[1]) if len(sys.argv) > 1 else 500))
