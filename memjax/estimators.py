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

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from memjax import intervals
from memjax.outputs import ReplicaOutputs

__all__ = [
    "Estimate",
    "ControlledEstimate",
    "KernelControl",
    "memorization",
    "influence",
    "top_influence_pairs",
    "held_out_accuracy",
    "c_score",
    "counterfactual_memorization",
    "masked_mean",
    "replica_mean",
    "check_blocks",
    "check_masks",
    "Datamodels",
    "datamodels",
    "LDS",
    "lds",
    "loo_memorization",
    "loo_influence",
]

# Above this many replicas per block, the cluster sum of squares of influence is accumulated
# block by block instead of by pairs of within-block positions (fewer matmuls for pairs).
_POSITION_PAIRS_MAX_BLOCK = 4
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
    masks: np.ndarray, values: np.ndarray, what: str, same_shape: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``masks`` (R, n) bool and per-replica ``values`` (R, m) as arrays, or a specific error:
    one row per replica, at least 2 replicas, no NaN or inf; ``same_shape``: m == n (values
    of the training examples themselves)."""
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
    if same_shape and values.shape != masks.shape:
        raise ValueError(f"{what} shape {values.shape} differs from masks shape {masks.shape}")
    if masks.shape[0] < 2:
        raise ValueError("estimators need at least 2 replicas")
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise ValueError(f"{what} contains NaN or inf")
    return masks, values


def check_blocks(blocks: np.ndarray | None, replicas: int) -> np.ndarray | None:
    """``blocks`` as an integer (R,) array of block ids, or None; a specific error otherwise."""
    if blocks is None:
        return None
    blocks = np.asarray(blocks)
    if blocks.shape != (replicas,) or not np.issubdtype(blocks.dtype, np.integer):
        raise ValueError(
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


def memorization(
    masks: np.ndarray,
    values: np.ndarray,
    blocks: np.ndarray | None = None,
    control: KernelControl | None = None,
) -> Estimate:
    """mem_i = mean_{r: i in S_r} v_ri - mean_{r: i not in S_r} v_ri, per training example.

    ``values`` is (R, n): correctness (Feldman & Zhang's definition) or any per-example
    measure such as margin or negative loss (counterfactual memorization, Zhang et al. 2021).
    ``blocks`` (R,): block ids of the replicas (see the module docstring); None when the
    replicas are independent. ``control``: a control variate (memjax.control; e.g.
    ``memjax.theory.kernel_control``), which returns a ControlledEstimate of the same
    estimand with a t interval.
    """
    if control is not None:
        return controlled(memorization, masks, values, control, blocks)
    masks, values = check_masks(masks, values, "values", same_shape=True)
    onehot = _block_matrix(blocks, len(masks))
    v = values.astype(np.float64)
    shift = v.mean(axis=0)
    v = v - shift  # per-example shift: exact for the difference, stabler variances
    m = masks.astype(np.float64)
    n_in = masks.sum(axis=0)
    n_out = len(masks) - n_in
    mean_in, mean_out, stderr, df = _welch(
        (m * v).sum(0), (m * v * v).sum(0), n_in, v.sum(0), (v * v).sum(0), len(masks)
    )
    if onehot is not None:
        g = len(onehot)
        with np.errstate(invalid="ignore", divide="ignore"):
            u = (onehot @ (m * v) - (onehot @ m) * mean_in) / n_in - (
                onehot @ ((1 - m) * v) - (onehot @ (1 - m)) * mean_out
            ) / n_out
            stderr = np.sqrt(g / (g - 1) * (u * u).sum(0)) if g > 1 else np.full(n_in.shape, np.nan)
        df = g - 1.0
    value, stderr, low, high = _finish(
        mean_in, mean_out, n_in, n_out, stderr, df, shift, values.dtype == bool, onehot is not None
    )
    return Estimate(value, stderr, n_in, n_out, low, high)


def _cluster_sum_of_squares(
    onehot: np.ndarray,
    a: np.ndarray,
    v: np.ndarray,
    p: np.ndarray,
    q: np.ndarray,
    mean_in: np.ndarray,
    mean_out: np.ndarray,
) -> np.ndarray:
    """sum_g u_g^2 (nb, mb) with u_g = sum_{r in g} a_ri v_rj - p_gi mean_in_ij + q_gi mean_out_ij.

    ``a`` (R, nb) are the replicas' linearization weights, ``p``/``q`` (G, nb) each block's
    share of an example's IN/OUT replicas. Expanded so that only matrix products touch R.
    """
    block_of = onehot.argmax(axis=0)
    pa = p[block_of] * a
    qa = q[block_of] * a
    t2 = mean_in * (pa.T @ v) - mean_out * (qa.T @ v)
    t3 = (
        mean_in**2 * (p * p).sum(0)[:, None]
        - 2 * mean_in * mean_out * (p * q).sum(0)[:, None]
        + mean_out**2 * (q * q).sum(0)[:, None]
    )
    sizes = onehot.sum(axis=1).astype(int)
    t1 = np.zeros((a.shape[1], v.shape[1]))
    if sizes.max() <= _POSITION_PAIRS_MAX_BLOCK:
        # replicas at within-block position s of every block: A_s (G, nb), V_s (G, mb)
        order = np.argsort(block_of, kind="stable")
        position = np.empty(len(block_of), int)
        starts = np.r_[0, np.cumsum(sizes)[:-1]]
        position[order] = np.arange(len(order)) - np.repeat(starts, sizes)
        g = len(onehot)
        a_pos = np.zeros((sizes.max(), g, a.shape[1]))
        v_pos = np.zeros((sizes.max(), g, v.shape[1]))
        a_pos[position, block_of] = a
        v_pos[position, block_of] = v
        for s in range(sizes.max()):
            t1 += (a_pos[s] ** 2).T @ (v_pos[s] ** 2)
            for t in range(s + 1, sizes.max()):
                t1 += 2 * (a_pos[s] * a_pos[t]).T @ (v_pos[s] * v_pos[t])
    else:
        for members in onehot.astype(bool):
            s = a[members].T @ v[members]
            t1 += s * s
    return t1 - 2 * t2 + t3


def _influence_tile(
    m: np.ndarray,
    v: np.ndarray,
    shift: np.ndarray,
    n_in: np.ndarray,
    onehot: np.ndarray | None,
    proportions: bool,
) -> tuple[np.ndarray, ...]:
    """value, stderr, ci_low, ci_high (nb, mb) of the train rows of ``m`` (R, nb) on the
    centred test columns of ``v`` (R, mb)."""
    r = len(m)
    n_out = r - n_in
    mean_in, mean_out, stderr, df = _welch(
        m.T @ v, m.T @ (v * v), n_in[:, None], v.sum(0)[None], (v * v).sum(0)[None], r
    )
    if onehot is not None:
        g = len(onehot)
        with np.errstate(invalid="ignore", divide="ignore"):
            inv_in = np.where(n_in > 0, 1.0 / n_in, 0.0)
            inv_out = np.where(n_out > 0, 1.0 / n_out, 0.0)
        a = m * inv_in - (1 - m) * inv_out
        p = (onehot @ m) * inv_in
        q = (onehot @ (1 - m)) * inv_out
        ss = _cluster_sum_of_squares(
            onehot, a, v, p, q, np.nan_to_num(mean_in), np.nan_to_num(mean_out)
        )
        stderr = np.sqrt(g / (g - 1) * np.maximum(ss, 0.0)) if g > 1 else np.full(ss.shape, np.nan)
        df = g - 1.0
    return _finish(
        mean_in,
        mean_out,
        n_in[:, None],
        n_out[:, None],
        stderr,
        df,
        shift[None, :],
        proportions,
        onehot is not None,
    )


def _tiles(total: int, size: int):
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def _influence_tiles(
    masks: np.ndarray, test_values: np.ndarray, blocks: np.ndarray | None, block_size: int
):
    """Yield (rows, cols, value, stderr, ci_low, ci_high) over tiles of the (n, m) matrix."""
    masks, test_values = check_masks(masks, test_values, "test_values")
    onehot = _block_matrix(blocks, len(masks))
    proportions = test_values.dtype == bool
    n, m = masks.shape[1], test_values.shape[1]
    n_in = masks.sum(axis=0)
    for cols in _tiles(m, block_size):
        v = test_values[:, cols].astype(np.float64)
        shift = v.mean(axis=0)
        v = v - shift
        for rows in _tiles(n, block_size):
            tile = masks[:, rows].astype(np.float64)
            yield rows, cols, *_influence_tile(tile, v, shift, n_in[rows], onehot, proportions)


def influence(
    masks: np.ndarray,
    test_values: np.ndarray,
    blocks: np.ndarray | None = None,
    block_size: int = 2048,
    control: KernelControl | None = None,
) -> Estimate:
    """infl_ij = mean_{r: i in S_r} v_rj - mean_{r: i not in S_r} v_rj for train i, test j.

    Computed as matrix products (masks^T @ values) over tiles of ``block_size`` train and
    test examples, so the float64 working set stays at a few block_size^2 arrays; the result
    is float32 (n, m). ``blocks`` and ``control`` (on the test values (R, m)) as in
    ``memorization``.
    """
    if control is not None:
        plain = partial(influence, block_size=block_size)
        return controlled(plain, masks, test_values, control, blocks)
    n, m = np.shape(masks)[1], np.shape(test_values)[1]
    out = {k: np.empty((n, m), np.float32) for k in ("value", "stderr", "ci_low", "ci_high")}
    for rows, cols, *tile in _influence_tiles(masks, test_values, blocks, block_size):
        for key, part in zip(out, tile, strict=True):
            out[key][rows, cols] = part
    n_in = np.asarray(masks).sum(axis=0)
    return Estimate(n_in=n_in, n_out=len(masks) - n_in, **out)


def top_influence_pairs(
    masks: np.ndarray,
    test_values: np.ndarray,
    k: int = 20,
    blocks: np.ndarray | None = None,
    block_size: int = 2048,
) -> list[tuple[int, int, float, float, float, float]]:
    """The k (train i, test j) pairs of largest influence, as (i, j, value, stderr, ci_low,
    ci_high), without materializing the whole n x m matrix."""
    heap: list[tuple[float, int, int, float, float, float]] = []
    for rows, cols, val, se, low, high in _influence_tiles(masks, test_values, blocks, block_size):
        flat = np.where(np.isnan(val), -np.inf, val).ravel()
        top = np.argpartition(flat, -min(k, flat.size))[-k:]
        for t in top:
            if not np.isfinite(flat[t]):
                continue  # a NaN on the heap would compare False with everything, stick
            i, j = divmod(int(t), val.shape[1])
            item = (
                float(val[i, j]),
                rows.start + i,
                cols.start + j,
                float(se[i, j]),
                float(low[i, j]),
                float(high[i, j]),
            )
            if len(heap) < k:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
    return [(i, j, v, s, lo, hi) for v, i, j, s, lo, hi in sorted(heap, reverse=True)]


def masked_mean(
    masks: np.ndarray, values: np.ndarray, blocks: np.ndarray | None = None
) -> Estimate:
    """Per-example mean of ``values`` (R, n) over the replicas where ``masks`` is True.

    Used to average per-replica quantities (proxies) over the replicas that trained on each
    example. stderr = s / sqrt(n_in) (sample std, ddof=1), or cluster-robust over the blocks
    holding such replicas; NaN where n_in is 0 (value) or below 2 (stderr). Boolean values get
    a Wilson interval (design-effect adjusted with blocks), others value -/+ t * stderr.
    ``n_out`` counts the replicas left out.
    """
    masks, values = check_masks(masks, values, "values", same_shape=True)
    onehot = _block_matrix(blocks, len(masks))
    v = values.astype(np.float64)
    n_in = masks.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(masks, v, 0.0).sum(0) / n_in
        dev = np.where(masks, v - mean, 0.0)
        stderr = np.sqrt((dev * dev).sum(0) / (n_in - 1) / n_in)
        df = n_in - 1.0
        if onehot is not None:
            g = ((onehot @ masks) > 0).sum(0)  # blocks holding the example's replicas
            u = (onehot @ dev) / n_in
            stderr = np.sqrt(g / (g - 1) * (u * u).sum(0))
            df = g - 1.0
    mean = np.where(n_in > 0, mean, np.nan)
    stderr = np.where((n_in > 1) & (df > 0), stderr, np.nan)
    if values.dtype == bool:
        deff = np.ones_like(mean)
        if onehot is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                deff = _design_effect(stderr, mean * (1 - mean) / n_in)
        with np.errstate(invalid="ignore", divide="ignore"):
            eff = n_in / deff
            low, high = intervals.wilson(mean * eff, eff, intervals.quantile(df))
    else:
        low, high = intervals.normal(mean, stderr, df)
    low, high = np.where(n_in > 0, low, np.nan), np.where(n_in > 0, high, np.nan)
    return Estimate(mean, stderr, n_in, len(masks) - n_in, low, high)


def held_out_accuracy(
    masks: np.ndarray, correct: np.ndarray, blocks: np.ndarray | None = None
) -> Estimate:
    """Accuracy on example i of the replicas that did not train on it: its expected held-out
    accuracy at this one subset ratio (Jiang et al.'s C-score averages it over ratios: see
    ``c_score``). ``n_out`` counts the held-out replicas it rests on."""
    held_out = masked_mean(~np.asarray(masks, bool), correct, blocks)
    return Estimate(
        held_out.value,
        held_out.stderr,
        held_out.n_out,
        held_out.n_in,
        held_out.ci_low,
        held_out.ci_high,
    )


def c_score(per_ratio: Sequence[Estimate]) -> Estimate:
    """C-score (Jiang et al. 2021): held-out accuracy averaged over subset ratios.

    ``per_ratio`` holds one ``held_out_accuracy`` per ratio, from independent studies on the
    same examples. stderr = sqrt(sum se_k^2) / K; the interval is the mean of the per-ratio
    interval bounds (conservative: never narrower than the independent combination, and it
    stays inside [0, 1] and open at the boundary).
    """
    if len(per_ratio) < 1:
        raise ValueError("c_score needs the held-out accuracy of at least one subset ratio")
    shapes = {np.shape(e.value) for e in per_ratio}
    if len(shapes) != 1:
        raise ValueError(f"held-out accuracies cover different examples: shapes {sorted(shapes)}")
    k = len(per_ratio)

    def stack(name: str) -> np.ndarray:
        return np.stack([np.asarray(getattr(e, name), np.float64) for e in per_ratio])

    return Estimate(
        stack("value").mean(0),
        np.sqrt((stack("stderr") ** 2).sum(0)) / k,
        stack("n_in").sum(0).astype(np.int64),
        stack("n_out").sum(0).astype(np.int64),
        stack("ci_low").mean(0),
        stack("ci_high").mean(0),
    )


COUNTERFACTUAL_MEASURES = {
    "accuracy": "train_correct",
    "margin": "train_margin",
    "neg_loss": "train_loss",
}


def counterfactual_memorization(
    masks: np.ndarray,
    outputs_or_values: ReplicaOutputs | np.ndarray,
    measure: str = "accuracy",
    blocks: np.ndarray | None = None,
) -> Estimate:
    """Counterfactual memorization (Zhang et al. 2021): E[M | i in S] - E[M | i not in S].

    M is the per-example ``measure``: "accuracy" (then this equals Feldman-Zhang
    memorization), "margin" (logit-scaled confidence) or "neg_loss" (minus the training loss).
    ``outputs_or_values`` is ReplicaOutputs (its final train arrays are used) or the (R, n)
    array the measure is read from: correctness, margins, or *losses* (negated here).
    ``blocks`` as in ``memorization``.
    """
    if measure not in COUNTERFACTUAL_MEASURES:
        raise ValueError(
            f"unknown measure {measure!r}: use one of {sorted(COUNTERFACTUAL_MEASURES)}"
        )
    values = outputs_or_values
    if isinstance(values, ReplicaOutputs):
        values = getattr(values, COUNTERFACTUAL_MEASURES[measure])
    values = np.asarray(values)
    values = -values.astype(np.float64) if measure == "neg_loss" else values
    return memorization(masks, values, blocks)


def replica_mean(values: np.ndarray, blocks: np.ndarray | None = None) -> Estimate:
    """Mean of a per-replica quantity ``values`` (R,), e.g. each replica's test accuracy,
    with its 95% interval (a 0-d Estimate; ``n_in`` counts the replicas averaged).

    Blocks are the clusters (cluster-robust standard error with G/(G-1) correction, Student
    t with G - 1 degrees of freedom); without blocks every replica is its own cluster, which
    is the ordinary t interval.
    """
    x = np.asarray(values, np.float64)
    if x.ndim != 1 or len(x) < 2:
        raise ValueError(f"need a per-replica vector of at least 2 values, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("per-replica values contain NaN or inf")
    onehot = _block_matrix(blocks, len(x))
    mean = x.mean()
    sums = x - mean if onehot is None else onehot @ (x - mean)
    g = len(sums)
    stderr = np.sqrt(g / (g - 1) * (sums**2).sum()) / len(x) if g > 1 else np.nan
    low, high = intervals.normal(mean, stderr, g - 1.0)
    return Estimate(
        np.asarray(mean), np.asarray(stderr), np.asarray(len(x)), np.asarray(0), low, high
    )


# Estimators in their own modules, offered here with the others (imported last: they use
# the helpers above).
from memjax.control import ControlledEstimate, KernelControl, controlled  # noqa: E402
from memjax.datamodels import Datamodels, datamodels  # noqa: E402
from memjax.lds import LDS, lds  # noqa: E402
from memjax.loo import loo_influence, loo_memorization  # noqa: E402
