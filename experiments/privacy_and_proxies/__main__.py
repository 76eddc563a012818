"""Do cheap proxies and membership inference find what memorization finds?

One MNIST-1D study with 10% flipped labels; every replica's trajectory is recorded. Writes
to ``--out``: ``summary.json`` (settings, timing, attacks, correlations, flipped-label
AUCs), ``tables.md`` (the same as two tables), ``per_example.csv`` (every score with its
stderr) and ``roc.csv`` (log-spaced ROC points of each attack, for log-log plots; NaN below
FPR 1/(non-member pairs), where no TPR is resolvable).

    python -m experiments.privacy_and_proxies --quick --out DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from importlib import resources
from typing import Any

import numpy as np
import yaml

import memjax as mj
from memjax.models import spec_from_dict
from memjax.privacy import FPRS, AttackResult
from memjax.relations import SUSPICIOUS_WHEN_HIGH, Relations, relations
from memjax.study import build_dataset


def load_settings(mode: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath("config.yaml").read_text()
    return yaml.safe_load(text)[mode]


def run(settings: dict[str, Any]) -> tuple[np.ndarray, mj.ReplicaOutputs, np.ndarray, float]:
    """Train the study's replicas; returns masks, outputs, flipped mask, training seconds."""
    ds = build_dataset(settings["dataset"])
    masks = mj.subsets.sample(ds.n_train, settings["replicas"], settings["ratio"], settings["seed"])
    cfg = mj.TrainConfig.from_dict(settings["train"])
    start = time.perf_counter()
    out = mj.train_replicas(spec_from_dict(settings["model"]), ds, masks, cfg, settings["seed"])
    return masks, out, ds.train_info["flipped"], time.perf_counter() - start


def _tpr_cell(attack: AttackResult, fpr: float) -> str:
    if fpr in attack.undefined:
        return "—"
    low, high = attack.tpr_ci[fpr]
    return f"{attack.tpr_at_fpr[fpr]:.4f} [{low:.4f}, {high:.4f}]"


def tables(rel: Relations) -> str:
    """Markdown: the attacks, then every score against memorization and the flipped labels."""
    lines = [
        "| attack | convention | AUC | " + " | ".join(f"TPR@FPR {a:g}" for a in FPRS) + " |",
        "|---|---|---|" + "---|" * len(FPRS),
    ]
    for name, a in rel.attacks.items():
        tprs = " | ".join(_tpr_cell(a, f) for f in FPRS)
        lines.append(f"| {name} | {a.convention} | {a.auc:.4f} | {tprs} |")
    if rel.attacks:
        n_neg = sorted({a.n_nonmembers for a in rel.attacks.values()})
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
    for name in rel.columns:
        rho = rel.spearman.get(name, 1.0)
        high = "high" if SUSPICIOUS_WHEN_HIGH[name] else "low"
        lines.append(f"| {name} | {high} | {rel.flipped_auc[name]:.4f} | {rho:.3f} |")
    return "\n".join(lines) + "\n"


def write(out_dir: str, rel: Relations, flipped: np.ndarray, summary: dict[str, Any]) -> None:
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out_dir, "tables.md"), "w") as f:
        f.write(tables(rel))
    with open(os.path.join(out_dir, "per_example.csv"), "w", newline="") as f:
        w = csv.writer(f)
        names = list(rel.columns)
        parts = ("", "_stderr", "_ci_low", "_ci_high")
        w.writerow(["index", "flipped", *[f"{k}{part}" for k in names for part in parts]])
        for i in range(len(flipped)):
            vals = [
                f"{getattr(rel.columns[k], field)[i]:.6g}"
                for k in names
                for field in ("value", "stderr", "ci_low", "ci_high")
            ]
            w.writerow([i, int(flipped[i]), *vals])
    with open(os.path.join(out_dir, "roc.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["fpr", *rel.attacks])
        grid = next(iter(rel.attacks.values())).fpr_grid
        for j, fpr in enumerate(grid):
            w.writerow([f"{fpr:.3g}", *[f"{a.tpr_grid[j]:.6g}" for a in rel.attacks.values()]])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI setting (minutes on a CPU)")
    p.add_argument("--out", required=True, help="directory for the tables")
    args = p.parse_args(argv)
    settings = load_settings("quick" if args.quick else "full")
    mj.use_cpu_cores()
    masks, out, flipped, train_s = run(settings)
    start = time.perf_counter()
    rel = relations(masks, out, flipped, n_targets=settings["n_targets"])
    summary = {
        "settings": settings,
        "train_seconds": round(train_s, 1),
        "analysis_seconds": round(time.perf_counter() - start, 1),
        "train_accuracy_in": float(out.train_correct[masks].mean()),
        "flipped_fit_in": float(out.train_correct[masks & flipped].mean()),
        "test_accuracy": float(out.test_correct.mean()),
        **rel.summary(),
    }
    write(args.out, rel, flipped, summary)
    print(tables(rel))
    print(f"train {train_s:.0f}s; written to {args.out}")
    return summary


if __name__ == "__main__":
    main()
