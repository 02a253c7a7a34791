"""PCA spectrum of posterior means, active components and units, and axis alignment (paper.md 2.1).

- ``eigenvalues``: PCA (scikit-learn) of the test-set posterior means, descending.
- ``active_components``: eigenvalues above epsilon (0.01, paper.md 2.1); rotation-invariant.
- ``active_units``: Burda et al.'s per-coordinate count, Var_x(E_q[z_u]) > epsilon; not
  rotation-invariant, reported for comparison (science.md section 3).
- ``axis_alignment``: mean, over the active components, of the largest squared loading of each unit
  eigenvector. 1 means every informative direction is a coordinate axis (what the study observes for
  a diagonal posterior); 1/k is a direction spread evenly over all k coordinates.
Variances use the n-1 denominator for both counts, as scikit-learn's PCA does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.decomposition import PCA

from analysis.settings import EPSILON



@dataclass
class Spectrum:
    eigenvalues: list[float]
    active_components: int
    active_units: int
    axis_alignment: float
    epsilon: float

    def as_dict(self) -> dict:
        return asdict(self)


def pca_spectrum(means: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and unit eigenvectors (rows) of the covariance of ``means`` [N, k]."""
    pca = PCA(n_components=means.shape[1], svd_solver="full").fit(means)
    return pca.explained_variance_, pca.components_


def count_above(values: np.ndarray, epsilon: float = EPSILON) -> int:
    return int(np.sum(values > epsilon))


def axis_alignment(eigenvalues: np.ndarray, components: np.ndarray, epsilon: float = EPSILON) -> float:
    """Mean largest squared loading over the components with eigenvalue > epsilon (NaN if none)."""
    informative = components[eigenvalues > epsilon]
    if len(informative) == 0:
        return float("nan")
    return float(np.mean(np.max(informative**2, axis=1)))


def spectrum(means: np.ndarray, epsilon: float = EPSILON) -> Spectrum:
    """All spectrum statistics of a matrix of posterior means."""
    eigenvalues, components = pca_spectrum(means)
    return Spectrum(
        eigenvalues=eigenvalues.tolist(),
        active_components=count_above(eigenvalues, epsilon),
        active_units=count_above(means.var(axis=0, ddof=1), epsilon),
        axis_alignment=axis_alignment(eigenvalues, components, epsilon),
        epsilon=epsilon,
    )
