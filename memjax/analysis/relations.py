"""Memorization beside its cheap proxies and membership-inference vulnerability.

One pure function of the masks and outputs of a study gathers every per-example score
memjax can compute, correlates each with memorization, and, when labels were flipped on
purpose, measures how well each score finds the flipped examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from scipy.stats import spearmanr

from memjax.analysis.proxies import PRESENTATION_PROXIES, TRAJECTORY_PROXIES, all_proxies
from memjax.errors import DataError
from memjax.estimators import (
    Estimate,
    counterfactual_memorization,
    held_out_accuracy,
    memorization,
)
from memjax.estimators.auc import auc_interval
from memjax.intervals import quantile
from memjax.outputs import ReplicaOutputs
from memjax.privacy import AttackResult, lira_eval, loss_attack_eval, roc_curve

__all__ = [
    "Relations",
    "relations",
    "SUSPICIOUS_WHEN_HIGH",
    "MIN_ATTACK_REPLICAS",
    "spearman_interval",
]

# Below this many replicas, LiRA's per-example Gaussians lack shadow models (a target's
# shadows must hold >= 2 IN and >= 2 OUT replicas per example), so attacks are skipped.
MIN_ATTACK_REPLICAS = 8

# Orientation of each score for finding memorized / mislabeled examples: True if a higher
# value is more suspicious. Every column of ``relations`` has an entry.
SUSPICIOUS_WHEN_HIGH = {
    "memorization": True,
    "cf_memorization_margin": True,
    "cf_memorization_neg_loss": True,
    "held_out_accuracy": False,  # rarely right when held out
    "lira_online": True,
    "lira_offline": True,
    "loss_attack": True,
    "loss": True,
    "confidence": False,
    "margin": False,
    "learning_time": True,  # learned late (or never)
    "forgetting_events": True,
    "learning_time_recorded": True,
    "forgetting_events_recorded": True,
    "el2n": True,
    "grand": True,
    "self_influence": True,
}


@dataclass(frozen=True)
class Relations:
    """Per-example columns, their relation to memorization, and the attacks behind them.

    ``columns``: name -> Estimate (value, stderr, 95% interval, each (n,)), in this order:
      memorization (Feldman-Zhang, accuracy; equals counterfactual memorization with the
      accuracy measure), cf_memorization_margin, cf_memorization_neg_loss (Zhang et al.
      2021), held_out_accuracy (at this study's ratio; the C-score averages it over
      ratios), lira_online, lira_offline, loss_attack (per-example vulnerability: mean
      attack score over target replicas holding the example minus mean over targets
      without it), then the proxies of ``memjax.analysis.proxies.all_proxies``: loss, confidence,
      margin, learning_time and forgetting_events (counted at every presentation; present
      for trained networks) and, if trajectories were recorded, learning_time_recorded,
      forgetting_events_recorded (their recorded-epoch approximations), el2n (and grand,
      self_influence if gradient norms were recorded).
      NaN marks examples a score is undefined for (e.g. never IN).
    ``spearman``: name -> Spearman rank correlation of that column's value with
      memorization over examples where both are finite (raw values, not oriented; the
      entry "memorization" is omitted).
    ``spearman_ci``: name -> its 95% interval (low, high) (``spearman_interval``: Fisher z
      with the Bonett-Wright standard error; NaN where undefined).
    ``flipped_auc``: None unless ``flipped`` was given; then name -> ROC AUC of the
      oriented score (value if ``SUSPICIOUS_WHEN_HIGH[name]``, else -value) for finding
      flipped labels, over examples with a finite value.
    ``flipped_auc_ci``: None, or name -> its 95% interval (low, high) (``auc_interval``:
      DeLong, on the logit scale).
    Both kinds of interval treat the examples as the sampled units (labels are flipped at
    random) and hold each example's per-replica estimate fixed: they describe which examples
    were drawn, not the replicas' noise in the columns.
    ``attacks``: name -> AttackResult of lira_online, lira_offline,
      lira_online_fixed_variance, lira_offline_fixed_variance and loss_attack under LiRA's
      reference-code convention (the published numbers), then lira_online_paper and
      lira_offline_paper, the paper's algorithm as written (its one-sided offline test
      ranks differently; see ``memjax.privacy``); empty (and the three vulnerability
      columns, all of the reference convention, absent) for studies of fewer than
      ``MIN_ATTACK_REPLICAS`` replicas.
    ``missing``: name -> why, for every column of ``SUSPICIOUS_WHEN_HIGH`` and every attack
      these replicas could not support (e.g. too few shadow models for LiRA, trajectories
      not recorded, non-finite margins). Nothing is dropped without a reason.
    """

    columns: dict[str, Estimate]
    spearman: dict[str, float]
    spearman_ci: dict[str, tuple[float, float]]
    flipped_auc: dict[str, float] | None
    flipped_auc_ci: dict[str, tuple[float, float]] | None
    attacks: dict[str, AttackResult]
    missing: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict:
        """JSON-ready (undefined numbers are None, not NaN): correlations and flipped-label
        AUCs with their 95% intervals ([low, high], or None where undefined), orientation
        and attack numbers."""
        return {
            "spearman_with_memorization": _json_numbers(self.spearman),
            "spearman_with_memorization_ci": _json_intervals(self.spearman_ci),
            "flipped_label_auc": None
            if self.flipped_auc is None
            else _json_numbers(self.flipped_auc),
            "flipped_label_auc_ci": None
            if self.flipped_auc_ci is None
            else _json_intervals(self.flipped_auc_ci),
            "suspicious_when": {
                k: "high" if SUSPICIOUS_WHEN_HIGH[k] else "low" for k in self.columns
            },
            "attacks": {k: a.summary() for k, a in self.attacks.items()},
            "missing": dict(self.missing),
        }


def _json_numbers(d: dict[str, float]) -> dict[str, float | None]:
    return {k: v if np.isfinite(v) else None for k, v in d.items()}


def _json_intervals(d: dict[str, tuple[float, float]]) -> dict[str, list[float] | None]:
    return {k: [*map(float, v)] if np.isfinite(v).all() else None for k, v in d.items()}


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Spearman's rho over the examples where both are finite, and its 95% interval."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan"), (float("nan"), float("nan"))  # too few examples or constant
    rho = float(spearmanr(x[ok], y[ok]).statistic)
    return rho, spearman_interval(rho, int(ok.sum()))


def spearman_interval(rho: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Interval for a Spearman correlation ``rho`` of ``n`` independent pairs.

    Fisher's z = atanh(rho) is close to normal with the Bonett-Wright (2000) standard error
    sqrt((1 + rho^2 / 2) / (n - 3)) (Fisher's 1/sqrt(n - 3) is too small for ranks); the
    interval is tanh(z -/+ q * se), q the normal quantile. The pairs are the units: values
    that are themselves estimates are held fixed. NaN where undefined (n < 4, |rho| = 1).
    """
    if not np.isfinite(rho) or n < 4 or abs(rho) >= 1:
        return float("nan"), float("nan")
    half = float(quantile(None, level)) * np.sqrt((1 + rho**2 / 2) / (n - 3))
    z = np.arctanh(rho)
    return float(np.tanh(z - half)), float(np.tanh(z + half))


