"""Figure 3: the marginal utility of memorized examples (Feldman & Zhang 2020, fig. 2 style).

Remove every training example whose memorization exceeds a threshold, retrain replicas on
what is left, and compare their test accuracy with replicas trained after removing as many
examples chosen at random. If memorized examples matter for generalization (the long-tail
theory), the first costs more accuracy than the second.

Retraining is two study families (memjax.study) built from the source study's config and
memorization estimates, trained on first use into ``OUT/studies/marginal_utility/`` and reused
afterwards like any study: "memorized" holds one member per distinct removed set (dataset
option ``exclude``; design ``all``: every replica trains on all that is left, differing in
initialization and data order), the empty set being the all-data baseline; "random" one member
per distinct removed count k > 0 (design ``fixed`` with ratio (n - k)/n on the full training
set: each replica leaves out its own k random examples). A family's directory is named by a
digest of its settings, so other thresholds, replicas or source estimates get their own.

Intervals: the replicas are the units (the test set held fixed). Each mean accuracy gets a
t interval over its replicas (``stats.unit_mean``), each random-minus-memorized difference a
Welch t interval (``stats.unit_difference``), and the caption's wording per threshold is
chosen from that interval (``stats.difference_statement``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from memjax.study import Family, FamilyConfig, Study, StudyConfig
from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.stats import difference_statement, unit_difference, unit_mean
from paper_figures.style import SINGLE, interval_bars, interval_text, new_figure, panel_label

SOURCE = "digits_clean"
DEFAULTS = {"thresholds": [0.5, 0.3, 0.1, 0.02], "replicas": 8, "seed": 1}
EXCLUDE, RATIO = "dataset.exclude", "subsets.ratio"


def removed_sets(mem: np.ndarray, thresholds: list[float]) -> list[list[int]]:
    """Per threshold, the training indices whose memorization exceeds it (NaN never does)."""
    high = np.nan_to_num(mem, nan=-np.inf)
    return [np.flatnonzero(high > t).tolist() for t in thresholds]


def retraining_families(
    source: StudyConfig, removed: list[list[int]], n: int, replicas: int, seed: int
) -> tuple[FamilyConfig, FamilyConfig | None]:
    """The families that retrain ``source``'s model and training on its dataset of ``n``
    training examples: "memorized" sweeps ``dataset.exclude`` over [] (all data) and each
    distinct removed set (design ``all``); "random" sweeps ``subsets.ratio`` over (n - k)/n for
    each distinct count k > 0 of ``removed`` (design ``fixed``), None if every set is empty."""
    base = {**source.result_dict(), "seed": seed}
    about = f"figure 3: {replicas} replicas retrained on the data of {source.name} without"
    excluded = [[]] + [r for i, r in enumerate(removed) if r and r not in removed[:i]]
    memorized = FamilyConfig(
        name=f"{source.name}-memorized-removed",
        sweep={EXCLUDE: excluded},
        settings={**base, "subsets": {"replicas": replicas, "design": "all"}},
        description=f"{about} the examples of memorization above each threshold",
    )
    counts = sorted({len(r) for r in removed} - {0})
    if not counts:
        return memorized, None
    random = FamilyConfig(
        name=f"{source.name}-random-removed",
        sweep={RATIO: [(n - k) / n for k in counts]},
        settings={**base, "subsets": {"replicas": replicas, "design": "fixed"}},
        description=f"{about} as many random examples (each replica its own)",
    )
    return memorized, random


def _directory(kind: str, cfg: FamilyConfig) -> str:
    """``marginal_utility/<kind>-<digest of the family's settings>``."""
    text = json.dumps(cfg.identity(), sort_keys=True)
    return f"marginal_utility/{kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _accuracy_by_value(family: Family, key: str) -> dict[str, np.ndarray]:
    """Swept value (as JSON) -> test accuracy (replicas,) of that member's replicas."""

    def accuracy(study: Study) -> np.ndarray:
        _ = study.dataset  # the member's data rebuilt and checked against its fingerprint
        return study.outputs.test_correct.mean(axis=1)

    return {json.dumps(values[key]): accuracy(study) for values, study in family.members.values()}


