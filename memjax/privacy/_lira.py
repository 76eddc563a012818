"""Membership inference from the replicas themselves: LiRA and the loss-threshold attack.

A subset-sampling study already holds what a membership-inference evaluation needs: every
replica is a model whose training set is known. Following Carlini et al. (2022, "Membership
Inference Attacks From First Principles", Section VI), each of the first ``n_targets``
replicas in turn is the victim and *all other* replicas are its shadow models; the
(target, example) pairs of all targets are pooled into one ROC curve, from which we report
AUC, TPR at FPR 1e-5 / 1e-3 / 1e-2 with 95% intervals, and log-spaced points for plotting.

Two conventions
---------------
The paper's algorithm and its reference code (github.com/tensorflow/privacy,
``research/mi_lira_2021``, ``plot.py``), whose numbers are the published ones and the ones
other libraries reproduce, differ. ``convention="reference"`` (the default) reproduces the
code, so results compare with published tables; ``convention="paper"`` is the algorithm as
written. Every difference, reference / paper:
  * Gaussian centres: medians of the shadow scores / means.
  * Shadows per example: per target and side, the first k in replica order, k the smallest
    count over the examples the target scores (the code truncates to the smallest count) /
    all of them.
  * Per-example variance: MLE (ddof=0) variance of the kept shadows / of all shadows.
  * Fixed (global) variance: one std per target, of *all* kept shadow scores pooled over
    examples (so it includes the spread between the examples' centres), the pooled IN
    scores for both sides online and the pooled OUT scores offline / per target and side,
    the root mean over examples of the per-example variances (spread within examples).
  * Offline test: two-sided, scored by -log N(c; mu_out, s_out^2) (member iff c is
    improbable under OUT on either side; log s_out ranks too) / one-sided, member iff c is
    high relative to OUT, scored by (c - mu_out) / s_out.
  * TPR at FPR alpha: best TPR with FPR < alpha (strict) / with FPR <= alpha.

The online score, log N(c; mu_in, s_in^2) - log N(c; mu_out, s_out^2), has the same form in
both.

Augmented queries
-----------------
With scores (R, n, K), one per view of each example (``memjax.train.queries``; a study with
``train.queries`` stores them as ``train_margin_views``), every Gaussian is fitted per view
(online IN and OUT, offline OUT; the paper's diagonal-covariance Gaussians over the K
queries, Section VI.B) and the attack score is the mean over views of the per-view scores,
as the reference code does (``plot.py``: ``generate_ours`` and ``generate_ours_offline``
compute the per-view log-likelihoods of arrays (examples, views) and rank by
``score.mean(1)``). Online, that mean is the log-likelihood ratio of the diagonal Gaussians
divided by K (the same ranking); offline, it averages the per-view tests. The fixed
variance pools over views as well as examples (reference: ``np.std`` of the kept IN, or
OUT, scores of all examples and views; paper: the root mean of the per-view, per-example
variances). Shadows kept, exclusions and reading are those of K = 1, which is today's
single-query evaluation, number for number.

Common to both conventions, and different from the code: each target's shadows are all other
replicas (the code's run with one target model, repeated for every target and pooled);
stds are floored at ``STD_FLOOR`` (the code adds 1e-30), which matters only for identical
shadow scores; a pair whose example has too few shadows on a side the attack uses (< 2 for
per-example variance, < 1 for fixed) is left out and counted (the code would fail). Under
designs whose per-example counts vary (``bernoulli``) the reference truncation can discard
many shadows; the paper convention keeps them all.

Low FPR
-------
With N non-member pairs the smallest nonzero FPR is 1/N, so a TPR at an FPR that allows no
false positive (alpha < 1/N; alpha <= 1/N under the strict reading) is not an estimate of
anything but the zero-false-positive count: it is NaN, with the reason in
``AttackResult.undefined``. Every defined TPR carries a Clopper-Pearson 95% interval for the
members' binomial proportion at that threshold. It is conditional on the threshold (whose
own noise comes from the non-members) and treats pairs as independent, though pairs sharing
a target or an example are not: read it as a lower bound on the uncertainty. Log-spaced ROC
points (``tpr_grid``) are NaN below 1/N too, so plots stop there.

Shadow statistics are per-example sums over all replicas (reference: order statistics); a
target's shadow fit leaves out its own replica, so all targets together cost one O(R n)
pass (O(n_targets R n) for the reference), done over ``COLUMNS_PER_PASS`` examples at a
time so memory stays bounded for any number of replicas.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from memjax.errors import DataError, DataTypeError
from memjax.estimators import Estimate, check_blocks, check_masks, memorization
from memjax.estimators.auc import auc_interval
from memjax.intervals import LEVEL, clopper_pearson
from memjax.privacy._accountant import dp_epsilon, dp_epsilon_pld
from memjax.privacy._audit import audit_epsilon

__all__ = [
    "AttackResult",
    "CONVENTIONS",
    "FPRS",
    "audit_epsilon",
    "dp_epsilon",
    "dp_epsilon_pld",
    "lira_eval",
    "loss_attack_eval",
    "resolvable",
    "roc_curve",
    "tpr_at",
]

CONVENTIONS = ("reference", "paper")
FPRS = (1e-5, 1e-3, 1e-2)
FPR_GRID = np.logspace(-5, 0, 51)
STD_FLOOR = 1e-6  # guards identical shadow scores (zero variance)
COLUMNS_PER_PASS = 4096  # examples x views per pass of the shadow fits


@dataclass(frozen=True)
class AttackResult:
    """A pooled membership-inference evaluation.

    ``fpr``/``tpr`` is the full ROC curve (one point per distinct score), ``fpr_grid``/
    ``tpr_grid`` the best TPR at log-spaced FPRs (for log-log plots; NaN below the
    resolvable FPR). ``tpr_at_fpr[a]`` is the TPR at FPR ``a`` read by the convention's rule,
    NaN where ``n_nonmembers`` cannot resolve ``a`` (``undefined[a]`` says why);
    ``tpr_ci[a]`` its Clopper-Pearson 95% interval (NaN, NaN where undefined). ``auc_ci`` is
    the AUC's 95% interval with the examples as clusters of pairs (``estimators.auc.delong``):
    an example that is easy to attack is easy for every target.
    ``scores`` (n_targets, n) are the attack scores (higher = member; NaN = pair excluded
    for too few shadows). ``per_example`` is each example's vulnerability: mean score over
    the targets that trained on it minus mean over those that did not (NaN if any of its
    pairs was excluded). ``operating_point`` is (fpr, tpr) of a fixed-threshold rule, if any.
    ``name`` is the attack, suffixed ``_paper`` under the paper convention.
    """

    name: str
    convention: str
    auc: float
    auc_ci: tuple[float, float]
    tpr_at_fpr: dict[float, float]
    tpr_ci: dict[float, tuple[float, float]]
    undefined: dict[float, str]
    fpr: np.ndarray
    tpr: np.ndarray
    fpr_grid: np.ndarray
    tpr_grid: np.ndarray
    per_example: Estimate
    scores: np.ndarray
    n_pairs: int
    n_excluded: int
    n_members: int
    n_nonmembers: int
    operating_point: tuple[float, float] | None = None

    def summary(self) -> dict:
        """JSON-ready numbers (None for NaN): AUC, TPR at the standard FPRs with intervals and
        the reasons for undefined ones, pair counts, convention."""

        def num(x: float) -> float | None:
            return float(x) if np.isfinite(x) else None

        out = {
            "name": self.name,
            "convention": self.convention,
            "auc": self.auc,
            "auc_ci": [num(x) for x in self.auc_ci],
            "tpr_at_fpr": {f"{a:g}": num(self.tpr_at_fpr[a]) for a in FPRS},
            "tpr_ci": {
                f"{a:g}": None if a in self.undefined else [num(x) for x in self.tpr_ci[a]]
                for a in FPRS
            },
            "undefined": {f"{a:g}": why for a, why in self.undefined.items()},
            "ci_method": f"Clopper-Pearson {LEVEL:.0%}",
            "n_pairs": self.n_pairs,
            "n_excluded": self.n_excluded,
            "n_members": self.n_members,
            "n_nonmembers": self.n_nonmembers,
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
        raise DataError(f"labels {labels.shape} and scores {scores.shape} must be equal 1-D")
    if labels.dtype != bool:
        raise DataTypeError(f"labels must be boolean, got {labels.dtype}")
    if not np.isfinite(scores).all():
        raise DataError("scores contain NaN or inf")
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise DataError(f"ROC needs both classes, got {n_pos} positives and {n_neg} negatives")
    order = np.argsort(-scores, kind="stable")
    s, lab = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tp = np.cumsum(lab)[last]
    fp = (last + 1) - tp
    tpr = np.r_[0.0, tp / n_pos]
    fpr = np.r_[0.0, fp / n_neg]
    return fpr, tpr, float(np.trapezoid(tpr, fpr))


def resolvable(alphas, n_negatives: int, strict: bool = False) -> np.ndarray:
    """Whether each FPR ``alpha`` lets a threshold flag at least one of ``n_negatives``
    non-members (1/N <= alpha; 1/N < alpha when FPR is read strictly below alpha)."""
    alphas = np.asarray(alphas, np.float64)
    smallest = 1.0 / n_negatives  # the same float as the ROC's first false-positive rate
    return smallest < alphas if strict else smallest <= alphas


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, alphas, strict: bool = False) -> np.ndarray:
    """Largest TPR on the curve with FPR <= alpha (< alpha if ``strict``), for each alpha."""
    side = "left" if strict else "right"
    idx = np.searchsorted(fpr, np.asarray(alphas, np.float64), side=side) - 1
    return tpr[idx]


def _check(
    masks: np.ndarray, values: np.ndarray, what: str, n_targets: int, convention: str
) -> np.ndarray:
    if convention not in CONVENTIONS:
        raise DataError(f"unknown convention {convention!r}: use one of {CONVENTIONS}")
    masks, values = check_masks(masks, values, what, same_shape=True)
    if not isinstance(n_targets, (int, np.integer)) or not 2 <= n_targets <= len(masks):
        raise DataError(
            f"n_targets must be an integer in [2, replicas={len(masks)}], got {n_targets}: the "
            "per-example vulnerability compares targets where an example is IN with targets "
            "where it is OUT"
        )
    return values


def _target_blocks(blocks, n_replicas: int, n_targets: int) -> np.ndarray | None:
    blocks = check_blocks(blocks, n_replicas)
    return None if blocks is None else blocks[:n_targets]


def _vulnerability(members: np.ndarray, scores: np.ndarray, blocks) -> Estimate:
    """IN-minus-OUT attack score over the targets, NaN where any pair was excluded."""
    keep = np.isfinite(scores)
    values = np.where(keep, scores, 0.0)
    if blocks is None:
        mem = memorization(members, values)
    else:
        mem = memorization(members, values, blocks=blocks)
    complete = keep.all(axis=0)
    masked = {
        f.name: np.where(complete, getattr(mem, f.name), np.nan)
        for f in dataclasses.fields(mem)
        if f.name not in ("n_in", "n_out") and getattr(mem, f.name) is not None
    }
    return dataclasses.replace(mem, **masked)


def _evaluate(
    name: str,
    convention: str,
    masks: np.ndarray,
    scores: np.ndarray,
    blocks: np.ndarray | None,
    operating_point: tuple[float, float] | None = None,
) -> AttackResult:
    """Pool the (target, example) pairs of ``scores`` (targets, n) into one evaluation."""
    strict = convention == "reference"
    members = masks[: len(scores)]
    keep = np.isfinite(scores)
    labels = members[keep]
    fpr, tpr, auc = roc_curve(labels, scores[keep])
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    ok = resolvable(FPRS, n_neg, strict)
    read = tpr_at(fpr, tpr, FPRS, strict)
    low, high = clopper_pearson(np.rint(read * n_pos), n_pos)
    need = "more than" if strict else "at least"
    rule = "<" if strict else "<="
    undefined = {
        a: f"needs {need} 1/fpr = {1 / a:g} non-member pairs (TPR read at FPR {rule} {a:g}), "
        f"have {n_neg}"
        for a, fine in zip(FPRS, ok, strict=True)
        if not fine
    }
    nan = float("nan")
    return AttackResult(
        name=name + ("_paper" if convention == "paper" else ""),
        convention=convention,
        auc=auc,
        auc_ci=auc_interval(labels, scores[keep], clusters=np.nonzero(keep)[1]),
        tpr_at_fpr={a: float(v) if f else nan for a, v, f in zip(FPRS, read, ok, strict=True)},
        tpr_ci={
            a: (float(lo), float(hi)) if f else (nan, nan)
            for a, lo, hi, f in zip(FPRS, low, high, ok, strict=True)
        },
        undefined=undefined,
        fpr=fpr,
        tpr=tpr,
        fpr_grid=FPR_GRID,
        tpr_grid=np.where(
            resolvable(FPR_GRID, n_neg, strict), tpr_at(fpr, tpr, FPR_GRID, strict), np.nan
        ),
        per_example=_vulnerability(members, scores, blocks),
        scores=scores,
        n_pairs=int(keep.sum()),
        n_excluded=int((~keep).sum()),
        n_members=n_pos,
        n_nonmembers=n_neg,
        operating_point=operating_point,
    )


def _passes(n: int, views: int):
    """Column slices of at most COLUMNS_PER_PASS examples x views."""
    width = max(COLUMNS_PER_PASS // views, 1)
    for start in range(0, n, width):
        yield slice(start, min(start + width, n))


def _side_masks(masks: np.ndarray, side: str) -> np.ndarray:
    return masks if side == "in" else ~masks


def _paper_fits(
    masks: np.ndarray, scores: np.ndarray, n_targets: int, sides: tuple[str, ...], fixed: bool
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Leave-one-out Gaussians of the paper convention for the first ``n_targets`` replicas.

    ``scores`` (R, n, K), one Gaussian per view. Returns side -> (mean, std), each
    (n_targets, n, K) with NaN where the example has too few shadows on that side, and the
    targets' own scores (n_targets, n, K); all scores are shifted per example and view by
    their mean over replicas (every Gaussian test is unchanged; the sums are well
    conditioned). Counts, sums and sums of squares leave the target's own replica out.
    """
    t, (n, k) = n_targets, scores.shape[1:]
    fits = {side: np.empty((3, t, n, k)) for side in sides}
    own = np.empty((t, n, k))
    for cols in _passes(n, k):
        c = scores[:, cols].astype(np.float64)
        c -= c.mean(axis=0)
        own[:, cols] = c[:t]
        for side in sides:
            w = _side_masks(masks[:, cols], side).astype(np.float64)[..., None]
            mine = w[:t]
            count = w.sum(0) - mine
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = ((w * c).sum(0) - mine * c[:t]) / count
                var = ((w * c * c).sum(0) - mine * c[:t] ** 2) / count - mean**2
            fits[side][0, :, cols] = count
            fits[side][1, :, cols] = mean
            fits[side][2, :, cols] = np.maximum(var, 0.0)
    out = {}
    for side in sides:
        count, mean, var = fits[side]
        if fixed:  # root mean over examples (>= 2 shadows) and views of the variances
            ok = count >= 2
            with np.errstate(invalid="ignore", divide="ignore"):
                total = np.where(ok, var, 0.0).sum((1, 2), keepdims=True)
                pooled = np.sqrt(total / ok.sum((1, 2))[:, None, None])
            std = np.where(count >= 1, np.maximum(pooled, STD_FLOOR), np.nan)
        else:
            std = np.where(count >= 2, np.sqrt(np.maximum(var, STD_FLOOR**2)), np.nan)
        out[side] = (np.where(np.isfinite(std), mean, np.nan), std)
    return out, own


