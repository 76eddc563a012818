"""How closely two models' per-example quantities agree, with bootstrap-over-replicas errors.

The pairing matters: both models are resampled on the same replica rows (they were trained
on the same masks), so the error bars measure the estimate's noise, not the gap between the
models. Examples never IN or never OUT in a resample are dropped from that resample.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

import memjax as mj

__all__ = ["PAIRS", "METRICS", "QUANTITIES", "correlations", "compare", "accuracy"]

PAIRS = (
    ("network", "ntk_gd_paired"),
    ("network", "ntk_gd"),
    ("network", "nngp"),
    ("linearized", "ntk_gd_paired"),
    ("linearized", "ntk_gd"),
    ("network", "linearized"),
)
METRICS = ("pearson", "spearman", "mad")
QUANTITIES = ("memorization", "test_accuracy")


def correlations(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Pearson, Spearman and mean absolute difference over the examples defined in both."""
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return {"pearson": np.nan, "spearman": np.nan, "mad": float(np.mean(np.abs(a - b)))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spearman = stats.spearmanr(a, b).statistic
    return {
        "pearson": float(np.corrcoef(a, b)[0, 1]),
        "spearman": float(spearman),
        "mad": float(np.mean(np.abs(a - b))),
    }


def _agreement(masks, a: mj.ReplicaOutputs, b: mj.ReplicaOutputs, rows) -> dict[str, dict]:
    """Metrics between models a and b on the replica rows ``rows`` (repeats allowed)."""
    m = masks[rows]
    return {
        "memorization": correlations(
            mj.estimators.memorization(m, a.train_correct[rows]).value,
            mj.estimators.memorization(m, b.train_correct[rows]).value,
        ),
        "test_accuracy": correlations(a.test_correct[rows].mean(0), b.test_correct[rows].mean(0)),
    }


def compare(
    masks: np.ndarray, a: mj.ReplicaOutputs, b: mj.ReplicaOutputs, boots: int, seed: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Each quantity's metrics between models a and b, with bootstrap-over-replicas stderr."""
    R = len(masks)
    point = _agreement(masks, a, b, np.arange(R))
    rng = np.random.default_rng(seed)
    samples = [_agreement(masks, a, b, rng.integers(0, R, R)) for _ in range(boots)]
    return {
        q: {
            m: {
                "value": point[q][m],
                "stderr": float(np.nanstd([s[q][m] for s in samples], ddof=1)),
            }
            for m in METRICS
        }
        for q in QUANTITIES
    }


def accuracy(out: mj.ReplicaOutputs) -> dict[str, float]:
    """Mean train/test accuracy over replicas, with the stderr over replicas."""
    res = {}
    for split in ("train", "test"):
        per_replica = getattr(out, f"{split}_correct").mean(axis=1)
        res[split] = float(per_replica.mean())
        res[f"{split}_stderr"] = float(per_replica.std(ddof=1) / np.sqrt(len(per_replica)))
    return res
