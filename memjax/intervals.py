"""Confidence intervals that stay honest at the boundary (0 or 1) and for few blocks.

Shared by the estimators (differences of proportions, means) and membership inference
(a single proportion). All functions are vectorized over numpy arrays and return NaN where
the counts cannot support an interval.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from memjax.errors import DataError

__all__ = ["LEVEL", "quantile", "wilson", "newcombe", "clopper_pearson", "normal"]

LEVEL = 0.95


def quantile(df: np.ndarray | float | None = None, level: float = LEVEL) -> np.ndarray:
    """Two-sided critical value: Student t with ``df`` degrees of freedom (normal if None
    or infinite). Few blocks mean few degrees of freedom, so t matters for small studies."""
    q = 0.5 + level / 2
    if df is None:
        return np.asarray(stats.norm.ppf(q))
    df = np.asarray(df, np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(df), stats.t.ppf(q, np.maximum(df, 1.0)), stats.norm.ppf(q))


def normal(
    value: np.ndarray, stderr: np.ndarray, df: np.ndarray | float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """value -/+ quantile(df) * stderr (NaN where either is NaN)."""
    half = quantile(df) * np.asarray(stderr, np.float64)
    return value - half, value + half


def wilson(
    successes: np.ndarray, n: np.ndarray, z: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a proportion; ``n`` may be an effective (non-integer) count.
    Width stays positive at 0/n and n/n. NaN where n <= 0."""
    x = np.asarray(successes, np.float64)
    n = np.asarray(n, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / n
        z2 = z * z
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    bad = ~(n > 0)
    low, high = np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


def newcombe(
    x1: np.ndarray,
    n1: np.ndarray,
    x2: np.ndarray,
    n2: np.ndarray,
    z: np.ndarray | float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Newcombe's hybrid score interval (1998, method 10) for p1 - p2 from two Wilson
    intervals. ``n1``/``n2`` may be effective counts (n / design effect) for clustered
    replicas, ``x`` then the matching scaled successes. Never collapses to a point."""
    z = quantile() if z is None else z
    p1 = np.asarray(x1, np.float64) / n1
    p2 = np.asarray(x2, np.float64) / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    d = p1 - p2
    low = d - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return low, high


def clopper_pearson(
    successes: np.ndarray | int, n: np.ndarray | int, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) interval for a binomial proportion successes/n: (low, high).

    Beta quantiles; low is 0 at 0 successes and high is 1 at n, so the interval never
    collapses to a point."""
    x = np.asarray(successes, np.float64)
    n = np.asarray(n, np.float64)
    if np.any(n < 1) or np.any((x < 0) | (x > n)):
        raise DataError(f"need 0 <= successes <= n and n >= 1, got {x} of {n}")
    a = (1 - level) / 2
    with np.errstate(invalid="ignore"):
        low = np.where(x > 0, stats.beta.ppf(a, x, n - x + 1), 0.0)
        high = np.where(x < n, stats.beta.ppf(1 - a, x + 1, n - x), 1.0)
    return low, high
