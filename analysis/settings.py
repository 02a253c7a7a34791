"""The study's measurement settings, in one light module (no NumPy or scikit-learn import).

epsilon = 0.01 is the eigenvalue above which a PCA component of the posterior means "carries
information" (paper.md 2.1); the probe epochs sample the training curve of Figure 3 (paper.md 2.2).
"""

from __future__ import annotations

from dataclasses import dataclass

EPSILON = 0.01
PROBE_EPOCHS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


@dataclass(frozen=True)
class AnalysisSettings:
    """What ``analysis.model_analysis.analyze_trainer`` measures and draws."""

    epsilon: float = EPSILON
    probe_train_size: int | None = 10000
    interpolation_steps: int = 10
    pair: tuple[int, int] = (0, 1)
    geodesic_curves: int = 4
    seed: int = 0
