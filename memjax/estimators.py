"""Subset-sampling estimators (Feldman & Zhang 2020): IN-minus-OUT differences with standard errors.

All functions are pure functions of the masks (R, n) and per-replica values; they never train.
Every estimate carries its standard error and the IN/OUT counts behind it; where an example
was never IN or never OUT the value is NaN (the counts say why).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from memjax.outputs import ReplicaOutputs

__all__ = [
    "Estimate",
    "memorization",
    "influence",
    "top_influence_pairs",
    "consistency",
    "counterfactual_memorization",
    "masked_mean",
]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its standard error and the replica counts it rests on."""

    value: np.ndarray
    stderr: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray


def _check_masks(masks: np.ndarray, values: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks)
    values = np.asarray(values)
    if masks.ndim != 2 or masks.dtype != bool:
        raise ValueError(
            f"masks must be a boolean (replicas, n) array, got {masks.dtype} {masks.shape}"
        )
    if values.ndim != 2 or values.shape[0] != masks.shape[0]:
        raise ValueError(
            f"{what} must be (replicas, examples) with {masks.shape[0]} replicas like the masks, "
            f"got {values.shape}"
        )
    if masks.shape[0] < 2:
        raise ValueError("estimators need at least 2 replicas")
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise ValueError(f"{what} contains NaN or inf")
    return masks, values


def _difference(sum_in, sq_in, n_in, sum_all, sq_all, n_all) -> tuple[np.ndarray, np.ndarray]:
    """Mean(IN) - mean(OUT) and its standard error from sums, sums of squares and counts."""
    n_out = n_all - n_in
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_in = sum_in / n_in
        mean_out = (sum_all - sum_in) / n_out
        var_in = np.maximum(sq_in - n_in * mean_in**2, 0.0) / (n_in - 1)
        var_out = np.maximum((sq_all - sq_in) - n_out * mean_out**2, 0.0) / (n_out - 1)
        value = mean_in - mean_out
        stderr = np.sqrt(var_in / n_in + var_out / n_out)
    value = np.where((n_in > 0) & (n_out > 0), value, np.nan)
    stderr = np.where((n_in > 1) & (n_out > 1), stderr, np.nan)
    return value, stderr


def memorization(masks: np.ndarray, values: np.ndarray) -> Estimate:
    """mem_i = mean_{r: i in S_r} v_ri - mean_{r: i not in S_r} v_ri, per training example.

    ``values`` is (R, n): correctness (Feldman & Zhang's definition) or any per-example
    measure such as margin or negative loss (counterfactual memorization, Zhang et al. 2021).
    Standard error: Welch's, sqrt(s_in^2/n_in + s_out^2/n_out).
    """
    masks, values = _check_masks(masks, values, "values")
    if values.shape != masks.shape:
        raise ValueError(f"values shape {values.shape} differs from masks shape {masks.shape}")
    v = values.astype(np.float64)
    v = v - v.mean(axis=0)  # per-example shift: exact for the difference, stabler variances
    m = masks.astype(np.float64)
    n_in = masks.sum(axis=0)
    value, stderr = _difference(
        (m * v).sum(0), (m * v * v).sum(0), n_in, v.sum(0), (v * v).sum(0), len(masks)
    )
    return Estimate(value, stderr, n_in, len(masks) - n_in)


def _influence_block(m: np.ndarray, v: np.ndarray, n_in: np.ndarray) -> tuple[np.ndarray, ...]:
    """Influence of the train rows of ``m`` (R, nb) on the test columns of ``v`` (R, mb)."""
    sum_in = m.T @ v
    sq_in = m.T @ (v * v)
    value, stderr = _difference(
        sum_in, sq_in, n_in[:, None], v.sum(0)[None], (v * v).sum(0)[None], len(m)
    )
    return value, stderr


def _blocks(total: int, size: int):
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def influence(masks: np.ndarray, test_values: np.ndarray, block_size: int = 2048) -> Estimate:
    """infl_ij = mean_{r: i in S_r} v_rj - mean_{r: i not in S_r} v_rj for train i, test j.

    Computed as matrix products (masks^T @ values) over blocks of ``block_size`` train and
    test examples, so the float64 working set stays at a few block_size^2 arrays; the result
    is float32 (n, m).
    """
    masks, test_values = _check_masks(masks, test_values, "test_values")
    n, m = masks.shape[1], test_values.shape[1]
    value = np.empty((n, m), np.float32)
    stderr = np.empty((n, m), np.float32)
    n_in = masks.sum(axis=0)
    for cols in _blocks(m, block_size):
        v = test_values[:, cols].astype(np.float64)
        v = v - v.mean(axis=0)
        for rows in _blocks(n, block_size):
            val, se = _influence_block(masks[:, rows].astype(np.float64), v, n_in[rows])
            value[rows, cols], stderr[rows, cols] = val, se
    return Estimate(value, stderr, n_in, len(masks) - n_in)


