"""Figure 7: the long tail (Feldman 2020): rare subpopulations are memorized, and needed.

On the long-tailed mixture, each training example's memorization against how many training
examples share its subpopulation; and the test accuracy on a rare subpopulation's test
examples in the replicas that trained on all of its few training examples, against those
that trained on none of them (for singletons: with and without the singleton).

Intervals (95%): (a) a bin's mean memorization holds its examples fixed and has the replica
blocks as units (``stats.example_average``, as figure 1); (b) the test examples are the
units: a mean accuracy has a Wilson interval on the effective number of test examples
(``stats.proportion_mean``), a with-minus-without difference Newcombe's interval
(``stats.proportion_difference``; conservative, the pairing being ignored). Comparisons in
the caption are worded from those intervals (``stats.difference_statement``).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.stats import (
    difference_statement,
    example_average,
    proportion_difference,
    proportion_mean,
)
from paper_figures.style import (
    DOUBLE,
    floats,
    interval_bars,
    interval_text,
    legend,
    new_figure,
    panel_label,
    scatter,
)

STUDY = "longtail"
COUNT_EDGES = np.array([0.5, 1.5, 2.5, 3.5, 5.5, 9.5, 19.5, 49.5, 1e6])
BIN_LABELS = ("1", "2", "3", "4-5", "6-9", "10-19", "20-49", "50+")
RARE_COUNTS = (1, 2, 3)
CONDITIONS = {"all IN": "trained on them", "none IN": "trained without them"}


def _rare_accuracy(study, count: int) -> dict:
    """Mean test accuracy on subpopulations with ``count`` training examples, in replicas
    holding all of them vs none of them, and the difference, with 95% intervals over test
    examples."""
    ds, masks, correct = study.dataset, study.masks, study.outputs.test_correct
    sub_tr, sub_te = ds.train_info["subpop"], ds.test_info["subpop"]
    acc: dict[str, list[float]] = {"all IN": [], "none IN": []}
    for j in np.flatnonzero(ds.test_info["subpop_train_count"] == count):
        held = masks[:, sub_tr == sub_te[j]]
        for cond, rows in (("all IN", held.all(axis=1)), ("none IN", ~held.any(axis=1))):
            if rows.any():
                acc[cond].append(correct[rows, j].mean())
    out: dict = {}
    for cond, v in acc.items():
        m = proportion_mean(np.array(v))
        out[cond] = {"mean": m["value"], **{k: m[k] for k in ("stderr", "ci_low", "ci_high")}}
        out[cond]["test_examples"] = len(v)
    out["all_minus_none"] = proportion_difference(np.array(acc["all IN"]), np.array(acc["none IN"]))
    return out


def _binned(study, count: np.ndarray) -> dict:
    """Mean memorization of the examples in each subpopulation-size bin (NaN where a bin has
    no estimate), and singletons minus the most populous non-empty bin."""
    mem = study.memorization.value
    defined = np.isfinite(mem)
    idx = np.digitize(count, COUNT_EDGES[1:-1])
    masks, correct = study.masks, study.outputs.train_correct
    out: dict = {"bin_edges": COUNT_EDGES, "labels": BIN_LABELS, "x": [], "count": []}
    out |= {k: [] for k in ("mean", "stderr", "ci_low", "ci_high")}
    for b in range(len(BIN_LABELS)):
        inside = (idx == b) & defined
        out["count"].append(int(inside.sum()))
        out["x"].append(count[inside].mean() if inside.any() else np.nan)
        e = (
            example_average(masks, correct, study.blocks, inside / inside.sum())
            if inside.any()
            else dict.fromkeys(("value", "stderr", "ci_low", "ci_high"), np.nan)
        )
        out["mean"].append(e["value"])
        for k in ("stderr", "ci_low", "ci_high"):
            out[k].append(e[k])
    top = max(b for b in range(len(BIN_LABELS)) if out["count"][b])
    single, most = (idx == 0) & defined, (idx == top) & defined
    if top > 0 and single.any():
        weights = single / single.sum() - most / most.sum()
        out["singletons_minus_largest"] = {
            "largest_bin": BIN_LABELS[top],
            **example_average(masks, correct, study.blocks, weights),
        }
    return out


def compute(ctx: Context) -> Data:
    study = ctx.study(STUDY)
    info = study.dataset.train_info
    if "subpop_train_count" not in info:
        raise ValueError(f"study {STUDY!r} needs a dataset with subpopulation info (longtail)")
    count = info["subpop_train_count"].astype(float)
    test_accuracy = proportion_mean(study.outputs.test_correct.mean(axis=0))
    return {
        "study": STUDY,
        "dataset": study.label,
        "replicas": study.store.replicas,
        "mean_test_accuracy": test_accuracy,
        "examples": {"subpop_train_count": count, "memorization": study.memorization.value},
        "binned": _binned(study, count),
        "rare_test_accuracy": {str(c): _rare_accuracy(study, c) for c in RARE_COUNTS},
    }


def draw(data: Data) -> Figure:
    fig, axes = new_figure(DOUBLE, 2.4, 1, 2)
    ax = axes[0, 0]
    ex = data["examples"]
    jitter = np.random.default_rng(0).uniform(0.85, 1.15, len(ex["subpop_train_count"]))
    scatter(
        ax,
        np.array(ex["subpop_train_count"]) * jitter,
        ex["memorization"],
        "training example",
        "0.5",
    )
    b = data["binned"]
    interval_bars(
        ax, b["x"], b["mean"], b["ci_low"], b["ci_high"], "bin mean (95% int.)", "C3", marker="o"
    )
    ax.set_xscale("log")
    ax.set_xlabel("training examples in the subpopulation (log scale)")
    ax.set_ylabel("memorization (Δ accuracy)")
    legend(ax, loc="upper right")
    panel_label(ax, "a", "memorization vs subpopulation frequency")
    ax = axes[0, 1]
    counts = list(data["rare_test_accuracy"])
    x = np.arange(len(counts))
    for k, (cond, color) in enumerate((("all IN", "C2"), ("none IN", "C7"))):
        acc = [data["rare_test_accuracy"][c][cond] for c in counts]
        mean = floats([a["mean"] for a in acc])
        below = mean - floats([a["ci_low"] for a in acc])
        above = floats([a["ci_high"] for a in acc]) - mean
        ax.bar(
            x + (k - 0.5) * 0.38,
            100 * mean,
            0.38,
            yerr=100 * np.array([below, above]),
            color=color,
            capsize=2,
            label=CONDITIONS[cond],
        )
    ax.axhline(
        100 * data["mean_test_accuracy"]["value"],
        color="0.3",
        ls=":",
        lw=0.8,
        label="all test examples",
    )
    ax.set_xticks(
        x,
        [f"{c} ({data['rare_test_accuracy'][c]['all IN']['test_examples']} test)" for c in counts],
    )
    ax.set_xlabel("training examples in the subpopulation (test examples)")
    ax.set_ylabel("test accuracy on the subpopulation (%)\n(bars: 95% intervals)")
    ax.set_ylim(0, 115)
    ax.legend(loc="upper right", ncol=3, fontsize=5.5)
    panel_label(ax, "b", "rare subpopulations need their examples")
    return fig


def _interval(m: dict, key: str = "mean", scale: float = 1.0, digits: int = 2) -> str:
    return interval_text(*(scale * m[k] for k in (key, "ci_low", "ci_high")), digits)


def caption(data: Data) -> str:
    b = data["binned"]
    first = {k: b[k][0] for k in ("mean", "ci_low", "ci_high")}
    text = (
        f"The long tail on the {data['dataset']} ({data['replicas']} replicas). (a) "
        "Memorization of each training example against the number of training examples of "
        "its subpopulation (points jittered horizontally; red: bin means with 95% intervals "
        "over the study's replica blocks, the examples held fixed): singletons "
        f"{_interval(first)}"
    )
    d = b.get("singletons_minus_largest")
    if d is not None:
        top = BIN_LABELS.index(d["largest_bin"])
        largest = {k: b[k][top] for k in ("mean", "ci_low", "ci_high")}
        text += (
            f", subpopulations of {d['largest_bin']} {_interval(largest)}; "
            + difference_statement(
                "singletons",
                f"examples of subpopulations of {d['largest_bin']}",
                "mean memorization",
                d["value"],
                d["ci_low"],
                d["ci_high"],
            )
        )
    single = data["rare_test_accuracy"]["1"]
    d = single["all_minus_none"]
    return (
        text + ". (b) Test accuracy on test examples of subpopulations with 1, 2 or 3 "
        "training examples, in the replicas trained on all of those examples against those "
        "trained on none of them (means over test examples, 95% Wilson intervals on the "
        "effective number of test examples; all test examples: "
        f"{_interval(data['mean_test_accuracy'], 'value', 100, 1)}%). Singletons: "
        f"{_interval(single['all IN'], scale=100, digits=1)}% with vs "
        f"{_interval(single['none IN'], scale=100, digits=1)}% without; "
        + difference_statement(
            "replicas trained on the singleton",
            "those trained without it",
            "accuracy on its test examples",
            d["value"],
            d["ci_low"],
            d["ci_high"],
        )
        + " (Newcombe interval, pairing ignored)."
    )


FIGURE = FigureSpec(
    number=7,
    name="long_tail",
    title="Memorization and the long tail",
    studies=(STUDY,),
    compute=compute,
    draw=draw,
    caption=caption,
)
