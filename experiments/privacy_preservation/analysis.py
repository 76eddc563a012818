"""Privacy preservation and model-level memorization from two families of studies.

``dp_rows`` reads the DP-SGD family (one member per noise multiplier, no DP first, all on
the same masks): per member the accountant's epsilon (study.json), the empirical lower
bound of LiRA (online) through ``memjax.privacy (audit)``, mean memorization and its quantiles, and
LiRA's TPR at FPR 1e-2. ``label_rows`` reads the random-label family (rate x width): train
(in-subset) and test accuracy, epochs to fit, the fraction of examples memorized above
``MEMORIZED``, and mean memorization of flipped and clean examples. Every number comes
with a 95% interval. ``tables`` renders both as markdown; ``write`` stores them.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from memjax.estimators import replica_mean
from memjax.intervals import clopper_pearson, normal
from memjax.jsonio import strict_json
from memjax.privacy import audit_epsilon, recorded_epsilon
from memjax.study import Family, Study, atomic_write_text

__all__ = ["dp_rows", "label_rows", "tables", "write", "MEMORIZED", "FIT", "NO_DP_DELTA"]

MEMORIZED = 0.5  # an example is "memorized" when its memorization estimate exceeds this
FIT = 0.95  # a replica has fit its subset once its in-subset accuracy reaches this
NO_DP_DELTA = 1e-5  # the delta at which a member without DP is audited
ATTACK = "lira_online"
LOW_FPR = 0.01


def _interval(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": float(value), "low": float(low), "high": float(high)}


def _estimate(e) -> dict[str, float]:
    return _interval(e.value, e.ci_low, e.ci_high)


def _mean_memorization(study: Study) -> dict[str, float]:
    """Mean over examples of their memorization; interval: the value -/+ the sampling error
    of the replicas' mean generalization gap (in-subset minus out-of-subset accuracy), the
    replica-level quantity it averages."""
    masks, correct = study.masks, study.outputs.train_correct
    gap = (np.where(masks, correct, False).sum(1) / masks.sum(1)) - (
        np.where(~masks, correct, False).sum(1) / (~masks).sum(1)
    )
    spread = replica_mean(gap, study.blocks)
    value = float(np.nanmean(study.memorization.value))
    half = float(spread.ci_high - spread.value)
    return _interval(value, value - half, value + half)


def _group_mean(values: np.ndarray) -> dict[str, float]:
    """Mean of per-example values with the t interval over examples (NaN when < 2)."""
    v = values[np.isfinite(values)]
    if len(v) < 2:
        return _interval(math.nan, math.nan, math.nan)
    low, high = normal(v.mean(), v.std(ddof=1) / math.sqrt(len(v)), len(v) - 1.0)
    return _interval(v.mean(), low, high)


def dp_rows(family: Family) -> list[dict[str, Any]]:
    """One row per member of the DP-SGD family, in sweep order."""
    rows = []
    for name, (values, study) in family.members.items():
        dp = values.get("train.dp")
        budget = study.meta.get("dp")
        delta = budget["delta"] if budget else NO_DP_DELTA
        attack = study.relations.attacks[ATTACK]
        members = study.masks[: attack.scores.shape[0]]
        audit = audit_epsilon(members, attack.scores, delta)
        mem = study.memorization.value
        tpr_low, tpr_high = attack.tpr_ci[LOW_FPR]
        rows.append(
            {
                "member": name,
                "noise_multiplier": None if dp is None else dp["noise_multiplier"],
                "clip_norm": None if dp is None else dp["clip_norm"],
                "epsilon": math.inf if budget is None else recorded_epsilon(budget),
                "delta": delta,
                "sampling_rate": None if budget is None else budget["sampling_rate"],
                "steps": None if budget is None else budget["steps"],
                "audit": audit.summary(),
                "test_accuracy": _estimate(study.accuracy["test"]),
                "mean_memorization": _mean_memorization(study),
                "memorization_quantiles": {
                    f"{q:g}": float(np.nanquantile(mem, q)) for q in (0.5, 0.9, 0.99)
                },
                "lira_tpr_at_fpr_0.01": _interval(attack.tpr_at_fpr[LOW_FPR], tpr_low, tpr_high),
                "lira_auc": _interval(attack.auc, *attack.auc_ci),
            }
        )
    return rows


def _epochs_to_fit(study: Study) -> tuple[dict[str, float], int]:
    """Mean over the replicas that fit of the first recorded epoch at which their in-subset
    accuracy reaches FIT (t interval over replicas), and how many fit at all."""
    out, masks = study.outputs, study.masks
    acc = (out.traj_correct & masks[:, None, :]).sum(2) / masks.sum(1)[:, None]  # (R, T)
    reached = acc >= FIT
    fitted = reached.any(1)
    epochs = np.asarray(out.record_epochs)[np.argmax(reached, axis=1)]
    if fitted.sum() < 2:
        return _interval(math.nan, math.nan, math.nan), int(fitted.sum())
    return _estimate(replica_mean(epochs[fitted].astype(float))), int(fitted.sum())


def label_rows(family: Family) -> list[dict[str, Any]]:
    """One row per member of the random-label family, in sweep order."""
    rows = []
    for name, (values, study) in family.members.items():
        mem = study.memorization.value
        flipped = study.flipped
        defined = np.isfinite(mem)
        above = int((mem[defined] > MEMORIZED).sum())
        low, high = clopper_pearson(above, int(defined.sum()))
        epochs, fitted = _epochs_to_fit(study)
        rows.append(
            {
                "member": name,
                "random_labels": values["dataset.random_labels"],
                "width": values["model.widths"][-1],
                "train_accuracy": _estimate(study.accuracy["in_subset"]),
                "test_accuracy": _estimate(study.accuracy["test"]),
                "epochs_to_fit": epochs,
                "replicas_fitted": fitted,
                "replicas": study.replicas,
                "fraction_memorized": _interval(above / max(defined.sum(), 1), low, high),
                "memorization_flipped": _group_mean(mem[flipped])
                if flipped is not None
                else _interval(math.nan, math.nan, math.nan),
                "memorization_clean": _group_mean(mem if flipped is None else mem[~flipped]),
            }
        )
    return rows


def _cell(d: dict[str, float], fmt: str = ".3f") -> str:
    if not math.isfinite(d["value"]):
        return "—"
    return f"{d['value']:{fmt}} [{d['low']:{fmt}}, {d['high']:{fmt}}]"


def tables(result: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown of both families' rows (95% intervals in brackets)."""
    lines = [
        "## DP-SGD: memorization and attack success versus epsilon",
        "",
        "| noise multiplier | epsilon (RDP) | audit epsilon lower bound | test accuracy | "
        "mean memorization | LiRA TPR@FPR 0.01 | LiRA AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["dp"]:
        sigma = "no DP" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:g}"
        lines.append(
            f"| {sigma} | {r['epsilon']:.3g} | {r['audit']['epsilon_lb']:.3f} | "
            f"{_cell(r['test_accuracy'])} | {_cell(r['mean_memorization'])} | "
            f"{_cell(r['lira_tpr_at_fpr_0.01'])} | {_cell(r['lira_auc'])} |"
        )
    lines += [
        "",
        f"Epsilon at the member's delta (no DP: audited at delta {NO_DP_DELTA:g}); the audit "
        "bound holds with 95% confidence (memjax.privacy (audit)).",
        "",
        "## Random labels: model-level memorization",
        "",
        "| random labels | width | train accuracy | test accuracy | epochs to fit (fitted) | "
        f"memorized > {MEMORIZED:g} | memorization flipped | memorization clean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["labels"]:
        lines.append(
            f"| {r['random_labels']:g} | {r['width']} | {_cell(r['train_accuracy'])} | "
            f"{_cell(r['test_accuracy'])} | {_cell(r['epochs_to_fit'], '.0f')} "
            f"({r['replicas_fitted']}/{r['replicas']}) | {_cell(r['fraction_memorized'])} | "
            f"{_cell(r['memorization_flipped'])} | {_cell(r['memorization_clean'])} |"
        )
    return "\n".join(lines) + "\n"


def write(out_dir: str, result: dict[str, Any]) -> None:
    """summary.json (strict JSON) and tables.md in ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    text = json.dumps(strict_json(result), indent=2, allow_nan=False)
    atomic_write_text(os.path.join(out_dir, "summary.json"), text + "\n")
    atomic_write_text(os.path.join(out_dir, "tables.md"), tables(result))
