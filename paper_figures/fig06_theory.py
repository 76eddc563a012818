"""Figure 6: theory vs. training, from the theory-vs-width experiment.

Networks, their linearizations and NTK/NNGP kernel models are trained on the same MNIST-1D
masks at each width (experiments/theory_vs_width). The top row puts each training example's
network memorization against the paired NTK dynamics' at a narrow, a middle and the widest
width; the bottom row shows how well the kernel models predict network memorization as the
width grows: NTK theory says the agreement with the paired NTK dynamics should approach 1.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.style import (
    DOUBLE,
    floats,
    interval_bars,
    interval_text,
    new_figure,
    panel_label,
)

SCATTER_PAIR = ("network", "ntk_gd_paired")
PAIRS = {
    "network~ntk_gd_paired": ("network vs NTK dynamics, same init", "C3", "o", "-"),
    "network~ntk_gd": ("network vs NTK mean predictor (f0 = 0)", "C1", "s", "-"),
    "network~nngp": ("network vs NNGP regression", "C0", "^", "-"),
    "linearized~ntk_gd_paired": ("linearized net vs NTK, same init", "C3", "o", "--"),
}
METRICS = {  # metric -> (axis label, panel title)
    "pearson": ("Pearson correlation", "Pearson r, network vs kernel"),
    "spearman": ("Spearman correlation", "Spearman ρ, network vs kernel"),
    "mad": ("mean |Δ memorization|", "mean absolute difference"),
}


def scatter_widths(widths: list[int]) -> list[int]:
    """The narrowest, a middle and the widest width (fewer if the experiment has fewer)."""
    picks = sorted({0, len(widths) // 2, len(widths) - 1})
    return [widths[i] for i in picks]


def compute(ctx: Context) -> Data:
    """The experiment's analysis, run through its own path: its family of network studies
    and its kernel studies in ``<out>/theory_vs_width`` are trained (or resumed: the stores
    are the cache) and analysed."""
    summary = ctx.experiment(
        "theory_vs_width", "its family of network studies and kernel studies",
        progress=ctx.progress,
    )  # fmt: skip
    widths = [w["width"] for w in summary["widths"]]
    curves = {
        pair: {
            q: {
                m: {
                    k: [w["pairs"][pair][q][m][k] for w in summary["widths"]]
                    for k in ("value", "stderr", "ci_low", "ci_high")
                }
                for m in METRICS
            }
            for q in ("memorization", "test_accuracy")
        }
        for pair in PAIRS
    }
    by_width = {w["width"]: w for w in summary["widths"]}
    net, kernel = SCATTER_PAIR
    points = {
        str(width): {
            net: by_width[width]["memorization"][net],
            kernel: by_width[width]["memorization"][kernel],
            "pearson": by_width[width]["pairs"][f"{net}~{kernel}"]["memorization"]["pearson"],
        }
        for width in scatter_widths(widths)
    }
    return {
        "dataset": summary["dataset"]["name"],
        "settings": summary["settings"],
        "stderr": summary["stderr"],
        "widths": widths,
        "curves": curves,
        "scatter": points,
    }


def _interval(metric: dict) -> str:
    """ "0.93 [0.90, 0.95]": a bootstrap value with its 95% interval."""
    return interval_text(metric["value"], metric["ci_low"], metric["ci_high"])


def _draw_scatter(ax, points: dict) -> None:
    """Examples as bubbles: with few replicas memorization takes few values, so many
    examples share a point; a bubble's area counts them."""
    net, kernel = SCATTER_PAIR
    x, y = floats(points[kernel]), floats(points[net])
    ok = np.isfinite(x) & np.isfinite(y)
    xy, counts = np.unique(np.stack([x[ok], y[ok]], axis=1), axis=0, return_counts=True)
    ax.scatter(xy[:, 0], xy[:, 1], s=4 * counts, color="C3", alpha=0.55, linewidths=0)
    lo = min(np.nanmin(xy, initial=0.0), 0.0)
    hi = max(np.nanmax(xy, initial=1.0), 1.0)
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.7, ls=":")
    ax.set_aspect("equal", adjustable="datalim")
    r = points["pearson"]
    ax.text(
        0.04,
        0.96,
        f"r = {_interval(r)}\n{int(ok.sum())} examples",
        transform=ax.transAxes,
        va="top",
    )
    ax.set_xlabel("NTK dynamics memorization (same init)")
    ax.set_ylabel("network memorization")


def draw(data: Data) -> Figure:
    fig, axes = new_figure(DOUBLE, 5.0, 2, len(METRICS))
    for ax, letter, (width, points) in zip(axes[0], "abc", data["scatter"].items(), strict=False):
        _draw_scatter(ax, points)
        panel_label(ax, letter, f"width {width}")
    for ax in axes[0, len(data["scatter"]) :]:
        ax.set_visible(False)
    for ax, letter, (metric, (label, title)) in zip(axes[1], "def", METRICS.items(), strict=True):
        for pair, (name, color, marker, ls) in PAIRS.items():
            c = data["curves"][pair]["memorization"][metric]
            interval_bars(
                ax,
                data["widths"],
                c["value"],
                c["ci_low"],
                c["ci_high"],
                name,
                color,
                marker=marker,
                ls=ls,
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden width (units)")
        ax.set_ylabel(label)
        panel_label(ax, letter, title)
    handles, labels = axes[1, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2)
    return fig


def caption(data: Data) -> str:
    paired = data["curves"]["network~ntk_gd_paired"]["memorization"]
    r = [{k: v[i] for k, v in paired["pearson"].items()} for i in (0, -1)]
    s = data["settings"]
    return (
        "Network memorization against kernel-predicted memorization on a seeded subset of "
        f"MNIST-1D ({s['n_train']} training, {s['n_test']} test examples; {s['replicas']} "
        f"replicas per model, the same masks for all; MLPs with {s['depth']} hidden layer(s), NTK "
        f"parameterization, full-batch gradient descent on MSE for {s['epochs']} steps). "
        "(a-c) Each training example's memorization by the network against the NTK dynamics "
        f"from the same initialization, at widths {', '.join(data['scatter'])} (dotted: "
        "equality; r: Pearson; a bubble's area counts the examples at that point). As the "
        "width grows: (d) Pearson and (e) Spearman correlation across training examples, "
        "(f) mean absolute difference; error bars: 95% intervals, "
        f"{data['stderr']}. Network vs the NTK dynamics from the same initialization: Pearson "
        f"{_interval(r[0])} at width {data['widths'][0]}, {_interval(r[1])} at "
        f"width {data['widths'][-1]}."
    )


FIGURE = FigureSpec(
    number=6,
    name="theory",
    title="Theory vs. training across widths",
    studies=(),
    compute=compute,
    draw=draw,
    caption=caption,
)
