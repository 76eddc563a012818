"""The experiment's files: summary.json (every number), table.md and table.csv."""

from __future__ import annotations

import csv
import os
from typing import Any

from experiments.theory_vs_width.agreement import METRICS, QUANTITIES
from memjax.jsonio import json_text, strict_json

__all__ = ["tables", "write"]


def _fmt(d: dict[str, float]) -> str:
    """Value and its 95% bootstrap interval (never a "± 0.000" from a degenerate bootstrap)."""
    return f"{d['value']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"


def tables(summary: dict[str, Any]) -> str:
    """Markdown: one table per quantity, a row per (width, pair), then the accuracies."""
    lines = []
    for q in QUANTITIES:
        lines += [
            f"### {q.replace('_', ' ')}: agreement between models",
            "",
            "value [95% interval, bootstrap over blocks of replicas]",
            "",
            "| width | model | kernel / reference | Pearson | Spearman | mean abs. diff. |",
            "|---|---|---|---|---|---|",
        ]
        for w in summary["widths"]:
            for pair, res in w["pairs"].items():
                a, b = pair.split("~")
                cells = " | ".join(_fmt(res[q][m]) for m in METRICS)
                lines.append(f"| {w['width']} | {a} | {b} | {cells} |")
        lines.append("")
    names = list(summary["widths"][0]["accuracy"])
    lines += [
        "### accuracy (mean over replicas ± stderr)",
        "",
        "| width | " + " | ".join(f"{n} train / test" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for w in summary["widths"]:
        cells = " | ".join(
            f"{w['accuracy'][n]['train']:.3f} / {w['accuracy'][n]['test']:.3f} ± "
            f"{w['accuracy'][n]['test_stderr']:.3f}"
            for n in names
        )
        lines.append(f"| {w['width']} | {cells} |")
    return "\n".join(lines) + "\n"


def write(summary: dict[str, Any], out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "summary.json"), "w") as f:
        f.write(json_text(strict_json(summary), indent=1))  # NaN (undefined) as null
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(tables(summary))
    with open(os.path.join(out, "table.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "width",
                "model",
                "reference",
                "quantity",
                "metric",
                "value",
                "stderr",
                "ci_low",
                "ci_high",
            ]
        )
        for row in summary["widths"]:
            for pair, res in row["pairs"].items():
                for q in QUANTITIES:
                    for m in METRICS:
                        w.writerow(
                            [
                                row["width"],
                                *pair.split("~"),
                                q,
                                m,
                                *(res[q][m][k] for k in ("value", "stderr", "ci_low", "ci_high")),
                            ]
                        )
