"""Fisher-Rao geodesics and distances between univariate and diagonal Gaussians (paper.md 2.3).

For N(mu, sigma) the Fisher metric is ds^2 = (dmu^2 + 2 dsigma^2) / sigma^2, twice the Poincaré
half-plane metric in (u, sigma) with u = mu / sqrt(2) (science.md section 5). We use the
hyperboloid model: a point maps to X = ((u^2+s^2+1)/(2s), u/s, (u^2+s^2-1)/(2s)), the geodesic is
gamma(t) = w1(t) X1 + w2(t) X2 with w1 = sinh((1-t) d)/sinh(d), w2 = sinh(t d)/sinh(d), and the
point maps back by s = 1/(X0 - X2), u = X1/(X0 - X2). Two facts keep this exact at any scale:

- X0 - X2 = 1/s and X1 = u/s, so s(t) = 1/(w1/s1 + w2/s2) and u(t) = (w1 u1/s1 + w2 u2/s2) s(t):
  all terms are non-negative, nothing cancels, whatever the variance ratio (1e-8..1e8 tested);
- d_H = 2 asinh(|P - Q| / (2 sqrt(s1 s2))) (from cosh d = 1 + |P-Q|^2/(2 s1 s2)) has no
  arccosh(1 + tiny) loss, and the weights are written with expm1 so d -> 0 and d large are safe.

The Fisher-Rao distance is sqrt(2) d_H; for a diagonal Gaussian the metric is the direct sum of the
coordinates', so D = sqrt(sum_i d_i^2) and the geodesic runs every coordinate's geodesic on the same
t (each at its own constant speed, hence D constant too). Everything broadcasts over leading
dimensions; time points form a new leading axis.
"""

from __future__ import annotations

import numpy as np

SQRT2 = np.sqrt(2.0)


def _half_plane_distance(u1: np.ndarray, s1: np.ndarray, u2: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Poincaré half-plane distance, accurate for tiny and huge separations."""
    return 2.0 * np.arcsinh(np.hypot(u1 - u2, s1 - s2) / (2.0 * np.sqrt(s1) * np.sqrt(s2)))


def fisher_rao_distance_1d(mu1, sigma1, mu2, sigma2) -> np.ndarray:
    """Fisher-Rao distance between N(mu1, sigma1^2) and N(mu2, sigma2^2), elementwise."""
    mu1, sigma1, mu2, sigma2 = (np.asarray(a, dtype=np.float64) for a in (mu1, sigma1, mu2, sigma2))
    return SQRT2 * _half_plane_distance(mu1 / SQRT2, sigma1, mu2 / SQRT2, sigma2)


def fisher_rao_distance(mu1, sigma1, mu2, sigma2) -> np.ndarray:
    """Fisher-Rao distance between diagonal Gaussians (last axis = coordinates)."""
    return np.sqrt(np.sum(fisher_rao_distance_1d(mu1, sigma1, mu2, sigma2) ** 2, axis=-1))


def _slerp_weights(t: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sinh((1-t)d)/sinh(d) and sinh(td)/sinh(d) without overflow, and (1-t, t) at d = 0."""
    safe = np.where(d > 0, d, 1.0)
    denom = np.expm1(-2.0 * safe)
    w1 = np.exp(-t * safe) * np.expm1(-2.0 * (1.0 - t) * safe) / denom
    w2 = np.exp(-(1.0 - t) * safe) * np.expm1(-2.0 * t * safe) / denom
    return np.where(d > 0, w1, 1.0 - t), np.where(d > 0, w2, t)


def fisher_rao_geodesic(mu1, sigma1, mu2, sigma2, t) -> tuple[np.ndarray, np.ndarray]:
    """Points (mu(t), sigma(t)) of the constant-speed geodesic, shape [len(t), *broadcast shape].

    Works for univariate parameters (scalars or any array) and for diagonal Gaussians (arrays whose
    last axis is the coordinate): the diagonal geodesic is the coordinatewise one on a shared t.
    """
    mu1, sigma1, mu2, sigma2 = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (mu1, sigma1, mu2, sigma2)))
    t = np.asarray(t, dtype=np.float64).reshape((-1,) + (1,) * mu1.ndim)
    u1, u2 = mu1 / SQRT2, mu2 / SQRT2
    w1, w2 = _slerp_weights(t, _half_plane_distance(u1, sigma1, u2, sigma2))
    inv_sigma = w1 / sigma1 + w2 / sigma2
    sigma = 1.0 / inv_sigma
    mu = (w1 * mu1 / sigma1 + w2 * mu2 / sigma2) * sigma  # sqrt(2) u(t), the sqrt(2) cancels
    return mu, sigma


def straight_line(a1, b1, a2, b2, t) -> tuple[np.ndarray, np.ndarray]:
    """The Euclidean segment between (a1, b1) and (a2, b2) on the same time grid, for comparison."""
    a1, b1, a2, b2 = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (a1, b1, a2, b2)))
    t = np.asarray(t, dtype=np.float64).reshape((-1,) + (1,) * a1.ndim)
    return (1 - t) * a1 + t * a2, (1 - t) * b1 + t * b2