def top_influence_pairs(
    masks: np.ndarray, test_values: np.ndarray, k: int = 20, block_size: int = 2048
) -> list[tuple[int, int, float, float]]:
    """The k (train i, test j) pairs of largest influence, as (i, j, value, stderr), without
    materializing the whole n x m matrix."""
    masks, test_values = _check_masks(masks, test_values, "test_values")
    n, m = masks.shape[1], test_values.shape[1]
    n_in = masks.sum(axis=0)
    heap: list[tuple[float, int, int, float]] = []
    for cols in _blocks(m, block_size):
        v = test_values[:, cols].astype(np.float64)
        v = v - v.mean(axis=0)
        for rows in _blocks(n, block_size):
            val, se = _influence_block(masks[:, rows].astype(np.float64), v, n_in[rows])
            flat = np.where(np.isnan(val), -np.inf, val).ravel()
            top = np.argpartition(flat, -min(k, flat.size))[-k:]
            for t in top:
                if not np.isfinite(flat[t]):
                    continue  # a NaN on the heap would compare False with everything, stick
                i, j = divmod(int(t), val.shape[1])
                item = (float(val[i, j]), rows.start + i, cols.start + j, float(se[i, j]))
                if len(heap) < k:
                    heapq.heappush(heap, item)
                elif item > heap[0]:
                    heapq.heapreplace(heap, item)
    return [(i, j, v, s) for v, i, j, s in sorted(heap, reverse=True) if np.isfinite(v)]


def consistency(masks: np.ndarray, correct: np.ndarray) -> Estimate:
    """C-score (Jiang et al. 2021): accuracy on example i of the replicas that did not train on
    it, i.e. its expected held-out accuracy at this subset ratio; stderr = s / sqrt(n_out)."""
    held_out = masked_mean(~np.asarray(masks, bool), correct)
    return Estimate(held_out.value, held_out.stderr, held_out.n_out, held_out.n_in)


COUNTERFACTUAL_MEASURES = {
    "accuracy": "train_correct",
    "margin": "train_margin",
    "neg_loss": "train_loss",
}


def counterfactual_memorization(
    masks: np.ndarray, outputs_or_values: ReplicaOutputs | np.ndarray, measure: str = "accuracy"
) -> Estimate:
    """Counterfactual memorization (Zhang et al. 2021): E[M | i in S] - E[M | i not in S].

    M is the per-example ``measure``: "accuracy" (then this equals Feldman-Zhang
    memorization), "margin" (logit-scaled confidence) or "neg_loss" (minus the training loss).
    ``outputs_or_values`` is ReplicaOutputs (its final train arrays are used) or the (R, n)
    array the measure is read from: correctness, margins, or *losses* (negated here).
    """
    if measure not in COUNTERFACTUAL_MEASURES:
        raise ValueError(
            f"unknown measure {measure!r}: use one of {sorted(COUNTERFACTUAL_MEASURES)}"
        )
    values = outputs_or_values
    if isinstance(values, ReplicaOutputs):
        values = getattr(values, COUNTERFACTUAL_MEASURES[measure])
    values = np.asarray(values)
    return memorization(masks, -values.astype(np.float64) if measure == "neg_loss" else values)


def masked_mean(masks: np.ndarray, values: np.ndarray) -> Estimate:
    """Per-example mean of ``values`` (R, n) over the replicas where ``masks`` is True.

    Used to average per-replica quantities (proxies) over the replicas that trained on each
    example. stderr = s / sqrt(n_in) (sample std, ddof=1); NaN where n_in is 0 (value) or
    below 2 (stderr). ``n_out`` counts the replicas left out.
    """
    masks, values = _check_masks(masks, values, "values")
    if values.shape != masks.shape:
        raise ValueError(f"values shape {values.shape} differs from masks shape {masks.shape}")
    v = values.astype(np.float64)
    n_in = masks.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(masks, v, 0.0).sum(0) / n_in
        dev = np.where(masks, v - mean, 0.0)
        stderr = np.sqrt((dev * dev).sum(0) / (n_in - 1) / n_in)
    mean = np.where(n_in > 0, mean, np.nan)
    stderr = np.where(n_in > 1, stderr, np.nan)
    return Estimate(mean, stderr, n_in, len(masks) - n_in)
