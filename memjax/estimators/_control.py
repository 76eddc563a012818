"""Control variates for the subset estimators: a cheap model on the same masks lowers the
variance of the networks' memorization and influence without changing what they estimate.

For each replica r the control statistic c_r (e.g. the margin of the kernel model of the
same architecture trained on the same mask from the same initial function,
``memjax.theory.kernel_control``) is correlated with the network's value v_r. The subset
estimators are linear in the per-replica values, E(v) = mean_IN v - mean_OUT v, and their
squared standard error S^2(v) is a quadratic form of the values, for independent replicas
(Welch) and for blocks (cluster-robust) alike. So with the control's estimand mu estimated
from many more independent replicas of the same design (``extra_*``; unbiased, with its own
standard error se_mu)

    theta = E(v) - beta (E(c) - mu),
    Var(theta) = S^2(v) - 2 beta Cov + beta^2 S^2(c) + beta^2 se_mu^2,

with Cov = (S^2(v + c) - S^2(v) - S^2(c)) / 2 (polarization: exact for a quadratic form) and
the variance-minimizing beta = Cov / (S^2(c) + se_mu^2), per example (per pair for influence).

Cross-fitting. A beta estimated on the replicas it is applied to correlates with E(c) - mu
and biases theta by O(1/R). Here the replicas are split into ``folds`` by unit of
independence (whole blocks; single replicas when independent); each fold's estimate uses a
beta from the other folds only, so E[beta_k (E_k(c) - mu)] = 0 and each fold is unbiased.
theta is the unit-weighted mean of the fold estimates plus mean(beta) mu; its variance is the
sum of the folds' squared weights times their variances (folds share no unit) plus
mean(beta)^2 se_mu^2, and the interval is Student t with Satterthwaite's degrees of freedom
(each fold: its units - 2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from memjax import intervals
from memjax.errors import DataError
from memjax.estimators._core import Estimate, check_blocks

__all__ = ["KernelControl", "ControlledEstimate", "controlled", "fold_ids"]

Estimator = Callable[..., Estimate]
# Fewest units per fold: below these the folds' intervals undercover in simulation (an
# independent replica is IN or OUT for an example, a block holds both sides).
MIN_BLOCKS_PER_FOLD = 8
MIN_REPLICAS_PER_FOLD = 16


@dataclass(frozen=True)
class KernelControl:
    """A control statistic on the estimator's own replicas and on independent extra ones.

    ``values`` (R, k): the control on the same replicas (same masks, same order) as the
    network values, k = n for memorization, m (test examples) for influence.
    ``extra_masks`` (R', n), ``extra_values`` (R', k), ``extra_blocks`` (R',) or None: the
    control on R' independent replicas of the same design (typically 10-50 x R; cheap for a
    kernel model), from which its estimand mu is estimated. ``folds``: cross-fitting folds.
    """

    values: np.ndarray
    extra_masks: np.ndarray
    extra_values: np.ndarray
    extra_blocks: np.ndarray | None = None
    folds: int = 2


@dataclass(frozen=True)
class ControlledEstimate(Estimate):
    """An Estimate with the control variate's diagnostics.

    ``beta`` (shape of value): the mean over folds of the coefficient applied;
    ``plain_stderr``: the standard error of the estimator without the control on the same
    replicas; ``control_mean``: the control's estimand from the extra replicas.
    """

    beta: np.ndarray | None = None
    plain_stderr: np.ndarray | None = None
    control_mean: Estimate | None = None

    @property
    def variance_ratio(self) -> np.ndarray:
        """Var(controlled) / Var(plain): the fraction of replicas needed for equal stderr."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return (
                np.asarray(self.stderr, np.float64) ** 2
                / np.asarray(self.plain_stderr, np.float64) ** 2
            )

    @property
    def replicas_saved(self) -> np.ndarray:
        """1 - variance_ratio: the fraction of replicas the control saves at equal stderr."""
        return 1.0 - self.variance_ratio


def fold_ids(blocks: np.ndarray | None, replicas: int, folds: int) -> tuple[np.ndarray, ...]:
    """Replica indices of each fold: whole blocks (or single replicas) dealt round-robin."""
    if not isinstance(folds, (int, np.integer)) or folds < 2:
        raise DataError(f"cross-fitting needs folds >= 2, got {folds!r}")
    if blocks is None:
        unit = np.arange(replicas)
    else:
        _, unit = np.unique(blocks, return_inverse=True)
    units = unit.max() + 1
    least = folds * (MIN_REPLICAS_PER_FOLD if blocks is None else MIN_BLOCKS_PER_FOLD)
    if units < least:
        what = "blocks" if blocks is not None else "independent replicas"
        raise DataError(
            f"a control variate with {folds} folds needs at least {least} {what}, got {units}"
        )
    return tuple(np.flatnonzero(unit % folds == k) for k in range(folds))


