"""Membership inference from the replicas themselves: LiRA and the loss-threshold attack.

A subset-sampling study already holds what a membership-inference evaluation needs: every
replica is a model whose training set is known. Following Carlini et al. (2022, "Membership
Inference Attacks From First Principles", Section VI), each of the first ``n_targets``
replicas in turn is the victim and *all other* replicas are its shadow models; the
(target, example) pairs of all targets are pooled into one ROC curve, from which we report
AUC, TPR at FPR 1e-5 / 1e-3 / 1e-2 and log-spaced points for plotting.

Shadow statistics are per-example sums over all replicas; a target's shadow fit subtracts
its own contribution, so all targets together cost one O(R n) pass (no (R, R, n) tensor),
done over blocks of examples so memory stays bounded for any number of replicas.

Where the reference implementation (github.com/tensorflow/privacy, ``lira``) differs from
the paper's equations we follow the paper:
  * Gaussian centres are means (the reference uses medians);
  * offline LiRA is the paper's one-sided test, member iff the target's confidence is high
    relative to the OUT Gaussian (the reference scores with the OUT log-density, i.e. a
    two-sided test);
  * one query per example (the reference averages over augmented queries);
  * fixed ("global") variance is the pooled per-example variance, mean over examples
    (the reference takes the median over examples of the per-example std).
Like the reference we fit Gaussians by maximum likelihood (ddof=0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memjax.estimators import Estimate, memorization

__all__ = [
    "AttackResult",
    "FPRS",
    "lira_eval",
    "loss_attack_eval",
    "roc_curve",
    "tpr_at",
]

FPRS = (1e-5, 1e-3, 1e-2)
FPR_GRID = np.logspace(-5, 0, 51)
STD_FLOOR = 1e-6  # guards identical shadow scores (zero variance)
BLOCK = 4096  # examples per block of the shadow fits


@dataclass(frozen=True)
class AttackResult:
    """A pooled membership-inference evaluation.

    ``fpr``/``tpr`` is the full ROC curve (one point per distinct score), ``fpr_grid``/
    ``tpr_grid`` the best TPR at log-spaced FPRs (for log-log plots). ``scores`` (n_targets, n)
    are the attack scores (higher = member; NaN = pair excluded for too few shadows).
    ``per_example`` is each example's vulnerability: mean score over the targets that trained
    on it minus mean over those that did not, with Welch's stderr (NaN if any of its pairs
    was excluded). ``operating_point`` is (fpr, tpr) of a fixed-threshold rule, if any.
    """

    name: str
    auc: float
    tpr_at_fpr: dict[float, float]
    fpr: np.ndarray
    tpr: np.ndarray
    fpr_grid: np.ndarray
    tpr_grid: np.ndarray
    per_example: Estimate
    scores: np.ndarray
    n_pairs: int
    n_excluded: int
    operating_point: tuple[float, float] | None = None

    def summary(self) -> dict:
        """JSON-ready numbers: AUC, TPR at the standard FPRs, pair counts."""
        out = {
            "auc": self.auc,
            **{f"tpr_at_fpr_{a:g}": self.tpr_at_fpr[a] for a in FPRS},
            "n_pairs": self.n_pairs,
            "n_excluded": self.n_excluded,
        }
        if self.operating_point is not None:
            out["threshold_fpr"], out["threshold_tpr"] = self.operating_point
        return out


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC of the rule "positive iff score >= t" over all thresholds t: (fpr, tpr, auc).

    Points start at (0, 0), one per distinct score (ties move together), so the trapezoid
    AUC equals the Mann-Whitney probability with ties counted one half.
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores, np.float64)
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must be equal 1-D")
    if labels.dtype != bool:
        raise TypeError(f"labels must be boolean, got {labels.dtype}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC needs both classes, got {n_pos} positives and {n_neg} negatives")
    order = np.argsort(-scores, kind="stable")
    s, lab = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(lab)[last]
    fp = (last + 1) - tp
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, alphas) -> np.ndarray:
    """Largest TPR on the curve with FPR <= alpha, for each alpha."""
    idx = np.searchsorted(fpr, np.asarray(alphas, np.float64), side="right") - 1
    return tpr[idx]


def _check(masks: np.ndarray, values: np.ndarray, what: str, n_targets: int) -> np.ndarray:
    masks = np.asarray(masks)
    values = np.asarray(values)
    if masks.ndim != 2 or masks.dtype != bool:
        raise ValueError(
            f"masks must be a boolean (replicas, n) array, got {masks.dtype} {masks.shape}"
        )
    if values.shape != masks.shape:
        raise ValueError(f"{what} shape {values.shape} differs from masks shape {masks.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"{what} contains NaN or inf")
    if not isinstance(n_targets, (int, np.integer)) or not 2 <= n_targets <= len(masks):
        raise ValueError(
            f"n_targets must be an integer in [2, replicas={len(masks)}], got {n_targets}: the "
            "per-example vulnerability compares targets where an example is IN with targets "
            "where it is OUT"
        )
    return values


def _evaluate(
    name: str,
    masks: np.ndarray,
    scores: np.ndarray,
    operating_point: tuple[float, float] | None = None,
) -> AttackResult:
    """Pool the (target, example) pairs of ``scores`` (targets, n) into one evaluation."""
    t = len(scores)
    members = masks[:t]
    keep = np.isfinite(scores)
    fpr, tpr, auc = roc_curve(members[keep], scores[keep])
    complete = keep.all(axis=0)
    mem = memorization(members, np.where(keep, scores, 0.0))
    nan = np.where(complete, 1.0, np.nan)
    per_example = Estimate(mem.value * nan, mem.stderr * nan, mem.n_in, mem.n_out)
    return AttackResult(
        name=name,
        auc=auc,
        tpr_at_fpr={a: float(v) for a, v in zip(FPRS, tpr_at(fpr, tpr, FPRS), strict=True)},
        fpr=fpr,
        tpr=tpr,
        fpr_grid=FPR_GRID,
        tpr_grid=tpr_at(fpr, tpr, FPR_GRID),
        per_example=per_example,
        scores=scores,
        n_pairs=int(keep.sum()),
        n_excluded=int((~keep).sum()),
        operating_point=operating_point,
    )


def _shadow_fits(
    masks: np.ndarray, scores: np.ndarray, n_targets: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Leave-one-out Gaussian fits for the first ``n_targets`` replicas.

    Returns, per side ("in", "out"), an array (3, n_targets, n) of the shadow count, mean and
    MLE variance of each example when that target is removed, and the targets' own scores,
    all shifted per example by the mean over replicas (which leaves every Gaussian test
    unchanged and keeps the sums well conditioned). Works on blocks of examples so memory
    stays O(R x BLOCK) however many replicas and examples there are.
    """
    t, n = n_targets, masks.shape[1]
    fits = {side: np.empty((3, t, n)) for side in ("in", "out")}
    own = np.empty((t, n))
    for start in range(0, n, BLOCK):
        cols = slice(start, min(start + BLOCK, n))
        c = scores[:, cols].astype(np.float64)
        c -= c.mean(axis=0)
        own[:, cols] = c[:t]
        for side, m in (("in", masks[:, cols]), ("out", ~masks[:, cols])):
            w = m.astype(np.float64)
            mine = w[:t]
            count = w.sum(0) - mine
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = ((w * c).sum(0) - mine * c[:t]) / count
                var = ((w * c * c).sum(0) - mine * c[:t] ** 2) / count - mean**2
            fits[side][:, :, cols] = count, mean, np.maximum(var, 0.0)
    return fits, own