def _flipped_auc(flipped: np.ndarray, score: np.ndarray) -> tuple[float, tuple[float, float]]:
    ok = np.isfinite(score)
    if flipped[ok].all() or not flipped[ok].any():
        return float("nan"), (float("nan"), float("nan"))
    return roc_curve(flipped[ok], score[ok])[2], auc_interval(flipped[ok], score[ok])


def _float64(e: Estimate) -> Estimate:
    """The same estimate with float64 arrays (columns of one table)."""
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    return Estimate(f(e.value), f(e.stderr), e.n_in, e.n_out, f(e.ci_low), f(e.ci_high))


VULNERABILITY = ("lira_online", "lira_offline", "loss_attack")


# LiRA variants evaluated for every study: (mode, fixed_variance, convention)
LIRA_VARIANTS = (
    ("online", False, "reference"),
    ("offline", False, "reference"),
    ("online", True, "reference"),
    ("offline", True, "reference"),
    ("online", False, "paper"),
    ("offline", False, "paper"),
)


T = TypeVar("T")


def _attempt(missing: dict[str, str], names: tuple[str, ...], fn: Callable[[], T]) -> T | None:
    """fn(), or None with the reason recorded for each of ``names`` if the data cannot
    support it (the estimators raise ValueError naming the reason)."""
    try:
        return fn()
    except ValueError as err:
        missing.update(dict.fromkeys(names, str(err)))
        return None


def _attack_name(mode: str, fixed: bool, convention: str) -> str:
    return f"lira_{mode}" + "_fixed_variance" * fixed + "_paper" * (convention == "paper")


ATTACKS = (*(_attack_name(*v) for v in LIRA_VARIANTS), "loss_attack")


def _attacks(
    masks: np.ndarray,
    outputs: ReplicaOutputs,
    n_targets: int,
    blocks: np.ndarray | None,
    missing: dict[str, str],
) -> dict[str, AttackResult]:
    """Every attack these replicas support; each other one gets its reason in ``missing``."""
    if len(masks) < MIN_ATTACK_REPLICAS:
        reason = (
            f"only {len(masks)} replicas: membership-inference attacks need at least "
            f"{MIN_ATTACK_REPLICAS} (target replicas plus shadow models with >= 2 IN and "
            ">= 2 OUT replicas per example)"
        )
        missing.update(dict.fromkeys(ATTACKS, reason))
        return {}
    # LiRA reads the augmented queries' margins (R, n, K) when the study stored them
    views = outputs.train_margin_views
    margins = outputs.train_margin if views is None else views
    runs: dict[str, Callable[[], AttackResult]] = {
        _attack_name(mode, fixed, convention): lambda m=mode, f=fixed, c=convention: lira_eval(
            masks, margins, n_targets, m, f, convention=c, blocks=blocks
        )
        for mode, fixed, convention in LIRA_VARIANTS
    }
    runs["loss_attack"] = lambda: loss_attack_eval(
        masks, outputs.train_loss, n_targets, blocks=blocks
    )
    results = {name: _attempt(missing, (name,), run) for name, run in runs.items()}
    return {name: a for name, a in results.items() if a is not None}


