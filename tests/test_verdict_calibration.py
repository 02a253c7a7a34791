"""The claims' verdict rules have the error rates they claim: under each claim's null a wrong verdict
for any latent size comes up at most 5% of the time (plus Monte Carlo error), and a stated effect is
found at least 80% of the time with 10 seeds. 500 simulated sweeps per case (tests/verdict_simulation.py)."""

from __future__ import annotations

import math

import pytest

from verdict_simulation import Scenario, alpha_only, k_effect, scenarios

SIMS = 500
SIZE = 0.05
# The rate of a wrong verdict may exceed 5% by Monte Carlo error alone: two of its standard errors.
TOLERANCE = 2 * math.sqrt(SIZE * (1 - SIZE) / SIMS)
SCENARIOS = scenarios()


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[f"{s.claim}-{s.seeds}seeds-{s.name}" for s in SCENARIOS])
def test_a_verdict_rule_errs_at_most_5_percent_and_finds_a_stated_effect(scenario: Scenario):
    rates = scenario.rates(SIMS)
    if scenario.wrong:
        assert rates["wrong"] <= SIZE + TOLERANCE, f"{scenario.name}: wrong {scenario.wrong!r} in {rates['wrong']:.1%}"
    if scenario.found:
        assert rates["found"] >= 0.8, f"{scenario.name}: found {rates['found']:.1%}"


def test_the_issue_cases_get_their_outcome_on_one_sweep():
    """The three sweeps named as done-when, one simulated sweep each (rates above)."""
    import numpy as np

    rng = np.random.default_rng(7)
    no_effect = Scenario("a", "no k effect", alpha_only, 3, None, None)
    assert no_effect.outcome(no_effect.draw(rng))[0] != "not supported"
    two = Scenario("a", "2 components", k_effect(2.0), 10, None, None)
    assert two.outcome(two.draw(rng))[0] == "not supported"
    small = Scenario("a", "no k effect, small spread", alpha_only, 10, None, None, spread=0.3)
    assert small.outcome(small.draw(rng))[0] == "supported"