def _std(count: np.ndarray, var: np.ndarray, fixed: bool) -> np.ndarray:
    """Per-example std (needs >= 2 shadows), or per target the pooled std over examples
    (mean of the per-example variances where defined; needs >= 1 shadow)."""
    if not fixed:
        return np.where(count >= 2, np.sqrt(np.maximum(var, STD_FLOOR**2)), np.nan)
    ok = count >= 2
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = np.sqrt(np.where(ok, var, 0.0).sum(1, keepdims=True) / ok.sum(1, keepdims=True))
    return np.where(count >= 1, np.maximum(pooled, STD_FLOOR), np.nan)


def _log_normal_pdf(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -np.log(std) - 0.5 * ((x - mean) / std) ** 2


def lira_eval(
    masks: np.ndarray,
    scores: np.ndarray,
    n_targets: int = 16,
    mode: str = "online",
    fixed_variance: bool = False,
) -> AttackResult:
    """LiRA (Carlini et al. 2022) evaluated over the first ``n_targets`` replicas as victims.

    ``scores`` (R, n) are logit-scaled confidences log(p_y / (1 - p_y)), i.e. the stored
    ``train_margin``. For target t and example i, the shadows are the other replicas, split
    into IN (trained on i) and OUT. Attack score (higher = member):
      * online: log N(c; mu_in, s_in^2) - log N(c; mu_out, s_out^2) (the likelihood ratio);
      * offline: (c - mu_out) / s_out, a monotone transform of the paper's one-sided
        1 - Pr[Z > c], Z ~ N(mu_out, s_out^2), that keeps its ranking but does not saturate
        at 1 for large c (where low-FPR TPR is decided).
    ``fixed_variance=True`` uses one pooled variance per side and target (paper's variant
    for few shadow models). A pair whose example has too few shadows on a side the attack
    uses (< 2 for per-example variance, < 1 for fixed) gets a NaN score and is left out of
    the ROC (counted in ``n_excluded``); if every pair is left out this raises.
    """
    if mode not in ("online", "offline"):
        raise ValueError(f"unknown LiRA mode {mode!r}: use 'online' or 'offline'")
    scores = _check(masks, scores, "scores", n_targets)
    fits, own = _shadow_fits(masks, scores, n_targets)
    count_out, mean_out, var_out = fits["out"]
    std_out = _std(count_out, var_out, fixed_variance)
    with np.errstate(invalid="ignore"):
        if mode == "online":
            count_in, mean_in, var_in = fits["in"]
            std_in = _std(count_in, var_in, fixed_variance)
            attack = _log_normal_pdf(own, mean_in, std_in) - _log_normal_pdf(own, mean_out, std_out)
        else:
            attack = (own - mean_out) / std_out
    if not np.isfinite(attack).any():
        need = "1" if fixed_variance else "2"
        sides = "IN and OUT" if mode == "online" else "OUT"
        raise ValueError(
            f"too few shadow models: LiRA {mode} needs >= {need} shadow replicas on each side "
            f"it fits ({sides}) per example; {len(masks)} replicas give no such example"
        )
    name = f"lira_{mode}" + ("_fixed_variance" if fixed_variance else "")
    return _evaluate(name, masks, attack)


def loss_attack_eval(masks: np.ndarray, losses: np.ndarray, n_targets: int = 16) -> AttackResult:
    """Loss-threshold attack (Yeom et al. 2018): member iff the target's loss is low.

    One global threshold for every example; the ROC sweeps it. ``operating_point`` is the
    global-threshold baseline at Yeom et al.'s threshold: the mean training loss (over IN
    pairs) of the target's shadow models. For cross-entropy the loss is a decreasing
    function of the margin, so a global margin threshold gives the identical ROC.
    """
    losses = _check(masks, losses, "losses", n_targets)
    in_sum = np.array([row[m].sum(dtype=np.float64) for row, m in zip(losses, masks, strict=True)])
    in_count = masks.sum(axis=1)
    flagged = np.empty((n_targets, masks.shape[1]), bool)
    for t in range(n_targets):
        threshold = (in_sum.sum() - in_sum[t]) / (in_count.sum() - in_count[t])
        flagged[t] = losses[t] <= threshold
    members = masks[:n_targets]
    point = (
        float(flagged[~members].sum() / max((~members).sum(), 1)),
        float(flagged[members].sum() / max(members.sum(), 1)),
    )
    return _evaluate(
        "loss_attack", masks, -losses[:n_targets].astype(np.float64), operating_point=point
    )
