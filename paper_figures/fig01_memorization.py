"""Figure 1: distribution of memorization estimates (Feldman & Zhang 2020, fig. 1 style).

MNIST-1D and digits, each with its own labels and with 10% of the labels flipped; in the
noisy studies the flipped examples are drawn separately, because the literature's first
sanity check is that they sit at high memorization while clean examples sit near zero. The
caption states that check as computed: the difference of the groups' mean memorization with
its 95% interval over the study's replica blocks (``stats.example_average``), its wording
chosen from the interval.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.stats import difference_statement, example_average, histogram
from paper_figures.style import (
    CLEAN,
    DOUBLE,
    FLIPPED,
    interval_text,
    log_count_axis,
    new_figure,
    panel_label,
    stairs,
)

PANELS = ("mnist1d_clean", "mnist1d_noise", "digits_clean", "digits_noise")
EDGES = np.round(np.linspace(-1.0, 1.0, 41), 3)


def _panel(ctx: Context, name: str) -> dict:
    study = ctx.study(name)
    mem = study.memorization
    flipped = study.flipped
    groups = {"clean label": np.ones_like(mem.value, bool)}
    if flipped is not None:
        groups = {"clean label": ~flipped, "flipped label": flipped}
    defined = np.isfinite(mem.value)
    masks, correct = study.masks, study.outputs.train_correct

    def average(weights: np.ndarray) -> dict[str, float]:
        return example_average(masks, correct, study.blocks, weights)

    panel = {
        "study": name,
        "dataset": study.label,
        "replicas": study.store.replicas,
        "n_examples": len(mem.value),
        "n_without_estimate": int((~defined).sum()),
        "median_interval_width": float(np.nanmedian(mem.ci_high - mem.ci_low)),
        "counts": {g: histogram(mem.value[m], EDGES) for g, m in groups.items()},
        "mean": {g: average((m & defined) / (m & defined).sum()) for g, m in groups.items()},
        "fraction_above_0.5": {g: float(np.mean(mem.value[m] > 0.5)) for g, m in groups.items()},
    }
    if flipped is not None:
        a, b = flipped & defined, ~flipped & defined
        panel["flipped_minus_clean"] = average(a / a.sum() - b / b.sum())
    return panel


def compute(ctx: Context) -> Data:
    return {"bin_edges": EDGES, "panels": [_panel(ctx, name) for name in PANELS]}


def _left_edge(edges: list[float], panels: list[dict]) -> float:
    """Left end of the x axis: the first non-empty bin of any panel, and at most -0.25."""
    first = min(
        int(np.flatnonzero(np.array(c) > 0)[0])
        for p in panels
        for c in p["counts"].values()
        if any(c)
    )
    return min(edges[first], -0.25)


def draw(data: Data) -> Figure:
    fig, axes = new_figure(DOUBLE, 1.9, 1, len(data["panels"]), sharey=True)
    colors = {"clean label": CLEAN, "flipped label": FLIPPED}
    for ax, letter, p in zip(axes[0], "abcd", data["panels"], strict=True):
        for group, counts in p["counts"].items():
            stairs(
                ax,
                data["bin_edges"],
                counts,
                group,
                colors[group],
                fill=group != "clean label",
                alpha=0.6 if group != "clean label" else 1.0,
            )
        log_count_axis(ax, p["counts"].values())
        ax.set_xlim(_left_edge(data["bin_edges"], data["panels"]), 1)
        ax.set_xlabel("memorization (Δ accuracy)")
        panel_label(ax, letter, p["dataset"])
        if len(p["counts"]) > 1:
            ax.legend(loc="upper right")
    axes[0, 0].set_ylabel("training examples")
    return fig


def _interval(e: dict) -> str:
    return interval_text(e["value"], e["ci_low"], e["ci_high"], 3)


def caption(data: Data) -> str:
    parts = []
    for p in data["panels"]:
        means = ", ".join(f"{g} {_interval(m)}" for g, m in p["mean"].items())
        part = f"{p['dataset']} ({p['replicas']} replicas): mean memorization {means}"
        if "flipped_minus_clean" in p:
            d = p["flipped_minus_clean"]
            statement = difference_statement(
                "flipped labels",
                "clean ones",
                "mean memorization",
                d["value"],
                d["ci_low"],
                d["ci_high"],
            )
            part += f"; {statement}"
        parts.append(part)
    return (
        "Histograms (log count) of per-example memorization estimates, the accuracy of replicas "
        "trained with the example minus those trained without it, on MNIST-1D and digits "
        "with their own labels and with 10% of the training labels flipped (flipped examples "
        "in red). Means over a group's examples with 95% intervals over the study's replica "
        "blocks (the examples held fixed). " + "; ".join(parts) + "."
    )


FIGURE = FigureSpec(
    number=1,
    name="memorization",
    title="Distribution of memorization estimates",
    studies=PANELS,
    compute=compute,
    draw=draw,
    caption=caption,
)
