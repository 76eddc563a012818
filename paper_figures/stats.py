"""Small numeric summaries the figures store: histograms, binned means, ROC points."""

from __future__ import annotations

import numpy as np

from memjax.privacy import resolvable, roc_curve, tpr_at

__all__ = ["histogram", "binned_means", "roc_points", "spearman"]


def histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
    """Counts of the finite values in each bin (the last bin includes its right edge)."""
    values = np.asarray(values, float)
    return np.histogram(values[np.isfinite(values)], bins=edges)[0].tolist()


def binned_means(x: np.ndarray, y: np.ndarray, edges: np.ndarray) -> dict[str, list]:
    """Mean of y (with stderr and count) for x in each bin, and the mean x of each bin (where
    to draw it); NaN where a bin has < 2 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    idx = np.digitize(x[ok], edges[1:-1])
    out: dict[str, list] = {"x": [], "mean": [], "stderr": [], "count": []}
    for b in range(len(edges) - 1):
        xs, v = x[ok][idx == b], y[ok][idx == b]
        enough = len(v) >= 2
        out["count"].append(len(v))
        out["x"].append(xs.mean() if enough else np.nan)
        out["mean"].append(v.mean() if enough else np.nan)
        out["stderr"].append(v.std(ddof=1) / np.sqrt(len(v)) if enough else np.nan)
    return {"bin_edges": edges, **out}


def roc_points(labels: np.ndarray, scores: np.ndarray, fpr_grid: np.ndarray) -> dict:
    """ROC of "positive iff score is high" at the given FPRs, plus the full curve's AUC.

    Examples with a non-finite score are left out (their count is returned). The points
    stop at FPR 1/(negatives): below it a TPR would be the zero-false-positive count.
    """
    ok = np.isfinite(scores)
    labels = np.asarray(labels, bool)[ok]
    fpr, tpr, auc = roc_curve(labels, np.asarray(scores, float)[ok])
    n_neg = int((~labels).sum())
    shown = resolvable(fpr_grid, n_neg)
    return {
        "fpr": fpr_grid[shown],
        "tpr": tpr_at(fpr, tpr, fpr_grid[shown]),
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
