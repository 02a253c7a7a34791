"""Small-sample inference on a sweep's grid, the tools the claims' verdicts are built from: one metric's
values per (alpha, k) point, linear contrasts of their means with t-based p-values and intervals,
equivalence within a margin (two one-sided tests), Holm's correction over a family, and the seeds a
contrast would need to be decided (Welch 1947, Holm 1979, Schuirmann 1987)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import stdtr, stdtrit  # Student's t CDF and its inverse, as ufuncs (scipy.stats' are 50x slower)

Point = tuple[float, int]  # (alpha, k): a grid point less its seed
LEVEL = 0.05  # every test's size, and 1 - the intervals' coverage (95%; 90% for equivalence)
POWER = 0.8  # the power "seeds that would decide it" aims at


@dataclass(frozen=True)
class Cells:
    """One metric's finished values per grid point (alpha, k) over the seeds.

    Each point keeps its own spread: a spread pooled over the grid is too small where rounding makes
    some points noisier than others (integer counts: a true mean of 6.4 spreads more than one of 7.0),
    and with it a rule that should err 5% of the time erred 14% (tests/verdict_simulation.py). ``floor``
    is the smallest per-seed standard deviation a point may take: an integer count whose every seed
    agrees still has its rounding (1/sqrt(12)), so no spread of 0 decides anything."""

    values: Mapping[Point, np.ndarray]
    floor: float = 0.0

    @property
    def points(self) -> list[Point]:
        return sorted(self.values)

    def mean(self, point: Point) -> float:
        return float(self.values[point].mean())

    def where(self, keep: Callable[[float], bool]) -> Cells:
        """The grid points whose alpha ``keep`` accepts."""
        return Cells({point: v for point, v in self.values.items() if keep(point[0])}, self.floor)

    def seeds(self) -> tuple[int, int]:
        """Fewest and most seeds at a grid point."""
        counts = [len(v) for v in self.values.values()]
        return (min(counts), max(counts)) if counts else (0, 0)

    def contrast(self, weights: Mapping[Point, float]) -> Estimate:
        """sum(weight * mean) over the weighted points, with its standard error from each point's own spread
        and Welch-Satterthwaite degrees of freedom; a point with one seed leaves the spread unknown."""
        value = sum(w * self.mean(p) for p, w in weights.items())
        parts = [(w ** 2 * max(self.values[p].var(ddof=1), self.floor ** 2), len(self.values[p]))
                 if len(self.values[p]) > 1 else (math.nan, 1) for p, w in weights.items()]
        unit = sum(part for part, _ in parts)  # the contrast's variance with one seed at each point
        se2 = sum(part / n for part, n in parts)
        df = se2 ** 2 / sum((part / n) ** 2 / (n - 1) for part, n in parts) if se2 > 0 else 0
        return Estimate(value, math.sqrt(se2), df, unit)


def cells_of(trials: pd.DataFrame, values: pd.Series, floor: float = 0.0) -> Cells:
    """``values`` (indexed like ``trials``) of the finished trials per (alpha, k), NaNs left out."""
    value = values.to_numpy(float)
    keep = (trials["status"] == "FINISHED").to_numpy() & ~np.isnan(value)
    alphas, ks, value = trials["alpha"].to_numpy(float)[keep], trials["k"].to_numpy(int)[keep], value[keep]
    points = sorted(set(zip(alphas.tolist(), ks.tolist())))
    return Cells({(a, k): value[(alphas == a) & (ks == k)] for a, k in points}, floor)


@dataclass(frozen=True)
class Estimate:
    """A contrast's value, standard error, t degrees of freedom, and variance with one seed per point."""

    value: float
    se: float
    df: float
    unit_variance: float

    @property
    def decides(self) -> bool:
        """False when the spread is unknown or 0: such an estimate rejects nothing."""
        return self.df > 0 and self.se > 0 and math.isfinite(self.se)

    def p_greater(self, than: float = 0.0) -> float:
        """One-sided p of 'value > than'."""
        return float(stdtr(self.df, -(self.value - than) / self.se)) if self.decides else 1.0

    def p_less(self, than: float = 0.0) -> float:
        """One-sided p of 'value < than'."""
        return float(stdtr(self.df, (self.value - than) / self.se)) if self.decides else 1.0

    def p_differs(self) -> float:
        return min(1.0, 2 * min(self.p_greater(), self.p_less()))

    def p_within(self, margin: float) -> float:
        """TOST p of '-margin < value < margin': below LEVEL exactly when the 90% interval is inside."""
        return max(self.p_greater(-margin), self.p_less(margin))

    def interval(self, coverage: float = 1 - LEVEL) -> tuple[float, float] | None:
        if not self.decides:
            return None
        half = float(stdtrit(self.df, 0.5 + coverage / 2)) * self.se
        return self.value - half, self.value + half

    def seeds_to_show(self, effect: float, level: float, power: float = POWER) -> int | None:
        """About how many seeds per grid point give ``power`` to find ``effect`` (its size, > 0) with a
        one-sided test at ``level``, at this spread: (t_level + t_power)^2 * unit variance / effect^2, the
        t quantiles at the degrees of freedom those seeds would give."""
        if not (self.unit_variance > 0 and effect > 0 and self.df > 0):
            return None
        seeds_now = self.unit_variance / self.se ** 2 if self.se > 0 else 2.0
        n = 2.0
        for _ in range(20):  # fixed point: the t quantiles depend on n through the degrees of freedom
            df = max(1.0, self.df * (n - 1) / max(seeds_now - 1, 1e-9))
            quantiles = stdtrit(df, 1 - level) + stdtrit(df, power)
            n = max(2.0, quantiles ** 2 * self.unit_variance / effect ** 2)
        return math.ceil(n)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (statsmodels' multipletests(method="holm") gives the same, but
    collects garbage on every call: 50 ms, too slow for the calibration's thousands of simulated sweeps).
    Reject those below LEVEL and the family-wise error rate is at most LEVEL, whatever the dependence."""
    p = np.asarray(p_values, float)
    order = np.argsort(p)
    steps = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted.tolist()


def slope_weights(alphas: list[float], span: bool = True) -> dict[float, float]:
    """Weights of the least-squares slope through the means at ``alphas``; with ``span`` scaled by their
    range, so the contrast is the fitted line's change from the smallest alpha to the largest."""
    x = np.asarray(alphas, float)
    centred = x - x.mean()
    scale = (x.max() - x.min()) if span else 1.0
    return {a: float(c * scale / (centred ** 2).sum()) for a, c in zip(alphas, centred)}


def curvature_weights(alphas: list[float]) -> dict[float, float]:
    """Weights of the quadratic coefficient of the least-squares parabola through the means at ``alphas``
    (at least 3 of them). A count that falls with alpha and flattens towards alpha = 0 (steeper near 1)
    is concave: its coefficient is negative; a straight line's is 0."""
    x = np.asarray(alphas, float)
    design = np.column_stack([np.ones_like(x), x, x ** 2])
    return {a: float(w) for a, w in zip(alphas, np.linalg.pinv(design)[2])}
