"""An empirical lower bound on epsilon from a membership attack (auditing DP-SGD).

If training is (eps, delta)-DP, every membership test's true and false positive rates obey
TPR <= e^eps FPR + delta and, swapping the roles, TNR <= e^eps FNR + delta (Kairouz et al.
2015). An attack's measured rates therefore bound eps from below (Jagielski, Ullman & Oprea
2020, "Auditing differentially private machine learning"; Nasr et al. 2021, "Adversary
instantiation"):

    eps_lb = max over thresholds of max(log((TPR_low - delta) / FPR_high),
                                        log((FNR_low - delta) / TNR_high), and the same
                                        with members and non-members swapped),

with Clopper-Pearson bounds at level 1 - alpha / (2k) for k thresholds (Bonferroni over the
two rates at every threshold), so the maximum holds at confidence 1 - alpha. The thresholds are
the attack scores' quantiles. The trials are (target replica, example) pairs of a
subset-sampling study: with each example included independently of the others, pooling
many examples' pairs is the one-run audit of Steinke, Nasr & Jagielski (2023); the
Clopper-Pearson bounds treat them as independent, as those works do. A lower bound far
below the accountant's epsilon is expected (the attack is not the worst case); one above it
would refute the accounting or the implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from memjax.errors import DataError
from memjax.intervals import clopper_pearson

__all__ = ["AuditResult", "audit_epsilon", "gaussian_dp_epsilon", "THRESHOLDS"]

THRESHOLDS = 64  # quantiles of the scores tried as thresholds
ALPHA = 0.05


@dataclass(frozen=True)
class AuditResult:
    """``epsilon_lb`` (>= 0; 0 when no threshold separates members at all) holds with
    confidence ``confidence``; ``threshold`` and ``side`` (which of the four inequalities:
    "members above" the threshold is TPR <= e^eps FPR + delta) are where it was attained,
    ``tpr_low`` and ``fpr_high`` the rates' bounds there."""

    epsilon_lb: float
    delta: float
    confidence: float
    threshold: float
    tpr_low: float
    fpr_high: float
    side: str
    n_members: int
    n_nonmembers: int

    def summary(self) -> dict:
        return dict(self.__dict__)


def _log_ratio(low: np.ndarray, high: np.ndarray, delta: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log((low - delta) / high)
    return np.where((low > delta) & (high > 0), out, 0.0)


def audit_epsilon(
    members: np.ndarray,
    scores: np.ndarray,
    delta: float,
    alpha: float = ALPHA,
    thresholds: int = THRESHOLDS,
) -> AuditResult:
    """The empirical epsilon lower bound of an attack: ``members`` (any shape, bool) marks
    the pairs whose example was in the target's training set, ``scores`` (same shape; higher
    = member, NaN = no score, left out) the attack's scores."""
    members = np.asarray(members, bool)
    scores = np.asarray(scores, np.float64)
    if members.shape != scores.shape:
        raise DataError(f"members {members.shape} and scores {scores.shape} differ in shape")
    if not 0 < delta < 1 or not 0 < alpha < 1:
        raise DataError(f"need 0 < delta < 1 and 0 < alpha < 1, got {delta}, {alpha}")
    keep = np.isfinite(scores)
    s_in, s_out = scores[keep & members], scores[keep & ~members]
    if not len(s_in) or not len(s_out):
        raise DataError("the audit needs scored members and non-members")
    cuts = np.unique(np.quantile(scores[keep], np.linspace(0, 1, thresholds + 2)[1:-1]))
    s_in.sort()
    s_out.sort()
    tp = len(s_in) - np.searchsorted(s_in, cuts, side="left")  # members flagged (score >= t)
    fp = len(s_out) - np.searchsorted(s_out, cuts, side="left")
    # every interval of the 2k (two rates at k thresholds) covers with probability 1 - alpha
    level = 1 - alpha / (2 * len(cuts))
    tpr_low, tpr_high = clopper_pearson(tp, len(s_in), level)
    fpr_low, fpr_high = clopper_pearson(fp, len(s_out), level)
    # DP bounds P_in(S) and P_out(S) by each other for S = {score >= t} and its complement
    forms = {
        "members above": _log_ratio(tpr_low, fpr_high, delta),  # TPR <= e^eps FPR + delta
        "members below": _log_ratio(1 - tpr_high, 1 - fpr_low, delta),
        "non-members above": _log_ratio(fpr_low, tpr_high, delta),
        "non-members below": _log_ratio(1 - fpr_high, 1 - tpr_low, delta),
    }
    side, values = max(forms.items(), key=lambda kv: kv[1].max())
    best = int(np.argmax(values))
    return AuditResult(
        epsilon_lb=float(max(values[best], 0.0)),
        delta=float(delta),
        confidence=1 - alpha,
        threshold=float(cuts[best]),
        tpr_low=float(tpr_low[best]),
        fpr_high=float(fpr_high[best]),
        side=side,
        n_members=len(s_in),
        n_nonmembers=len(s_out),
    )


def gaussian_dp_epsilon(mu: float, delta: float) -> float:
    """Exact epsilon at delta of mu-Gaussian DP (Dong, Roth & Su 2019; Balle & Wang 2018):
    the smallest eps with Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) <= delta."""
    from scipy.stats import norm

    def excess(eps: float) -> float:
        return norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) - delta

    lo, hi = 0.0, 1.0
    if excess(lo) <= 0:
        return 0.0
    while excess(hi) > 0:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return hi