# How a study records what a proxy reads.
HOW_TO_RECORD = {
    "record_epochs": "train.record_every > 0",
    "record_lr": "train.record_every > 0",
    "traj_correct": "train.record_every > 0",
    "traj_el2n": "train.record_every > 0",
    "traj_grad_sq": "train.record_grad_norm: true",
    "first_learned": "per-presentation counts, which trained networks record",
    "forgetting_events": "per-presentation counts, which trained networks record",
}


def _unrecorded(outputs: ReplicaOutputs, name: str) -> str:
    """Why a proxy column is absent although its computation did not fail."""
    if name in TRAJECTORY_PROXIES:
        needs = ("record_epochs", *TRAJECTORY_PROXIES[name][0])
    else:
        needs = PRESENTATION_PROXIES.get(name, ((), None))[0]
    absent = [k for k in needs if getattr(outputs, k, None) is None]
    if not absent:
        return "not computed from these outputs"
    how = "; ".join(sorted({HOW_TO_RECORD.get(k, k) for k in absent}))
    return f"the study did not record {', '.join(absent)} (needs {how})"


def relations(
    masks: np.ndarray,
    outputs: ReplicaOutputs,
    flipped: np.ndarray | None = None,
    n_targets: int = 16,
    early_epoch: int | None = None,
    blocks: np.ndarray | None = None,
) -> Relations:
    """Every per-example score of a study, correlated with memorization (see ``Relations``).

    ``masks`` (R, n) and ``outputs`` (R replicas, same row order) come from one study;
    ``flipped`` (n,) bool marks training labels flipped by label noise; the first
    ``n_targets`` replicas are the membership-inference victims; ``early_epoch`` is the
    recorded epoch of EL2N and GraNd (default: see ``proxies.early_epoch_index``);
    ``blocks`` (R,) the replicas' block ids (``memjax.subsets.block_ids``; None: independent).
    """
    masks = np.asarray(masks)
    if flipped is not None:
        flipped = np.asarray(flipped)
        if flipped.dtype != bool or flipped.shape != (masks.shape[1],):
            raise DataError(
                f"flipped must be a boolean ({masks.shape[1]},) array, got "
                f"{flipped.dtype} {flipped.shape}"
            )
    missing: dict[str, str] = {}
    attacks = _attacks(masks, outputs, n_targets, blocks, missing)
    estimates: dict[str, Estimate | None] = {
        "memorization": memorization(masks, outputs.train_correct, blocks),
        **{
            f"cf_memorization_{measure}": _attempt(
                missing,
                (f"cf_memorization_{measure}",),
                lambda m=measure: counterfactual_memorization(masks, outputs, m, blocks),
            )
            for measure in ("margin", "neg_loss")
        },
        "held_out_accuracy": held_out_accuracy(masks, outputs.train_correct, blocks),
        **{k: attacks[k].per_example for k in VULNERABILITY if k in attacks},
    }
    proxy_names = tuple(
        k for k in SUSPICIOUS_WHEN_HIGH if k not in estimates and k not in VULNERABILITY
    )
    proxies = _attempt(
        missing, proxy_names, lambda: all_proxies(masks, outputs, early_epoch, blocks)
    )
    estimates.update(proxies or {})
    columns = {k: _float64(e) for k, e in estimates.items() if e is not None}
    for name in SUSPICIOUS_WHEN_HIGH:
        if name not in columns and name not in missing:
            missing[name] = _unrecorded(outputs, name)
    mem = columns["memorization"].value
    rho = {k: _spearman(e.value, mem) for k, e in columns.items() if k != "memorization"}
    flipped_auc = flipped_auc_ci = None
    if flipped is not None:
        auc = {
            k: _flipped_auc(flipped, e.value if SUSPICIOUS_WHEN_HIGH[k] else -e.value)
            for k, e in columns.items()
        }
        flipped_auc = {k: v[0] for k, v in auc.items()}
        flipped_auc_ci = {k: v[1] for k, v in auc.items()}
    return Relations(
        columns,
        {k: v[0] for k, v in rho.items()},
        {k: v[1] for k, v in rho.items()},
        flipped_auc,
        flipped_auc_ci,
        attacks,
        missing,
    )
