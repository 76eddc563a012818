"""Exact leave-one-out memorization and influence from a ``loo`` design.

Under ``design="loo"`` each seed trains the full training set and each of the n
one-example-removed sets. True LOO memorization of example i is

    mem_i = mean_{full-set replicas} v_ri - mean_{replicas without i} v_ri

and LOO influence of train i on test j the same difference on test outputs. The replicas of
different subsets have independent initializations and data orders, so the two means are
independent samples over seeds: the standard error is Welch's and the interval the one the
subset estimators use (Newcombe's for correctness, Student t for real values). These are
pure functions of the masks: a replica is "full" when its mask holds every example and
"without i" when it holds every example but i; any other replica is ignored.
"""

from __future__ import annotations

import numpy as np

from memjax.errors import DataError
from memjax.estimators._core import Estimate, _finish, _welch, check_masks

__all__ = ["loo_memorization", "loo_influence", "loo_roles"]


def loo_roles(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``full`` (R,) bool: replicas trained on every example; ``left_out`` (R,): the example
    a replica leaves out, -1 for full-set replicas and for replicas of any other subset."""
    masks = np.asarray(masks, bool)
    missing = (~masks).sum(axis=1)
    full = missing == 0
    left_out = np.where(missing == 1, np.argmin(masks, axis=1), -1)
    if not full.any():
        raise DataError("no replica trained on the full set: exact LOO needs the 'loo' design")
    if not (left_out >= 0).any():
        raise DataError("no replica left exactly one example out: exact LOO needs 'loo'")
    return full, left_out


def _loo(masks: np.ndarray, values: np.ndarray, own: bool) -> Estimate:
    """Full-set mean minus left-out mean of ``values`` (R, m): (n,) on each example's own
    column when ``own``, else (n, m)."""
    full, left_out = loo_roles(masks)
    n = masks.shape[1]
    v = values.astype(np.float64)
    # real values are centred per column (stabler variances); 0/1 values are left exact, so
    # an example right on every full-set replica and wrong on every other has no variance
    shift = np.zeros(v.shape[1]) if values.dtype == bool else v.mean(axis=0)
    v = v - shift
    onehot = np.zeros((len(v), n))
    rows = np.flatnonzero(left_out >= 0)
    onehot[rows, left_out[rows]] = 1.0
    counts_out = n_out = onehot.sum(axis=0)
    counts_in = n_in = np.full(n, float(full.sum()))
    if own:
        sum_out, sq_out = (onehot * v).sum(0), (onehot * v * v).sum(0)
        sum_in, sq_in = v[full].sum(0), (v[full] ** 2).sum(0)
    else:
        n_out, n_in = n_out[:, None], n_in[:, None]
        sum_out, sq_out = onehot.T @ v, onehot.T @ (v * v)
        sum_in, sq_in = v[full].sum(0)[None], (v[full] ** 2).sum(0)[None]
        shift = shift[None, :]
    mean_in, mean_out, stderr, df = _welch(
        sum_in, sq_in, n_in, sum_in + sum_out, sq_in + sq_out, n_in + n_out
    )
    value, stderr, low, high = _finish(
        mean_in, mean_out, n_in, n_out, stderr, df, shift, values.dtype == bool, False
    )
    return Estimate(value, stderr, counts_in, counts_out, low, high)


def loo_memorization(masks: np.ndarray, values: np.ndarray) -> Estimate:
    """Exact LOO memorization (n,) of every training example from ``values`` (R, n)
    (correctness, margins, ...) of a ``loo`` design's replicas with ``masks`` (R, n).
    NaN where no replica left the example out (``n_out`` says so)."""
    masks, values = check_masks(masks, values, "values", same_shape=True)
    return _loo(masks, values, own=True)


def loo_influence(masks: np.ndarray, test_values: np.ndarray) -> Estimate:
    """Exact LOO influence (n_train, n_test) of each training example on each test output
    ``test_values`` (R, n_test)."""
    masks, test_values = check_masks(masks, test_values, "test_values")
    return _loo(masks, test_values, own=False)
