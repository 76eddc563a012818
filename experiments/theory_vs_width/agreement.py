"""How closely two models' per-example quantities agree, with bootstrap-over-blocks errors.

The bootstrap resamples the units of independence of the subset design: whole blocks of
replicas (``memjax.subsets.block_ids``; under the balanced design at ratio 1/2 a block is a
complementary pair, whose replicas are dependent), or single replicas when the design's
replicas are independent. The pairing matters too: both models are resampled on the same
replica rows (they were trained on the same masks), so the error bars measure the
estimate's noise, not the gap between the models. Examples never IN or never OUT in a
resample are dropped from that resample.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import stats

import memjax as mj

__all__ = [
    "PAIRS",
    "METRICS",
    "QUANTITIES",
    "correlations",
    "bootstrap_rows",
    "compare",
    "accuracy",
]

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


def bootstrap_rows(blocks: np.ndarray | None, replicas: int, rng: np.random.Generator):
    """Replica rows of one bootstrap resample: as many blocks as there are, drawn with
    replacement, each contributing all its replicas (None: each replica is a block)."""
    ids = np.arange(replicas) if blocks is None else np.asarray(blocks)
    if ids.shape != (replicas,):
        raise ValueError(f"blocks must have one id per replica ({replicas}), got {ids.shape}")
    labels, inverse = np.unique(ids, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(labels))]
    return np.concatenate([members[g] for g in rng.integers(0, len(labels), len(labels))])


def compare(
    masks: np.ndarray,
    a: mj.ReplicaOutputs,
    b: mj.ReplicaOutputs,
    boots: int,
    seed: int,
    blocks: np.ndarray | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Each quantity's metrics between models a and b: value, bootstrap stderr and a 95%
    interval, resampling whole blocks (``blocks`` (R,); None: replicas).

    A resample holds fewer distinct blocks than the study, so its per-example estimates are
    noisier and a correlation between two models' estimates is attenuated: the resampled
    statistics are shifted below the value and their percentiles need not hold it. The
    interval is therefore centred on the value with the bootstrap's spread: for the
    correlations on Fisher's scale, tanh(atanh(r) -/+ 1.96 sd(atanh(r*))), inside (-1, 1);
    for the mean absolute difference value -/+ 1.96 sd, floored at 0.
    """
    R = len(masks)
    point = _agreement(masks, a, b, np.arange(R))
    rng = np.random.default_rng(seed)
    samples = [_agreement(masks, a, b, bootstrap_rows(blocks, R, rng)) for _ in range(boots)]
    z = 1.959963984540054

    def summary(q: str, m: str) -> dict[str, float]:
        draws = np.array([s[q][m] for s in samples], float)
        value = point[q][m]
        if m == "mad":
            half = z * np.nanstd(draws, ddof=1)
            low, high = max(value - half, 0.0), value + half
        else:
            clip = 1 - 1e-12
            spread = np.nanstd(np.arctanh(np.clip(draws, -clip, clip)), ddof=1)
            centre = np.arctanh(np.clip(value, -clip, clip))
            low, high = np.tanh(centre - z * spread), np.tanh(centre + z * spread)
        return {
            "value": value,
            "stderr": float(np.nanstd(draws, ddof=1)),
            "ci_low": float(low),
            "ci_high": float(high),
        }

    return {q: {m: summary(q, m) for m in METRICS} for q in QUANTITIES}


def accuracy(out: mj.ReplicaOutputs) -> dict[str, float]:
    """Mean train/test accuracy over replicas, with the stderr over replicas."""
    res = {}
    for split in ("train", "test"):
        per_replica = getattr(out, f"{split}_correct").mean(axis=1)
        res[split] = float(per_replica.mean())
        res[f"{split}_stderr"] = float(per_replica.std(ddof=1) / np.sqrt(len(per_replica)))
    return res