def compute(ctx: Context) -> Data:
    settings = {**DEFAULTS, **ctx.figure_settings("marginal_utility")}
    study = ctx.study(SOURCE)
    thresholds = [float(t) for t in settings["thresholds"]]
    replicas, seed = int(settings["replicas"]), int(settings["seed"])
    mem = study.memorization.value
    n = len(mem)
    removed = removed_sets(mem, thresholds)
    memorized, random = retraining_families(study.ref.config, removed, n, replicas, seed)
    what = f"retrained on {study.label} without high-memorization or random examples"
    by_set = _accuracy_by_value(
        ctx.family(_directory("memorized", memorized), memorized, what), EXCLUDE
    )
    full = by_set[json.dumps([])]
    by_ratio: dict[str, Any] = {}
    if random is not None:
        by_ratio = _accuracy_by_value(ctx.family(_directory("random", random), random, what), RATIO)
    rows = [full]
    for r in removed:
        rows.append(by_set[json.dumps(r)] if r else full)
        rows.append(by_ratio[json.dumps((n - len(r)) / n)] if r else full)
    counts = np.array([len(r) for r in removed])
    return {
        "source_study": SOURCE,
        "dataset": study.label,
        "n_train": n,
        "replicas_per_point": replicas,
        "thresholds": thresholds,
        "removed": counts,
        "removed_fraction": counts / n,
        **accuracy_summary(np.stack(rows)),
    }


KEYS = ("mean", "stderr", "ci_low", "ci_high")


def accuracy_summary(acc: np.ndarray) -> Data:
    """Means and differences of the test accuracies ``acc`` (1 + 2T, replicas): rows are
    all data, then per threshold memorized-removed and random-removed; 95% intervals with
    the replicas as units."""
    full = unit_mean(acc[0])

    def rows(stats: list[dict]) -> dict[str, list[float]]:
        return {k: [s["value" if k == "mean" else k] for s in stats] for k in KEYS}

    return {
        "full_data_accuracy": {k: full["value" if k == "mean" else k] for k in KEYS},
        "memorized_removed": rows([unit_mean(a) for a in acc[1::2]]),
        "random_removed": rows([unit_mean(a) for a in acc[2::2]]),
        "random_minus_memorized": rows(
            [unit_difference(r, m) for m, r in zip(acc[1::2], acc[2::2], strict=True)]
        ),
    }


def draw(data: Data) -> Figure:
    fig, axes = new_figure(SINGLE, 2.5)
    ax = axes[0, 0]
    x = [100 * f for f in data["removed_fraction"]]
    full = data["full_data_accuracy"]
    ax.axhline(100 * full["mean"], color="0.5", ls=":", lw=0.8, label="all data (band: 95% int.)")
    ax.axhspan(100 * full["ci_low"], 100 * full["ci_high"], color="0.5", alpha=0.15, lw=0)
    for key, label, color in (
        ("memorized_removed", "memorization > threshold removed", "C3"),
        ("random_removed", "same number removed at random", "C0"),
    ):
        m = data[key]
        y, low, high = ([100 * v for v in m[k]] for k in ("mean", "ci_low", "ci_high"))
        interval_bars(ax, x, y, low, high, f"{label} (95% int.)", color, marker="o")
    for xi, yi, t in zip(
        x, [100 * v for v in data["memorized_removed"]["mean"]], data["thresholds"], strict=True
    ):
        ax.annotate(f">{t:g}", (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=5.5)
    ax.set_xlabel("training examples removed (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower left")
    panel_label(ax, "", f"{data['dataset']}: retrained without the removed examples")
    return fig


def _interval(m: dict) -> str:
    return interval_text(m["mean"], m["ci_low"], m["ci_high"], 3)


def _row(m: dict, i: int) -> dict:
    """Threshold ``i``'s entries of a per-threshold summary."""
    return {k: m[k][i] for k in KEYS}


def caption(data: Data) -> str:
    mem, rnd, diff = (
        data[k] for k in ("memorized_removed", "random_removed", "random_minus_memorized")
    )
    parts = [
        f"memorization > {t:g} ({r} examples removed): {_interval(_row(mem, i))} vs random "
        f"{_interval(_row(rnd, i))}; "
        + difference_statement(
            "replicas without random examples",
            "those without memorized ones",
            "test accuracy",
            diff["mean"][i],
            diff["ci_low"][i],
            diff["ci_high"][i],
        )
        for i, (t, r) in enumerate(zip(data["thresholds"], data["removed"], strict=True))
    ]
    return (
        f"Test accuracy of replicas retrained on {data['dataset']} after removing the training "
        "examples whose memorization exceeds a threshold (red; thresholds annotated) or as "
        "many random examples (blue): means over "
        f"{data['replicas_per_point']} replicas per point with 95% t intervals over replicas "
        "(bars; the test set held fixed), differences with Welch t intervals. All data: "
        f"{_interval(data['full_data_accuracy'])}. " + ". ".join(parts) + "."
    )


FIGURE = FigureSpec(
    number=3,
    name="marginal_utility",
    title="Marginal utility of memorized examples",
    studies=(SOURCE,),
    compute=compute,
    draw=draw,
    caption=caption,
)
