"""The linear datamodeling score (LDS; Park et al. 2023, TRAK) with a two-way bootstrap interval.

An attribution matrix a (n_train, n_test) predicts the output of test example j on a
training subset S as sum_{i in S} a_ij. LDS_j is the Spearman correlation, over M evaluation
subsets, between these predictions and the outputs of models actually trained on the subsets
(each averaged over its K seeds); the LDS is the mean over test examples.

Interval: the estimate has two sources of sampling error, the test examples (a sample of the
population the score is meant for) and the evaluation subsets (a sample of the subset
distribution; every LDS_j uses the same ones, so the LDS_j are not independent). The two-way
bootstrap resamples both at once: test examples with replacement, and evaluation subsets with
replacement (whole blocks of subsets when ``blocks`` are given), recomputes every LDS_j on
the resampled subsets and averages over the resampled test examples. The 95% interval is the
percentile interval of those replicates. A two-way bootstrap counts the interaction variance
twice, so it errs towards wide (conservative) rather than narrow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from memjax import intervals
from memjax.errors import DataError

__all__ = ["LDS", "check_n_boot", "lds", "spearman_columns", "seed_average"]

N_BOOT = 1000


@dataclass(frozen=True)
class LDS:
    """``value`` the mean LDS over the test examples whose LDS is defined, its two-way
    bootstrap 95% interval ``ci_low``/``ci_high``, ``per_example`` (n_test,) Spearman
    correlations (NaN where predictions or outputs are constant over the subsets) and the
    ``n_subsets``/``n_examples`` behind it."""

    value: float
    ci_low: float
    ci_high: float
    per_example: np.ndarray
    n_subsets: int
    n_examples: int


def spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation (average ranks for ties) of each column of a with the same
    column of b, both (M, m); NaN where a column is constant."""
    ra = stats.rankdata(a, axis=0)
    rb = stats.rankdata(b, axis=0)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    num = (ra * rb).sum(axis=0)
    den = np.sqrt((ra * ra).sum(axis=0) * (rb * rb).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


# bootstrap replicates are computed in batches of about this many (replicate, subset, example)
_BATCH_CELLS = 4_000_000


class _TieGroups:
    """Ranks of the columns of x (M, m) in a bootstrap sample given as row weights (how often
    each row was drawn), without sorting again: a value's average rank among the drawn rows
    is (weight of smaller values) + (weight of equal values + 1) / 2."""

    def __init__(self, x: np.ndarray) -> None:
        self.order = np.argsort(x, axis=0, kind="stable")
        xs = np.take_along_axis(x, self.order, axis=0)
        new = np.vstack([np.ones((1, x.shape[1]), bool), xs[1:] != xs[:-1]])
        pos = np.arange(len(x))[:, None]
        self.first = np.maximum.accumulate(np.where(new, pos, 0), axis=0)
        end = np.vstack([new[1:], np.ones((1, x.shape[1]), bool)])
        self.last = np.minimum.accumulate(np.where(end, pos, len(x))[::-1], axis=0)[::-1]

    def ranks(self, row_weight: np.ndarray) -> np.ndarray:
        """(b, M, m) average ranks of each row under each of the b row weightings (b, M)."""
        ws = row_weight[:, self.order]  # (b, M, m) in sorted order
        cum = np.cumsum(ws, axis=1)
        idx = np.broadcast_to(self.first, ws.shape)
        less = np.take_along_axis(cum, idx, 1) - np.take_along_axis(ws, idx, 1)
        equal = np.take_along_axis(cum, np.broadcast_to(self.last, ws.shape), 1) - less
        out = np.empty_like(ws)
        np.put_along_axis(out, np.broadcast_to(self.order, ws.shape), less + (equal + 1) / 2, 1)
        return out


def _weighted_pearson(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson correlation over axis 1 of a, b (B, M, m) with row weights w (B, M): (B, m)."""
    w = w[:, :, None] / w.sum(axis=1)[:, None, None]
    a = a - (w * a).sum(axis=1, keepdims=True)
    b = b - (w * b).sum(axis=1, keepdims=True)
    num = (w * a * b).sum(axis=1)
    den = np.sqrt((w * a * a).sum(axis=1) * (w * b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-300, num / np.where(den > 1e-300, den, 1.0), np.nan)


def seed_average(values: np.ndarray, seeds: int) -> np.ndarray:
    """Outputs (M*K, m) of an evaluation design (replica r = m*K + k trains subset m with
    seed k) averaged over the K seeds of each subset: (M, m)."""
    values = np.asarray(values, np.float64)
    if values.ndim != 2 or len(values) % seeds:
        raise DataError(
            f"values must be (subsets * seeds, n_test) with a multiple of {seeds} rows, "
            f"got {values.shape}"
        )
    return values.reshape(-1, seeds, values.shape[1]).mean(axis=1)


def _check(attributions, masks_eval, values_eval, blocks):
    a = np.asarray(attributions, np.float64)
    masks = np.asarray(masks_eval)
    v = np.asarray(values_eval, np.float64)
    if a.ndim != 2:
        raise DataError(f"attributions must be (n_train, n_test), got shape {a.shape}")
    if masks.ndim != 2 or masks.dtype != bool or masks.shape[1] != a.shape[0]:
        raise DataError(
            f"masks_eval must be a boolean (subsets, n_train={a.shape[0]}) array, "
            f"got {masks.dtype} {masks.shape}"
        )
    if v.ndim == 3:  # (M, K, n_test): the K seeds of each subset
        v = v.mean(axis=1)
    if v.shape != (len(masks), a.shape[1]):
        raise DataError(
            f"values_eval must be (subsets={len(masks)}, n_test={a.shape[1]}) or "
            f"(subsets, seeds, n_test), got {np.shape(values_eval)}"
        )
    if len(masks) < 3:
        raise DataError(f"LDS needs at least 3 evaluation subsets, got {len(masks)}")
    if not (np.isfinite(a).all() and np.isfinite(v).all()):
        raise DataError("attributions and values_eval must be finite (no NaN or inf)")
    if blocks is not None:
        blocks = np.asarray(blocks)
        if blocks.shape != (len(masks),) or not np.issubdtype(blocks.dtype, np.integer):
            raise DataError(
                f"blocks must be an integer array with one block id per evaluation subset "
                f"({len(masks)}), got {blocks.dtype} {blocks.shape}"
            )
    return a, masks, v, blocks


def check_n_boot(n_boot: int) -> None:
    """Refuse fewer than one bootstrap replicate by name: the interval needs at least one,
    and numpy's own complaint (nothing to concatenate) names nothing the user set."""
    if not isinstance(n_boot, int) or n_boot < 1:
        raise DataError(f"n_boot (--n-boot) must be at least 1 bootstrap replicate, got {n_boot!r}")


def lds(
    attributions: np.ndarray,
    masks_eval: np.ndarray,
    values_eval: np.ndarray,
    blocks: np.ndarray | None = None,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> LDS:
    """LDS of ``attributions`` (n_train, n_test) on evaluation subsets ``masks_eval``
    (M, n_train) with outputs ``values_eval`` (M, n_test), already averaged over each
    subset's seeds, or (M, K, n_test) with the K seeds' outputs (averaged here).
    ``blocks`` (M,): block ids of dependent evaluation subsets, resampled whole.
    """
    check_n_boot(n_boot)
    a, masks, v, blocks = _check(attributions, masks_eval, values_eval, blocks)
    pred = masks.astype(np.float64) @ a
    per_example = spearman_columns(pred, v)
    defined = np.isfinite(per_example)
    if not defined.any():
        raise DataError("LDS is undefined for every test example (constant outputs)")
    value = float(per_example[defined].mean())
    rng = np.random.default_rng(seed)
    units = np.arange(len(masks)) if blocks is None else np.unique(blocks, return_inverse=True)[1]
    cols = np.flatnonzero(defined)
    pred_ties, v_ties = _TieGroups(pred[:, cols]), _TieGroups(v[:, cols])
    replicates = []
    batch = max(1, _BATCH_CELLS // (len(masks) * len(cols)))
    for start in range(0, n_boot, batch):
        b = min(batch, n_boot - start)
        drawn = rng.integers(0, units.max() + 1, (b, units.max() + 1))
        unit_count = np.stack([np.bincount(d, minlength=units.max() + 1) for d in drawn])
        row_weight = unit_count[:, units].astype(np.float64)  # (b, M)
        col_weight = rng.multinomial(len(cols), np.full(len(cols), 1 / len(cols)), b)
        rho = _weighted_pearson(pred_ties.ranks(row_weight), v_ties.ranks(row_weight), row_weight)
        ok = np.isfinite(rho) & (col_weight > 0)
        w = np.where(ok, col_weight, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            replicates.append((np.where(ok, rho, 0) * w).sum(1) / w.sum(1))
    replicates = np.concatenate(replicates)
    alpha = (1 - intervals.LEVEL) / 2
    low, high = np.nanquantile(replicates, [alpha, 1 - alpha])
    return LDS(value, float(low), float(high), per_example, len(masks), int(defined.sum()))
