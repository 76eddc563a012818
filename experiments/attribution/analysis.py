"""Markdown tables of the attribution experiment's summary (every number with its interval),
and the summary written to disk."""

from __future__ import annotations

import json
import os
from typing import Any

from memjax.jsonio import strict_json
from memjax.study import atomic_write_text

__all__ = ["tables", "write", "interval"]


def interval(x: dict[str, float] | None, digits: int = 3) -> str:
    """'0.512 [0.480, 0.540]', or '—' when absent."""
    if x is None or x.get("value") is None:
        return "—"
    low = x.get("low", x.get("ci_low"))
    high = x.get("high", x.get("ci_high"))
    return f"{x['value']:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _lds(part: dict[str, Any]) -> list[str]:
    lines = []
    for d in part.values():
        lines += [
            f"### LDS, {d['dataset']} ({d['n_train']} train, {d['n_test']} test; "
            f"{d['eval_subsets']} evaluation subsets x {d['eval_seeds']} seeds)",
            "",
            "| estimator | replicas | LDS | note |",
            "|---|---|---|---|",
        ]
        for r in d["rows"]:
            score = None if r["value"] is None else {**r, "low": r["ci_low"], "high": r["ci_high"]}
            lines.append(
                f"| {r['estimator']} | {r['replicas']} | {interval(score)} | {r['note']} |"
            )
        lines.append("")
    return lines


def _loo(part: dict[str, Any]) -> list[str]:
    lines = [
        f"### Subset memorization against exact leave-one-out ({part['dataset']}, "
        f"{part['n_train']} examples, {part['seeds']} seeds x {part['n_train'] + 1} subsets)",
        "",
        "| ratio | output | replicas | Pearson r with exact LOO | mean subset - LOO |",
        "|---|---|---|---|---|",
    ]
    for r in part["rows"]:
        lines.append(
            f"| {r['ratio']:g} | {r['output']} | {r['replicas']} | {interval(r['pearson'])} | "
            f"{interval(r['mean_difference'])} |"
        )
    means = ", ".join(f"{k} {interval(v)}" for k, v in part["exact_mean"].items())
    return [*lines, "", f"Mean exact LOO memorization: {means}.", ""]


def _control(part: dict[str, Any]) -> list[str]:
    lines = [
        f"### Kernel control variate ({part['dataset']['name']}, {part['epochs']} epochs of "
        "full-batch GD on MSE, NTK parameterization)",
        "",
        "| width | output | replicas (extra) | variance ratio | replicas saved | controlled - "
        "plain | replica correlation |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in part["rows"]:
        lines.append(
            f"| {r['width']} | {r['output']} | {r['replicas']} ({r['extra_replicas']}) | "
            f"{interval(r['variance_ratio'])} | {interval(r['replicas_saved'])} | "
            f"{interval(r['shift'], 4)} | {interval(r['replica_correlation'])} |"
        )
    return [*lines, ""]


def tables(summary: dict[str, Any]) -> str:
    """The summary's parts as markdown tables."""
    lines = [f"## Attribution experiment ({summary['mode']} mode)", ""]
    for name, render in (("lds", _lds), ("loo", _loo), ("control", _control)):
        if name in summary:
            lines += render(summary[name])
    seconds = ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items())
    return "\n".join([*lines, f"Wall time: {seconds}.", ""])


def write(out: str, summary: dict[str, Any]) -> None:
    """summary.json and tables.md in ``out``."""
    os.makedirs(out, exist_ok=True)
    atomic_write_text(os.path.join(out, "summary.json"), json.dumps(strict_json(summary), indent=1))
    atomic_write_text(os.path.join(out, "tables.md"), tables(summary))
