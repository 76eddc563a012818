"""Small numeric summaries the figures store: histograms, binned means, ROC points, and
averages with 95% intervals: of per-example estimates over groups of examples, with the
replicas' blocks as the units (``example_average``), or of values of independent units
such as examples or replicas (``unit_mean``, ``unit_difference``, ``proportion_mean``,
``proportion_difference``)."""

from __future__ import annotations

import numpy as np

from memjax import intervals
from memjax.privacy import resolvable, roc_curve, tpr_at

__all__ = [
    "histogram",
    "binned_means",
    "roc_points",
    "spearman",
    "example_average",
    "difference_statement",
    "unit_mean",
    "unit_difference",
    "proportion_mean",
    "proportion_difference",
]


def histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
    """Counts of the finite values in each bin (the last bin includes its right edge)."""
    values = np.asarray(values, float)
    return np.histogram(values[np.isfinite(values)], bins=edges)[0].tolist()


def binned_means(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> dict[str, list]:
    """Mean of y for x in each bin with its stderr, t interval (``unit_mean``: the examples
    are the units, their values held fixed) and count, and the mean x of each bin (where to
    draw it); NaN where a bin has < 2 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    idx = np.digitize(x[ok], edges[1:-1])
    keys = ("mean", "stderr", "ci_low", "ci_high")
    out: dict[str, list] = {"x": [], "count": [], **{k: [] for k in keys}}
    for b in range(len(edges) - 1):
        xs, v = x[ok][idx == b], y[ok][idx == b]
        enough = len(v) >= 2
        out["count"].append(len(v))
        out["x"].append(xs.mean() if enough else np.nan)
        m = unit_mean(v if enough else np.zeros(0))
        for k, source in zip(keys, ("value", "stderr", "ci_low", "ci_high"), strict=True):
            out[k].append(m[source])
    return {"bin_edges": edges, **out}


def roc_points(labels: np.ndarray, scores: np.ndarray, fpr_grid: np.ndarray) -> dict:
    """ROC of "positive iff score is high" at the given FPRs, plus the full curve's AUC.

    Examples with a non-finite score are left out (their count is returned). The points
    stop at FPR 1/(negatives): below it a TPR would be the zero-false-positive count. Each
    TPR has its Clopper-Pearson 95% interval (``tpr_low``, ``tpr_high``), the positives
    being the units and the threshold that attains the FPR held fixed.
    """
    ok = np.isfinite(scores)
    labels = np.asarray(labels, bool)[ok]
    fpr, tpr, auc = roc_curve(labels, np.asarray(scores, float)[ok])
    n_neg, n_pos = int((~labels).sum()), int(labels.sum())
    shown = resolvable(fpr_grid, n_neg)
    at = tpr_at(fpr, tpr, fpr_grid[shown])
    low, high = intervals.clopper_pearson(np.round(at * n_pos), n_pos)
    return {
        "fpr": fpr_grid[shown],
        "tpr": at,
        "tpr_low": low,
        "tpr_high": high,
        "auc": auc,
        "excluded": int((~ok).sum()),
        "negatives": n_neg,
    }


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation over the examples where both are finite."""
    from scipy.stats import spearmanr

    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan")  # undefined for constant input
    return float(spearmanr(x[ok], y[ok]).statistic)


def example_average(
    masks: np.ndarray,
    values: np.ndarray,
    blocks: np.ndarray | None,
    weights: np.ndarray,
    held_out: bool = False,
) -> dict[str, float]:
    """sum_i weights_i * est_i over examples, with its standard error and 95% interval.

    ``est_i`` is example i's memorization (mean of ``values`` (R, n) over the replicas
    trained on it minus the mean over the others) or, with ``held_out``, its held-out mean
    (the mean over the replicas not trained on it). ``weights`` (n,), e.g. 1/|group| on a
    group for its mean, or +1/|a| on a and -1/|b| on b for a difference of group means; it
    must be 0 where est_i is undefined. The examples are held fixed: the error is that of
    the replicas, with the block as the unit of independence (``blocks`` (R,), None:
    replicas independent), by the same linearization as ``memjax.estimators`` (G/(G-1)
    corrected), so that it carries the dependence of estimates that share replicas. The
    interval is value -/+ t(G-1) * stderr, except for the held-out mean of booleans: a
    Wilson interval on the weights' effective (Kish) count divided by the design effect,
    which stays inside [0, 1] and open there.
    """
    masks = np.asarray(masks, bool)
    v = np.asarray(values, np.float64)
    w = np.asarray(weights, np.float64)
    if masks.ndim != 2 or v.shape != masks.shape or w.shape != masks.shape[1:]:
        raise ValueError(
            f"need masks and values (R, n) and weights (n,), got {masks.shape}, {v.shape}, "
            f"{w.shape}"
        )
    m = masks.astype(np.float64)
    n_in, n_out = m.sum(0), (1 - m).sum(0)
    defined = (n_out > 0) & (held_out | (n_in > 0))
    if (w[~defined] != 0).any():
        raise ValueError("weights must be 0 on examples whose estimate is undefined")
    a = np.divide(1 - m, n_out, out=np.zeros_like(m), where=n_out > 0)
    centre = np.broadcast_to((a * v).sum(0), v.shape)
    if not held_out:
        a_in = np.divide(m, n_in, out=np.zeros_like(m), where=n_in > 0)
        centre = np.where(masks, (a_in * v).sum(0), centre)
        a = a_in - a
    value = float(((a * v).sum(0) * w).sum())
    units = np.arange(len(m)) if blocks is None else np.unique(blocks, return_inverse=True)[1]
    per_unit = np.bincount(units, weights=(a * (v - centre)) @ w)
    g = len(per_unit)
    stderr = float(np.sqrt(g / (g - 1) * (per_unit**2).sum())) if g > 1 else float("nan")
    z = float(intervals.quantile(g - 1.0))
    if held_out and np.asarray(values).dtype == bool:
        value = float(np.clip(np.round(value, 12), 0.0, 1.0))  # a mean of 0/1 values
        kish = 1.0 / ((a * w) ** 2).sum()
        indep = value * (1 - value) / kish
        deff = stderr**2 / indep if indep > 0 and stderr > 1e-12 else 1.0  # NaN > x: False
        low, high = intervals.wilson(value * kish / deff, kish / deff, z)
    else:
        low, high = value - z * stderr, value + z * stderr
    return {"value": value, "stderr": stderr, "ci_low": float(low), "ci_high": float(high)}


def difference_statement(
    more: str, less: str, what: str, value: float, low: float, high: float
) -> str:
    """A sentence for "``more`` exceeds ``less`` in ``what``" chosen from the 95% interval
    of the difference (``value`` = more - less): larger, smaller or not distinguishable."""
    numbers = f"difference {value:.3f}, 95% interval [{low:.3f}, {high:.3f}]"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{more} vs {less}: {what} difference {value:.3f} (no interval)"
    if low > 0:
        return f"{more} have a larger {what} than {less} ({numbers})"
    if high < 0:
        return f"{more} have a smaller {what} than {less} ({numbers})"
    return f"{more} and {less} do not differ distinguishably in {what} ({numbers}, includes 0)"


def _finite(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, np.float64).ravel()
    return v[np.isfinite(v)]


def unit_mean(values: np.ndarray) -> dict[str, float]:
    """Mean of the finite ``values`` (k,), one per independent unit (an example, a replica),
    with its standard error and t(k - 1) 95% interval; NaN interval with < 2 units."""
    v = _finite(values)
    k = len(v)
    value = float(v.mean()) if k else float("nan")
    stderr = float(v.std(ddof=1) / np.sqrt(k)) if k > 1 else float("nan")
    low, high = intervals.normal(value, stderr, k - 1.0)
    return {
        "value": value,
        "stderr": stderr,
        "ci_low": float(low),
        "ci_high": float(high),
        "units": k,
    }


def unit_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """mean(a) - mean(b) of two independent sets of units with Welch's standard error and
    t interval (Welch-Satterthwaite degrees of freedom)."""
    ma, mb = unit_mean(a), unit_mean(b)
    va, vb = ma["stderr"] ** 2, mb["stderr"] ** 2
    value, stderr = ma["value"] - mb["value"], float(np.sqrt(va + vb))
    ka, kb = ma["units"], mb["units"]
    den = va**2 / (ka - 1) + vb**2 / (kb - 1) if min(ka, kb) > 1 else float("nan")
    df = (va + vb) ** 2 / den if den > 0 else min(ka, kb) - 1.0  # Welch-Satterthwaite
    low, high = intervals.normal(value, stderr, df)
    return {"value": value, "stderr": stderr, "ci_low": float(low), "ci_high": float(high)}


def _effective(values: np.ndarray) -> tuple[float, float, float, int]:
    """Mean p, its standard error, the effective count k / deff (deff = observed variance
    over the binomial p (1 - p); 1 where either is 0) and the number of units k."""
    v = _finite(values)
    k = len(v)
    if k < 2:
        return (float(v.mean()) if k else float("nan")), float("nan"), float(k), k
    p, var = float(v.mean()), float(v.var(ddof=1))
    binomial = p * (1 - p)
    deff = var / binomial if var > 0 and binomial > 0 else 1.0
    return p, float(np.sqrt(var / k)), k / deff, k


def proportion_mean(values: np.ndarray) -> dict[str, float]:
    """Mean of per-unit proportions ``values`` (k,) in [0, 1] (e.g. an example's accuracy
    over replicas) with a Wilson interval on the effective count k / deff (t(k - 1)
    quantile), which stays inside [0, 1] and open at 0 and 1 (deff = 1 there)."""
    p, stderr, n_eff, k = _effective(values)
    low, high = intervals.wilson(p * n_eff, n_eff, intervals.quantile(k - 1.0))
    return {"value": p, "stderr": stderr, "ci_low": float(low), "ci_high": float(high), "units": k}


def proportion_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """mean(a) - mean(b) of per-unit proportions with Newcombe's hybrid score interval on
    the effective counts (``proportion_mean``), open at -1, 0 and 1. The two sets are treated
    as independent: where they are the same units in two conditions, positively correlated,
    the interval is conservative."""
    (pa, sa, na, ka), (pb, sb, nb, kb) = _effective(a), _effective(b)
    if min(ka, kb) < 2:
        nan = float("nan")
        return {"value": pa - pb, "stderr": nan, "ci_low": nan, "ci_high": nan}
    low, high = intervals.newcombe(pa * na, na, pb * nb, nb, intervals.quantile(min(ka, kb) - 1.0))
    return {
        "value": pa - pb,
        "stderr": float(np.hypot(sa, sb)),
        "ci_low": float(low),
        "ci_high": float(high),
    }