def _units(blocks: np.ndarray | None, idx: np.ndarray) -> int:
    return len(idx) if blocks is None else len(np.unique(blocks[idx]))


def _check(masks, values, control: KernelControl) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(control.values)
    if c.shape != np.shape(values):
        raise DataError(
            f"control values have shape {c.shape}, the values {np.shape(values)}: the control "
            "must be computed on the same replicas and examples"
        )
    extra = np.asarray(control.extra_values)
    if extra.ndim != 2 or extra.shape[1] != c.shape[1]:
        raise DataError(
            f"control extra_values must be (extra replicas, {c.shape[1]}), got {extra.shape}"
        )
    if len(extra) != len(control.extra_masks):
        raise DataError(
            f"control extra_values need one row per extra mask ({len(control.extra_masks)}), "
            f"got {len(extra)}"
        )
    if np.shape(control.extra_masks)[1:] != np.shape(masks)[1:]:
        raise DataError(
            f"control extra_masks cover {np.shape(control.extra_masks)[1:]} training examples, "
            f"the masks {np.shape(masks)[1:]}"
        )
    for name, a in (("control values", c), ("control extra_values", extra)):
        if not np.isfinite(a.astype(np.float64)).all():
            raise DataError(f"{name} contain NaN or inf")
    return c.astype(np.float64), extra.astype(np.float64)


def controlled(
    estimator: Estimator,
    masks: np.ndarray,
    values: np.ndarray,
    control: KernelControl,
    blocks: np.ndarray | None = None,
) -> ControlledEstimate:
    """``estimator`` (memorization or influence, called as estimator(masks, values, blocks))
    of ``values`` with ``control`` as a cross-fitted control variate (module docstring)."""
    masks = np.asarray(masks)
    blocks = check_blocks(blocks, len(masks))
    plain = estimator(masks, values, blocks)
    c, extra = _check(masks, values, control)
    v = np.asarray(values, np.float64)
    mu = estimator(control.extra_masks, extra, control.extra_blocks)
    mu_var = np.nan_to_num(np.asarray(mu.stderr, np.float64) ** 2)
    folds = fold_ids(blocks, len(masks), control.folds)
    parts = []
    for idx in folds:
        b = None if blocks is None else blocks[idx]
        fv, fc, fs = (estimator(masks[idx], x[idx], b) for x in (v, c, v + c))
        var_v, var_c, var_s = (np.asarray(e.stderr, np.float64) ** 2 for e in (fv, fc, fs))
        cov = (var_s - var_v - var_c) / 2
        parts.append((np.asarray(fv.value, np.float64), fc.value, var_v, var_c, cov))
    units = np.array([_units(blocks, idx) for idx in folds])
    total = units.sum()
    weights = units / total
    value = np.zeros_like(parts[0][0])
    var = np.zeros_like(value)
    sat_den = np.zeros_like(value)
    beta_mean = np.zeros_like(value)
    for k, (ev, ec, var_v, var_c, cov) in enumerate(parts):
        others = [j for j in range(len(parts)) if j != k]
        # per-unit covariance and control variance from the other folds
        cov_unit = np.mean([units[j] * parts[j][4] for j in others], axis=0)
        var_unit = np.mean([units[j] * parts[j][3] for j in others], axis=0)
        denom = var_unit + total * mu_var
        with np.errstate(invalid="ignore", divide="ignore"):
            beta = np.where(denom > 0, cov_unit / np.where(denom > 0, denom, 1.0), 0.0)
        beta = np.where(np.isfinite(beta), beta, 0.0)
        value += weights[k] * (ev - beta * ec)
        part = weights[k] ** 2 * np.maximum(var_v - 2 * beta * cov + beta**2 * var_c, 0.0)
        var += part
        sat_den += part**2 / max(units[k] - 2, 1)
        beta_mean += weights[k] * beta
    value += beta_mean * np.asarray(mu.value, np.float64)
    mu_part = beta_mean**2 * mu_var
    var += mu_part
    extra_units = _units(control.extra_blocks, np.arange(len(extra)))
    sat_den += mu_part**2 / max(extra_units - 2, 1)
    stderr = np.sqrt(var)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(sat_den > 0, var**2 / sat_den, np.inf)
    low, high = intervals.normal(value, stderr, df)
    return ControlledEstimate(
        value,
        stderr,
        plain.n_in,
        plain.n_out,
        low,
        high,
        beta=beta_mean,
        plain_stderr=np.asarray(plain.stderr, np.float64),
        control_mean=mu,
    )
