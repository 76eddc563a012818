"""The IN-minus-OUT estimators: memorization, influence, held-out accuracy, C-score,
counterfactual memorization and per-replica means (their shared core and its conventions:
``_core``)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from functools import partial

import numpy as np

from memjax import intervals
from memjax._deprecation import renamed_keyword
from memjax.errors import DataError
from memjax.estimators._control import KernelControl, controlled
from memjax.estimators._core import (
    Estimate,
    _block_matrix,
    _design_effect,
    _finish,
    _welch,
    check_masks,
)
from memjax.outputs import ReplicaOutputs

# Above this many replicas per block, the cluster sum of squares of influence is accumulated
# block by block instead of by pairs of within-block positions (fewer matmuls for pairs).
_POSITION_PAIRS_MAX_BLOCK = 4


def memorization(
    masks: np.ndarray,
    values: np.ndarray,
    blocks: np.ndarray | None = None,
    *,
    control: KernelControl | None = None,
) -> Estimate:
    """mem_i = mean_{r: i in S_r} v_ri - mean_{r: i not in S_r} v_ri, per training example.

    ``values`` is (R, n): correctness (Feldman & Zhang's definition) or any per-example
    measure such as margin or negative loss (counterfactual memorization, Zhang et al. 2021).
    ``blocks`` (R,): block ids of the replicas (see the module docstring); None when the
    replicas are independent. ``control``: a control variate (``KernelControl``; e.g.
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
    masks: np.ndarray, test_values: np.ndarray, blocks: np.ndarray | None, tile_size: int
):
    """Yield (rows, cols, value, stderr, ci_low, ci_high) over tiles of the (n, m) matrix."""
    masks, test_values = check_masks(masks, test_values, "test_values")
    onehot = _block_matrix(blocks, len(masks))
    proportions = test_values.dtype == bool
    n, m = masks.shape[1], test_values.shape[1]
    n_in = masks.sum(axis=0)
    for cols in _tiles(m, tile_size):
        v = test_values[:, cols].astype(np.float64)
        shift = v.mean(axis=0)
        v = v - shift
        for rows in _tiles(n, tile_size):
            tile = masks[:, rows].astype(np.float64)
            yield rows, cols, *_influence_tile(tile, v, shift, n_in[rows], onehot, proportions)


@renamed_keyword("block_size", "tile_size")
def influence(
    masks: np.ndarray,
    test_values: np.ndarray,
    blocks: np.ndarray | None = None,
    *,
    tile_size: int = 2048,
    control: KernelControl | None = None,
) -> Estimate:
    """infl_ij = mean_{r: i in S_r} v_rj - mean_{r: i not in S_r} v_rj for train i, test j.

    Computed as matrix products (masks^T @ values) over tiles of ``tile_size`` train and
    test examples, so the float64 working set stays at a few tile_size^2 arrays; the result
    is float32 (n, m). ``blocks`` and ``control`` (on the test values (R, m)) as in
    ``memorization``.
    """
    if control is not None:
        plain = partial(influence, tile_size=tile_size)
        return controlled(plain, masks, test_values, control, blocks)
    n, m = np.shape(masks)[1], np.shape(test_values)[1]
    out = {k: np.empty((n, m), np.float32) for k in ("value", "stderr", "ci_low", "ci_high")}
    for rows, cols, *tile in _influence_tiles(masks, test_values, blocks, tile_size):
        for key, part in zip(out, tile, strict=True):
            out[key][rows, cols] = part
    n_in = np.asarray(masks).sum(axis=0)
    return Estimate(n_in=n_in, n_out=len(masks) - n_in, **out)


@renamed_keyword("block_size", "tile_size")
def top_influence_pairs(
    masks: np.ndarray,
    test_values: np.ndarray,
    *,
    k: int = 20,
    blocks: np.ndarray | None = None,
    tile_size: int = 2048,
) -> list[tuple[int, int, float, float, float, float]]:
    """The k (train i, test j) pairs of largest influence, as (i, j, value, stderr, ci_low,
    ci_high), without materializing the whole n x m matrix."""
    heap: list[tuple[float, int, int, float, float, float]] = []
    for rows, cols, val, se, low, high in _influence_tiles(masks, test_values, blocks, tile_size):
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
        raise DataError("c_score needs the held-out accuracy of at least one subset ratio")
    shapes = {np.shape(e.value) for e in per_ratio}
    if len(shapes) != 1:
        raise DataError(f"held-out accuracies cover different examples: shapes {sorted(shapes)}")
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
        raise DataError(
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
        raise DataError(f"need a per-replica vector of at least 2 values, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError("per-replica values contain NaN or inf")
    onehot = _block_matrix(blocks, len(x))
    mean = x.mean()
    sums = x - mean if onehot is None else onehot @ (x - mean)
    g = len(sums)
    stderr = np.sqrt(g / (g - 1) * (sums**2).sum()) / len(x) if g > 1 else np.nan
    low, high = intervals.normal(mean, stderr, g - 1.0)
    return Estimate(
        np.asarray(mean), np.asarray(stderr), np.asarray(len(x)), np.asarray(0), low, high
    )
