"""Fisher-Rao geodesics: closed forms, constant speed, metric length, ODE agreement, extreme ratios."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from analysis.geodesics import fisher_rao_distance, fisher_rao_distance_1d, fisher_rao_geodesic, straight_line

RNG = np.random.default_rng(0)
PAIRS = [(0.0, 1.0, 1.0, 1.0), (-1.0, 0.3, 2.0, 1.5), (0.5, 2.0, 0.5, 0.1), (3.0, 0.05, -3.0, 0.05), (0.2, 1.0, 0.3, 4.0)]


def metric_length(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Length of a polyline under ds^2 = (dmu^2 + 2 dsigma^2)/sigma^2 (midpoint sigma), summed over time."""
    dmu, dsigma = np.diff(mu, axis=0), np.diff(sigma, axis=0)
    mid = 0.5 * (sigma[1:] + sigma[:-1])
    return np.sqrt(dmu**2 + 2 * dsigma**2) / mid


def arccosh_distance(mu1, s1, mu2, s2):
    """science.md's formula, an independent code path."""
    return np.sqrt(2) * np.arccosh(1 + ((mu1 - mu2) ** 2 / 2 + (s1 - s2) ** 2) / (2 * s1 * s2))


@pytest.mark.parametrize("pair", PAIRS)
def test_endpoints_and_symmetry(pair):
    t = np.linspace(0, 1, 11)
    mu, sigma = fisher_rao_geodesic(*pair, t)
    np.testing.assert_allclose([mu[0], sigma[0], mu[-1], sigma[-1]], pair, rtol=1e-13, atol=1e-15)
    mu_back, sigma_back = fisher_rao_geodesic(*pair[2:], *pair[:2], t)
    np.testing.assert_allclose(mu_back[::-1], mu, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sigma_back[::-1], sigma, rtol=1e-12)
    assert fisher_rao_distance_1d(*pair) == pytest.approx(fisher_rao_distance_1d(*pair[2:], *pair[:2]), rel=1e-14)


@pytest.mark.parametrize("pair", PAIRS)
def test_constant_speed_and_length_equals_distance(pair):
    t = np.linspace(0, 1, 4001)
    mu, sigma = fisher_rao_geodesic(*pair, t)
    steps = metric_length(mu, sigma)
    distance = fisher_rao_distance_1d(*pair)
    np.testing.assert_allclose(steps, distance / 4000, rtol=1e-5)
    assert steps.sum() == pytest.approx(distance, rel=1e-6)
    assert distance == pytest.approx(arccosh_distance(*pair), rel=1e-9)


@pytest.mark.parametrize("pair", PAIRS)
def test_agrees_with_numerical_integration_of_the_geodesic_equations(pair):
    # mu'' = 2 mu' sigma'/sigma ; sigma'' = (sigma'^2 - mu'^2/2)/sigma   (Christoffel symbols of the metric)
    h = 1e-6
    (mu0, mu_h), (s0, s_h) = fisher_rao_geodesic(*pair, [0.0, h])
    state0 = [mu0, s0, (mu_h - mu0) / h, (s_h - s0) / h]

    def rhs(_, y):
        mu, s, dmu, ds = y
        return [dmu, ds, 2 * dmu * ds / s, (ds**2 - dmu**2 / 2) / s]

    t = np.linspace(0, 1, 21)
    sol = solve_ivp(rhs, (0, 1), state0, t_eval=t, rtol=1e-11, atol=1e-12)
    mu, sigma = fisher_rao_geodesic(*pair, t)
    np.testing.assert_allclose(sol.y[0], mu, atol=1e-4 * (1 + np.abs(mu).max()))
    np.testing.assert_allclose(sol.y[1], sigma, rtol=1e-4)


def test_equal_means_follow_the_known_vertical_geodesic():
    t = np.linspace(0, 1, 7)
    mu, sigma = fisher_rao_geodesic(0.7, 0.2, 0.7, 5.0, t)
    np.testing.assert_allclose(mu, 0.7, rtol=1e-14)
    np.testing.assert_allclose(sigma, 0.2 * (5.0 / 0.2) ** t, rtol=1e-13)
    assert fisher_rao_distance_1d(0.7, 0.2, 0.7, 5.0) == pytest.approx(np.sqrt(2) * np.log(25.0), rel=1e-14)


