"""Subset-sampling estimators (Feldman & Zhang 2020): IN-minus-OUT differences with standard
errors and 95% intervals computed for the design that produced the masks.

All functions are pure functions of the masks (R, n) and per-replica values; they never train.
Every estimate carries its standard error, a 95% interval and the IN/OUT counts behind it;
where an example was never IN or never OUT the value is NaN (the counts say why).

Units of independence. Without ``blocks`` every replica is independent (the ``fixed`` and
``bernoulli`` designs) and the standard error is Welch's. With ``blocks`` (int (R,), from
``memjax.subsets.block_ids``; the ``balanced`` design) the replicas of one block are
dependent — at ratio 0.5 a block is a complementary pair, so its IN and OUT means are
anti-correlated whenever other examples move a value — and the block is the unit: the
standard error is the cluster-robust (linearization) one with G/(G-1) correction over the G
blocks. For complete blocks it equals sd(per-block IN-minus-OUT difference) / sqrt(G); an
incomplete block (a partly finished study) is a cluster like the others, weighted by the
replicas it holds. Intervals then use Student t with G - 1 degrees of freedom.

Intervals. For correctness (boolean values) the interval is Newcombe's hybrid score interval
for a difference of proportions (Wilson for a single mean), with counts divided by the
design effect when blocks are given; it never collapses to a point, e.g. an example right on
every IN replica and wrong on every OUT replica. For real values it is value -/+ t * stderr.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memjax import intervals
from memjax.errors import DataError

# A blocked standard error below this is rounding noise of an exact zero (values in [0, 1]).
_NO_VARIATION = 1e-9


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard error, 95% interval and the replica counts behind it.

    ``ci_low``/``ci_high`` default to value -/+ 1.96 stderr when not given.
    """

    value: np.ndarray
    stderr: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray
    ci_low: np.ndarray | None = None
    ci_high: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.ci_low is None or self.ci_high is None:
            low, high = intervals.normal(np.asarray(self.value), np.asarray(self.stderr))
            object.__setattr__(self, "ci_low", low)
            object.__setattr__(self, "ci_high", high)


def check_masks(
    masks: np.ndarray,
    values: np.ndarray,
    what: str,
    *,
    same_shape: bool = False,
    columns: str = "examples",
) -> tuple[np.ndarray, np.ndarray]:
    """``masks`` (R, n) bool and per-replica ``values`` (R, m) as arrays, or a specific error:
    one row per replica, at least 2 replicas, no NaN or inf; ``same_shape``: m == n (values
    of the training examples themselves)."""
    masks = np.asarray(masks)
    values = np.asarray(values)
    if masks.ndim != 2 or masks.dtype != bool:
        raise DataError(
            f"masks must be a boolean (replicas, n) array, got {masks.dtype} {masks.shape}"
        )
    if values.ndim != 2 or values.shape[0] != masks.shape[0]:
        raise DataError(
            f"{what} must be (replicas, {columns}) with {masks.shape[0]} replicas like the masks, "
            f"got {values.shape}"
        )
    if same_shape and values.shape != masks.shape:
        raise DataError(f"{what} shape {values.shape} differs from masks shape {masks.shape}")
    if masks.shape[0] < 2:
        raise DataError("estimators need at least 2 replicas")
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise DataError(f"{what} contains NaN or inf")
    return masks, values


def check_blocks(blocks: np.ndarray | None, replicas: int) -> np.ndarray | None:
    """``blocks`` as an integer (R,) array of block ids, or None; a specific error otherwise."""
    if blocks is None:
        return None
    blocks = np.asarray(blocks)
    if blocks.shape != (replicas,) or not np.issubdtype(blocks.dtype, np.integer):
        raise DataError(
            f"blocks must be an integer array with one block id per replica ({replicas}), "
            f"got {blocks.dtype} {blocks.shape}"
        )
    return blocks


def _block_matrix(blocks: np.ndarray | None, replicas: int) -> np.ndarray | None:
    """One-hot (G, R) float64 matrix of the blocks present (None: independent replicas)."""
    blocks = check_blocks(blocks, replicas)
    if blocks is None:
        return None
    _, inverse = np.unique(blocks, return_inverse=True)
    onehot = np.zeros((inverse.max() + 1, replicas))
    onehot[inverse, np.arange(replicas)] = 1.0
    return onehot


def _welch(sum_in, sq_in, n_in, sum_all, sq_all, n_all):
    """Means per side, Welch's standard error and Welch-Satterthwaite degrees of freedom."""
    n_out = n_all - n_in
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_in = sum_in / n_in
        mean_out = (sum_all - sum_in) / n_out
        var_in = np.maximum(sq_in - n_in * mean_in**2, 0.0) / (n_in - 1)
        var_out = np.maximum((sq_all - sq_in) - n_out * mean_out**2, 0.0) / (n_out - 1)
        a, b = var_in / n_in, var_out / n_out
        stderr = np.sqrt(a + b)
        df = (a + b) ** 2 / (a**2 / (n_in - 1) + b**2 / (n_out - 1))
    df = np.where(np.isfinite(df), df, np.inf)
    return mean_in, mean_out, stderr, df


def _design_effect(stderr: np.ndarray, independent_var: np.ndarray) -> np.ndarray:
    """Blocked variance over the variance independent replicas would give; 1 where either is
    0 or undefined (blocks that show no variation at all are not taken as infinite precision:
    the interval falls back to that of independent replicas)."""
    ok = (stderr > _NO_VARIATION) & (independent_var > 0)
    return np.where(ok, stderr**2 / np.where(ok, independent_var, 1.0), 1.0)


def _finish(
    mean_in: np.ndarray,
    mean_out: np.ndarray,
    n_in: np.ndarray,
    n_out: np.ndarray,
    stderr: np.ndarray,
    df: np.ndarray | float,
    shift: np.ndarray,
    proportions: bool,
    blocked: bool,
) -> tuple[np.ndarray, ...]:
    """value, stderr, ci_low, ci_high of mean_in - mean_out, NaN where the counts say so.

    ``shift`` is what was subtracted from the values (per column) before summing; it cancels
    in the difference but proportions need it back for their score intervals.
    """
    defined = (n_in > 0) & (n_out > 0)
    value = np.where(defined, mean_in - mean_out, np.nan)
    stderr = np.where((n_in > 1) & (n_out > 1), stderr, np.nan)
    if proportions:
        p_in, p_out = mean_in + shift, mean_out + shift
        deff = np.ones_like(value)
        if blocked:
            with np.errstate(invalid="ignore", divide="ignore"):
                deff = _design_effect(
                    stderr, p_in * (1 - p_in) / n_in + p_out * (1 - p_out) / n_out
                )
        with np.errstate(invalid="ignore", divide="ignore"):
            eff_in, eff_out = n_in / deff, n_out / deff
            low, high = intervals.newcombe(
                p_in * eff_in, eff_in, p_out * eff_out, eff_out, z=intervals.quantile(df)
            )
    else:
        low, high = intervals.normal(value, stderr, df)
    low = np.where(defined & (n_in > 0) & (n_out > 0), low, np.nan)
    high = np.where(defined, high, np.nan)
    return value, stderr, low, high