def _reference_fits(
    masks: np.ndarray, scores: np.ndarray, n_targets: int, sides: tuple[str, ...], fixed: bool
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """Gaussians of the reference convention for the first ``n_targets`` replicas.

    For target t and side s, every scored example keeps its first k_ts shadows (replica
    order, target left out), k_ts the smallest count over the examples t scores; centre:
    their median; std: their MLE std (both per view), or (``fixed``) the std of all kept
    scores of one side pooled over the scored examples and the views (IN online, OUT
    offline), used for every side. Same return shapes and per-example shift as
    ``_paper_fits`` (the pooled std uses the unshifted scores, less one global constant: it
    includes the spread between examples' centres).
    """
    t, (r, n), k_views = n_targets, masks.shape, scores.shape[2]
    need = 1 if fixed else 2
    n_in = masks.sum(axis=0)
    counts = {"in": n_in[None] - masks[:t], "out": (r - n_in)[None] - ~masks[:t]}  # (t, n)
    scored = np.all([counts[s] >= need for s in sides], axis=0)
    keep_n = {s: np.where(scored, counts[s], r).min(axis=1) for s in sides}  # (t,)
    pooled_side = "in" if "in" in sides else "out"
    centre = {s: np.full((t, n, k_views), np.nan) for s in sides}
    var = {s: np.full((t, n, k_views), np.nan) for s in sides}
    pooled = np.zeros((3, t))  # count, sum, sum of squares of the pooled kept scores
    own = np.empty((t, n, k_views))
    offset = scores.mean(dtype=np.float64)
    rows = np.arange(r)[:, None]
    for cols in _passes(n, k_views):
        raw = scores[:, cols].astype(np.float64)
        shift = raw.mean(axis=0)
        c = raw - shift
        own[:, cols] = c[:t]
        for side in sides:
            w = _side_masks(masks[:, cols], side)
            for j in range(t):
                k = int(keep_n[side][j])
                if not scored[j].any():
                    continue
                shadow = w & (rows != j)
                kept = shadow & (np.cumsum(shadow, axis=0) <= k)
                vals = np.where(kept[..., None], c, np.inf)  # dropped shadows sort last
                mid = sorted({(k - 1) // 2, k // 2})
                part = np.partition(vals, mid, axis=0)
                ok = scored[j, cols]
                with np.errstate(invalid="ignore"):
                    centre[side][j, cols] = np.where(ok[:, None], part[mid].mean(axis=0), np.nan)
                    sel = np.where(kept[..., None], c, 0.0)
                    mean = sel.sum(0) / k
                    v = np.maximum((sel * sel).sum(0) / k - mean**2, 0.0)
                var[side][j, cols] = np.where(ok[:, None], v, np.nan)
                if side == pooled_side:
                    used = kept & ok[None]
                    x = np.where(used[..., None], raw - offset, 0.0)
                    pooled[:, j] += used.sum() * k_views, x.sum(), (x * x).sum()
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled_std = np.sqrt(np.maximum(pooled[2] / pooled[0] - (pooled[1] / pooled[0]) ** 2, 0))
    for side in sides:
        if fixed:
            std = np.where(scored, np.maximum(pooled_std, STD_FLOOR)[:, None], np.nan)[..., None]
            std = np.broadcast_to(std, centre[side].shape)
        else:
            std = np.where(scored[..., None], np.sqrt(np.maximum(var[side], STD_FLOOR**2)), np.nan)
        out[side] = (centre[side], std)
    return out, own


def _views(masks: np.ndarray, scores: np.ndarray, n_targets: int, convention: str) -> np.ndarray:
    """``scores`` (R, n) or (R, n, K) as checked (R, n, K) views (K = 1 for (R, n))."""
    scores = np.asarray(scores)
    if scores.ndim == 2:
        return _check(masks, scores, "scores", n_targets, convention)[..., None]
    if scores.ndim != 3 or scores.shape[2] < 1:
        raise DataError(
            "scores must be (replicas, examples) or (replicas, examples, views) with at "
            f"least one view, got shape {scores.shape}"
        )
    for v in range(scores.shape[2]):
        _check(masks, scores[..., v], f"scores of view {v}", n_targets, convention)
    return scores


def _log_normal_pdf(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -np.log(std) - 0.5 * ((x - mean) / std) ** 2 - 0.5 * math.log(2 * math.pi)


def lira_eval(
    masks: np.ndarray,
    scores: np.ndarray,
    n_targets: int = 16,
    mode: str = "online",
    fixed_variance: bool = False,
    convention: str = "reference",
    blocks: np.ndarray | None = None,
) -> AttackResult:
    """LiRA (Carlini et al. 2022) evaluated over the first ``n_targets`` replicas as victims.

    ``masks`` (R, n) bool; ``scores`` (R, n) are logit-scaled confidences
    log(p_y / (1 - p_y)), i.e. the stored ``train_margin``, or (R, n, K) the same under K
    augmented queries (``train_margin_views``): Gaussians per view, the attack score the
    mean of the per-view scores (module docstring). For target t and example i, the
    shadows are the other replicas, split into IN (trained on i) and OUT. Attack score
    (higher = member):
      * online: log N(c; mu_in, s_in^2) - log N(c; mu_out, s_out^2) (the likelihood ratio);
      * offline, ``convention="reference"``: -log N(c; mu_out, s_out^2), the code's two-sided
        test (far from the OUT Gaussian on either side);
      * offline, ``convention="paper"``: (c - mu_out) / s_out, a monotone transform of the
        paper's one-sided 1 - Pr[Z > c], Z ~ N(mu_out, s_out^2), that keeps its ranking but
        does not saturate at 1 for large c (where low-FPR TPR is decided).
    Centres, shadows kept, variances and the TPR reading follow ``convention`` (module
    docstring). ``fixed_variance=True`` uses one variance per target (paper's variant for
    few shadow models): under the reference convention the std of all pooled shadow scores
    (all IN scores for both sides online, all OUT scores offline), under the paper
    convention the root mean of the per-example variances, per side. A pair whose example
    has too few shadows on a side the attack uses (< 2 for per-example variance, < 1 for
    fixed) gets a NaN score and is left out of the ROC (counted in ``n_excluded``); if every
    pair is left out this raises. ``blocks`` (R,) are the replicas' block ids
    (``subsets.block_ids``) for the per-example vulnerability's standard error; None when the
    replicas are independent.
    """
    if mode not in ("online", "offline"):
        raise DataError(f"unknown LiRA mode {mode!r}: use 'online' or 'offline'")
    views = _views(masks, scores, n_targets, convention)
    target_blocks = _target_blocks(blocks, len(masks), n_targets)
    sides = ("in", "out") if mode == "online" else ("out",)
    fit = _reference_fits if convention == "reference" else _paper_fits
    gaussians, own = fit(masks, views, n_targets, sides, fixed_variance)
    mean_out, std_out = gaussians["out"]
    with np.errstate(invalid="ignore"):
        if mode == "online":
            mean_in, std_in = gaussians["in"]
            attack = _log_normal_pdf(own, mean_in, std_in) - _log_normal_pdf(own, mean_out, std_out)
        elif convention == "reference":
            attack = -_log_normal_pdf(own, mean_out, std_out)
        else:
            attack = (own - mean_out) / std_out
    attack = attack.mean(axis=2)  # over the views
    if not np.isfinite(attack).any():
        need = "1" if fixed_variance else "2"
        sides_text = "IN and OUT" if mode == "online" else "OUT"
        raise DataError(
            f"too few shadow models: LiRA {mode} needs >= {need} shadow replicas on each side "
            f"it fits ({sides_text}) per example; {len(masks)} replicas give no such example"
        )
    name = f"lira_{mode}" + ("_fixed_variance" if fixed_variance else "")
    return _evaluate(name, convention, masks, attack, target_blocks)


def loss_attack_eval(
    masks: np.ndarray,
    losses: np.ndarray,
    n_targets: int = 16,
    convention: str = "reference",
    blocks: np.ndarray | None = None,
) -> AttackResult:
    """Loss-threshold attack (Yeom et al. 2018): member iff the target's loss is low.

    One global threshold for every example; the ROC sweeps it. ``operating_point`` is the
    global-threshold baseline at Yeom et al.'s threshold: the mean training loss (over IN
    pairs) of the target's shadow models. For cross-entropy the loss is a decreasing
    function of the margin, so a global margin threshold gives the identical ROC.
    ``convention`` sets only how TPR at an FPR is read (strictly below it for "reference",
    as LiRA's code reads its global-threshold baseline), so it compares with LiRA's numbers
    of the same convention; ``blocks`` as in ``lira_eval``.
    """
    losses = _check(masks, losses, "losses", n_targets, convention)
    target_blocks = _target_blocks(blocks, len(masks), n_targets)
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
    scores = -losses[:n_targets].astype(np.float64)
    return _evaluate("loss_attack", convention, masks, scores, target_blocks, point)