def test_equal_variances_match_the_closed_form_distance():
    sigma, dmu = 0.6, 1.7
    expected = 2 * np.sqrt(2) * np.arcsinh(dmu / (2 * np.sqrt(2) * sigma))
    assert fisher_rao_distance_1d(0.0, sigma, dmu, sigma) == pytest.approx(expected, rel=1e-14)
    _, s = fisher_rao_geodesic(0.0, sigma, dmu, sigma, np.linspace(0, 1, 9))
    assert (s[1:-1] > sigma).all(), "the geodesic bulges upward between equal variances (Figure 4)"


@pytest.mark.parametrize("ratio", [1e-8, 1e-4, 1e4, 1e8])
@pytest.mark.parametrize("dmu", [0.0, 1e-12, 1.0])
def test_extreme_variance_ratios_stay_exact(ratio, dmu):
    t = np.linspace(0, 1, 101)
    mu, sigma = fisher_rao_geodesic(0.0, 1.0, dmu, ratio, t)
    assert np.isfinite(mu).all() and np.isfinite(sigma).all() and (sigma > 0).all()
    assert sigma[-1] == pytest.approx(ratio, rel=1e-13) and mu[-1] == pytest.approx(dmu, rel=1e-12, abs=1e-300)
    distance = fisher_rao_distance_1d(0.0, 1.0, dmu, ratio)
    if dmu <= 1e-12:  # nearly vertical: the equal-mean closed form
        assert distance == pytest.approx(np.sqrt(2) * abs(np.log(ratio)), rel=1e-12)
        np.testing.assert_allclose(sigma, ratio**t, rtol=1e-11)
    fine = np.linspace(0, 1, 20001)
    steps = metric_length(*fisher_rao_geodesic(0.0, 1.0, dmu, ratio, fine))
    np.testing.assert_allclose(steps, distance / 20000, rtol=1e-3)


def test_identical_endpoints_give_a_constant_curve_and_zero_distance():
    mu, sigma = fisher_rao_geodesic(0.3, 0.8, 0.3, 0.8, np.linspace(0, 1, 5))
    assert fisher_rao_distance_1d(0.3, 0.8, 0.3, 0.8) == 0.0
    np.testing.assert_allclose(mu, 0.3, rtol=1e-15)
    np.testing.assert_allclose(sigma, 0.8, rtol=1e-15)


def test_nearly_equal_means_are_continuous_with_equal_means():
    t = np.linspace(0, 1, 11)
    _, s_equal = fisher_rao_geodesic(1.0, 0.5, 1.0, 2.0, t)
    mu_near, s_near = fisher_rao_geodesic(1.0, 0.5, 1.0 + 1e-10, 2.0, t)
    np.testing.assert_allclose(s_near, s_equal, rtol=1e-12)
    assert (np.diff(mu_near) >= 0).all()


def test_diagonal_gaussians_are_the_product_geometry():
    mu1, s1 = RNG.normal(size=(4, 6)), RNG.uniform(0.1, 2, size=(4, 6))
    mu2, s2 = RNG.normal(size=(4, 6)), RNG.uniform(0.1, 2, size=(4, 6))
    per_coordinate = fisher_rao_distance_1d(mu1, s1, mu2, s2)
    np.testing.assert_allclose(fisher_rao_distance(mu1, s1, mu2, s2), np.sqrt((per_coordinate**2).sum(-1)))
    t = np.linspace(0, 1, 2001)
    mu, sigma = fisher_rao_geodesic(mu1, s1, mu2, s2, t)
    assert mu.shape == (2001, 4, 6)
    total_speed = np.sqrt((metric_length(mu, sigma) ** 2).sum(-1))  # [time, batch]
    expected = np.broadcast_to(fisher_rao_distance(mu1, s1, mu2, s2) / 2000, total_speed.shape)
    np.testing.assert_allclose(total_speed, expected, rtol=1e-3)
    # a coordinate whose endpoints agree stays put
    mu1[0, 0], s1[0, 0] = mu2[0, 0], s2[0, 0]
    mu, sigma = fisher_rao_geodesic(mu1, s1, mu2, s2, t)
    np.testing.assert_allclose(mu[:, 0, 0], mu2[0, 0]), np.testing.assert_allclose(sigma[:, 0, 0], s2[0, 0])


def test_geodesic_is_shorter_than_the_straight_line():
    t = np.linspace(0, 1, 5001)
    for pair in PAIRS:
        geo = metric_length(*fisher_rao_geodesic(*pair, t)).sum()
        line = metric_length(*straight_line(*pair, t)).sum()
        assert geo <= line * (1 + 1e-6)  # equal means: the same vertical segment, another speed
        if pair[0] != pair[2]:
            assert geo < line - 1e-5
