"""Figure 6: theory vs. training, from the theory-vs-width experiment.

Networks, their linearizations and NTK/NNGP kernel models are trained on the same MNIST-1D
masks at each width (experiments/theory_vs_width). The figure shows how well the kernel
models predict each example's network memorization as the width grows: NTK theory says the
agreement with the paired NTK dynamics should approach 1.
"""

from __future__ import annotations

import hashlib
from importlib import import_module
from pathlib import Path
from types import ModuleType

import numpy as np
from matplotlib.figure import Figure

from paper_figures.context import Context
from paper_figures.derived import cached_result
from paper_figures.spec import Data, FigureSpec
from paper_figures.style import DOUBLE, errorbars, new_figure, panel_label

EXPERIMENT = "experiments.theory_vs_width.__main__"
PAIRS = {
    "network~ntk_gd_paired": ("network vs NTK dynamics, same init", "C3", "o", "-"),
    "network~ntk_gd": ("network vs NTK dynamics, mean init", "C1", "s", "-"),
    "network~nngp": ("network vs NNGP regression", "C0", "^", "-"),
    "linearized~ntk_gd_paired": ("linearized net vs NTK, same init", "C3", "o", "--"),
}
METRICS = {  # metric -> (axis label, panel title)
    "pearson": ("Pearson correlation", "Pearson r, network vs kernel"),
    "spearman": ("Spearman correlation", "Spearman ρ, network vs kernel"),
    "mad": ("mean |Δ memorization|", "mean absolute difference"),
}


def _source_digest(module: ModuleType) -> str:
    """Digest of the experiment's code: a changed experiment is rerun, not redrawn stale."""
    return hashlib.sha256(Path(module.__file__).read_bytes()).hexdigest()[:16]


def compute(ctx: Context) -> Data:
    experiment = import_module(EXPERIMENT)
    settings = experiment.load_settings(ctx.mode)
    summary = cached_result(
        ctx,
        "theory_vs_width",
        {"experiment": _source_digest(experiment), "settings": settings},
        lambda: experiment.run(settings),
        f"summary of experiments/theory_vs_width ({ctx.mode} mode, its config.yaml)",
    )
    widths = [w["width"] for w in summary["widths"]]
    curves = {
        pair: {
            q: {
                m: {
                    "value": [w["pairs"][pair][q][m]["value"] for w in summary["widths"]],
                    "stderr": [w["pairs"][pair][q][m]["stderr"] for w in summary["widths"]],
                }
                for m in METRICS
            }
            for q in ("memorization", "test_accuracy")
        }
        for pair in PAIRS
    }
    return {
        "dataset": summary["dataset"]["name"],
        "settings": summary["settings"],
        "stderr": summary["stderr"],
        "widths": widths,
        "curves": curves,
    }


def draw(data: Data) -> Figure:
    fig, axes = new_figure(DOUBLE, 2.7, 1, len(METRICS))
    for ax, letter, (metric, (label, title)) in zip(axes[0], "abc", METRICS.items(), strict=True):
        for pair, (name, color, marker, ls) in PAIRS.items():
            c = data["curves"][pair]["memorization"][metric]
            errorbars(
                ax, data["widths"], c["value"], c["stderr"], name, color, marker=marker, ls=ls
            )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("hidden width (units)")
        ax.set_ylabel(label)
        panel_label(ax, letter, title)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2)
    return fig


def caption(data: Data) -> str:
    paired = data["curves"]["network~ntk_gd_paired"]["memorization"]
    r, se = np.array(paired["pearson"]["value"]), np.array(paired["pearson"]["stderr"])
    s = data["settings"]
    return (
        "Network memorization against kernel-predicted memorization on a seeded subset of "
        f"MNIST-1D ({s['n_train']} training, {s['n_test']} test examples; {s['replicas']} "
        f"replicas per model, the same masks for all; MLPs with {s['depth']} hidden layer(s), NTK "
        f"parameterization, full-batch gradient descent on MSE for {s['epochs']} steps) as "
        "the width grows: (a) Pearson and (b) Spearman correlation across training examples, "
        "(c) mean absolute difference; error bars: "
        f"{data['stderr']}. Network vs the NTK dynamics from the same initialization: Pearson "
        f"{r[0]:.2f} ± {se[0]:.2f} at width {data['widths'][0]}, {r[-1]:.2f} ± {se[-1]:.2f} at "
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
