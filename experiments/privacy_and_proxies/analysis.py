"""Do membership inference and the cheap proxies find what memorization finds?

``analyze`` is a pure function of one study (read through ``mj.open_study``): the summary of
``memjax estimate`` (accuracies, memorization, every score's Spearman correlation with it and
flipped-label AUC, the attacks) plus how often the replicas fit the flipped labels they
trained on, the per-example table of ``memjax estimate`` and the attacks' log-spaced ROC
points. ``tables`` renders the summary as markdown; ``write`` stores it all.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

import numpy as np

from memjax.jsonio import strict_json
from memjax.privacy import FPR_GRID, FPRS
from memjax.report import csv_text, study_columns, summary
from memjax.study import Study, atomic_write_text

__all__ = ["analyze", "tables", "write", "FILES"]

# What ``write`` puts in its directory.
FILES = ("summary.json", "tables.md", "per_example.csv", "roc.csv")


def analyze(study: Study) -> dict[str, Any]:
    """The experiment's numbers for ``study`` (which should have flipped labels): ``summary``
    (strict JSON: ``memjax.report.summary`` plus ``flipped_fit_in_subset``, the fraction of
    (replica, flipped example) pairs fit when the example was IN), ``columns`` (name -> (n,)
    array, ``memjax.report.study_columns``) and ``roc`` (name -> (len(FPR_GRID),) TPRs at the
    log-spaced FPRs ``roc["fpr"]``; NaN below the resolvable FPR)."""
    masks, out, flipped = study.masks, study.outputs, study.flipped
    fit = float("nan")
    if flipped is not None and (masks & flipped).any():
        fit = float(out.train_correct[masks & flipped].mean())
    attacks = study.relations.attacks
    return {
        "summary": {**summary(study), "flipped_fit_in_subset": strict_json(fit)},
        "columns": study_columns(study),
        "roc": {"fpr": FPR_GRID, **{name: a.tpr_grid for name, a in attacks.items()}},
    }


def _number(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _tpr_cell(attack: dict[str, Any], fpr: float) -> str:
    key = f"{fpr:g}"
    if key in attack["undefined"]:
        return "—"
    low, high = attack["tpr_ci"][key]
    return f"{attack['tpr_at_fpr'][key]:.4f} [{low:.4f}, {high:.4f}]"


def tables(summary: dict[str, Any]) -> str:
    """Markdown of an ``analyze`` summary: the attacks, then every score against memorization
    and the flipped labels."""
    attacks = summary["attacks"]
    lines = [
        "| attack | convention | AUC | " + " | ".join(f"TPR@FPR {a:g}" for a in FPRS) + " |",
        "|---|---|---|" + "---|" * len(FPRS),
    ]
    for name, a in attacks.items():
        tprs = " | ".join(_tpr_cell(a, f) for f in FPRS)
        lines.append(f"| {name} | {a['convention']} | {a['auc']:.4f} | {tprs} |")
    if attacks:
        n_neg = sorted({a["n_nonmembers"] for a in attacks.values()})
        lines += [
            "",
            f"Non-member pairs: {', '.join(map(str, n_neg))}; a TPR at an FPR below 1/(non-member "
            "pairs) is undefined (—). Brackets: Clopper-Pearson 95% intervals. Conventions "
            "(memjax.privacy): reference = LiRA's reference code (median centres, two-sided "
            "offline test, TPR at FPR < α); paper = the paper's algorithm as written (means, "
            "one-sided offline test, TPR at FPR ≤ α).",
        ]
    lines += [
        "",
        "| score | suspicious when | flipped-label AUC | Spearman with memorization |",
        "|---|---|---|---|",
    ]
    auc = summary["flipped_label_auc"] or {}
    rho = {"memorization": 1.0, **summary["spearman_with_memorization"]}
    for name, when in summary["suspicious_when"].items():
        cells = (_number(auc.get(name), ".4f"), _number(rho.get(name), ".3f"))
        lines.append(f"| {name} | {when} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def _roc_text(roc: dict[str, np.ndarray]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(list(roc))
    for row in zip(*roc.values(), strict=True):
        writer.writerow([f"{row[0]:.3g}", *(f"{v:.6g}" for v in row[1:])])
    return buf.getvalue()


def write(out_dir: str, result: dict[str, Any]) -> None:
    """``FILES`` in ``out_dir`` (each written atomically): summary.json (strict JSON),
    tables.md, per_example.csv (the columns of ``memjax estimate``'s memorization.csv) and
    roc.csv (one row per FPR of the grid, one column per attack)."""
    os.makedirs(out_dir, exist_ok=True)
    text = json.dumps(strict_json(result["summary"]), indent=2, allow_nan=False)
    atomic_write_text(os.path.join(out_dir, "summary.json"), text + "\n")
    atomic_write_text(os.path.join(out_dir, "tables.md"), tables(result["summary"]))
    atomic_write_text(os.path.join(out_dir, "per_example.csv"), csv_text(result["columns"]))
    atomic_write_text(os.path.join(out_dir, "roc.csv"), _roc_text(result["roc"]))
