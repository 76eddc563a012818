"""Figure 7: the long tail (Feldman 2020): rare subpopulations are memorized, and needed.

On the long-tailed mixture, each training example's memorization against how many training
examples share its subpopulation; and the test accuracy on a rare subpopulation's test
examples in the replicas that trained on all of its few training examples, against those
that trained on none of them (for singletons: with and without the singleton).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.stats import binned_means
from paper_figures.style import DOUBLE, errorbars, legend, new_figure, panel_label, scatter

STUDY = "longtail"
COUNT_EDGES = np.array([0.5, 1.5, 2.5, 3.5, 5.5, 9.5, 19.5, 49.5, 1e6])
RARE_COUNTS = (1, 2, 3)


def _rare_accuracy(study, count: int) -> dict:
    """Mean test accuracy (± s.e. over test examples) on subpopulations with ``count``
    training examples, in replicas holding all of them vs none of them."""
    ds, masks, correct = study.dataset, study.masks, study.outputs.test_correct
    sub_tr, sub_te = ds.train_info["subpop"], ds.test_info["subpop"]
    acc = {"all IN": [], "none IN": []}
    for j in np.flatnonzero(ds.test_info["subpop_train_count"] == count):
        held = masks[:, sub_tr == sub_te[j]]
        for cond, rows in (("all IN", held.all(axis=1)), ("none IN", ~held.any(axis=1))):
            if rows.any():
                acc[cond].append(correct[rows, j].mean())
    return {
        cond: {
            "mean": float(np.mean(v)) if v else float("nan"),
            "stderr": float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan"),
            "test_examples": len(v),
        }
        for cond, v in acc.items()
    }


def compute(ctx: Context) -> Data:
    study = ctx.study(STUDY)
    info = study.dataset.train_info
    if "subpop_train_count" not in info:
        raise ValueError(f"study {STUDY!r} needs a dataset with subpopulation info (longtail)")
    count = info["subpop_train_count"].astype(float)
    mem = study.memorization.value
    return {
        "study": STUDY,
        "dataset": study.label,
        "replicas": study.store.replicas,
        "mean_test_accuracy": float(study.outputs.test_correct.mean()),
        "examples": {"subpop_train_count": count, "memorization": mem},
        "binned": binned_means(count, mem, COUNT_EDGES),
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
    errorbars(ax, b["x"], b["mean"], b["stderr"], "bin mean ± s.e.", "C3", marker="o")
    ax.set_xscale("log")
    ax.set_xlabel("training examples in the subpopulation (log scale)")
    ax.set_ylabel("memorization (Δ accuracy)")
    legend(ax, loc="upper right")
    panel_label(ax, "a", "memorization vs subpopulation frequency")
    ax = axes[0, 1]
    counts = list(data["rare_test_accuracy"])
    x = np.arange(len(counts))
    for k, (cond, color) in enumerate((("all IN", "C2"), ("none IN", "C7"))):
        mean = [100 * data["rare_test_accuracy"][c][cond]["mean"] for c in counts]
        err = [100 * data["rare_test_accuracy"][c][cond]["stderr"] for c in counts]
        ax.bar(
            x + (k - 0.5) * 0.38,
            mean,
            0.38,
            yerr=err,
            color=color,
            capsize=2,
            label={"all IN": "trained on them", "none IN": "trained without them"}[cond],
        )
    ax.axhline(
        100 * data["mean_test_accuracy"], color="0.3", ls=":", lw=0.8, label="all test examples"
    )
    ax.set_xticks(
        x,
        [f"{c} ({data['rare_test_accuracy'][c]['all IN']['test_examples']} test)" for c in counts],
    )
    ax.set_xlabel("training examples in the subpopulation (test examples)")
    ax.set_ylabel("test accuracy on the subpopulation (%)")
    ax.set_ylim(0, 115)
    ax.legend(loc="upper right", ncol=3, fontsize=5.5)
    panel_label(ax, "b", "rare subpopulations need their examples")
    return fig


def caption(data: Data) -> str:
    single = data["rare_test_accuracy"]["1"]
    b = data["binned"]
    return (
        f"The long tail on the {data['dataset']} ({data['replicas']} replicas). (a) "
        "Memorization of each training example against the number of training examples of "
        "its subpopulation (points jittered horizontally; red: bin means ± s.e.): mean "
        f"{b['mean'][0]:.2f} for singletons vs {b['mean'][-1]:.2f} for subpopulations with "
        "50 or more. (b) Test accuracy on test examples of subpopulations with 1, 2 or 3 "
        "training examples, in the replicas trained on all of those examples against those "
        "trained on none of them (mean ± s.e. over test examples); singletons: "
        f"{100 * single['all IN']['mean']:.0f}% with vs {100 * single['none IN']['mean']:.0f}% "
        "without."
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
