"""Figure 5: how fast memorization estimates converge, for the three subset designs.

The same study (digits, random halves) under the balanced, fixed and bernoulli designs;
its replicas are split into disjoint groups of R, each made of whole blocks (under the
balanced design the replicas of a block are dependent, so a group that split a block would
not be a study of its own). Per R: the error of the estimates (their actual spread across
disjoint groups, beside the design-aware standard error the estimator reports), the
Spearman correlation between the estimates of two disjoint groups (split-half reliability),
and the fraction of examples a group cannot estimate (never IN or never OUT), each as a
mean over groups with its 95% t interval.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from memjax import intervals
from memjax.estimators import memorization
from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.stats import spearman
from paper_figures.style import DOUBLE, interval_bars, interval_text, new_figure, panel_label

DESIGNS = {"balanced": "digits_clean", "fixed": "digits_fixed", "bernoulli": "digits_bernoulli"}
COLORS = {"balanced": "C2", "fixed": "C1", "bernoulli": "C4"}
MIN_R = 4


def _mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean of the finite values and its 95% t interval (NaN bounds below 2 values)."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return float("nan"), float("nan"), float("nan")
    if len(v) < 2:
        return float(v.mean()), float("nan"), float("nan")
    half = float(intervals.quantile(len(v) - 1.0)) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def block_groups(blocks: np.ndarray | None, replicas: int, blocks_per_group: int) -> list:
    """Disjoint groups (replica indices) of ``blocks_per_group`` consecutive whole blocks
    (None: one block per replica); blocks left over are not used."""
    ids = np.arange(replicas) if blocks is None else np.asarray(blocks)
    labels = np.unique(ids)
    return [
        np.flatnonzero(np.isin(ids, labels[g * blocks_per_group : (g + 1) * blocks_per_group]))
        for g in range(len(labels) // blocks_per_group)
    ]


def _rows(blocks: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if blocks is None else blocks[rows]


def _sweep(masks: np.ndarray, correct: np.ndarray, blocks: np.ndarray | None) -> dict[str, list]:
    """Per group size R: spread, reported stderr, split-half Spearman and missing fraction
    (the last two as mean and 95% interval over the disjoint groups, pairs of groups for the
    correlation) of groups of consecutive whole blocks."""
    total = len(masks)
    block = 1 if blocks is None else int(np.unique(blocks, return_counts=True)[1].max())
    sizes = [r for r in block * 2 ** np.arange(0, 20) if MIN_R <= r <= total // 2]
    out: dict[str, list] = {
        k: [] for k in ("R", "spread", "reported_stderr", "split_half", "missing")
    }
    for r in sizes:
        groups = block_groups(blocks, total, r // block)
        est = [memorization(masks[g], correct[g], _rows(blocks, g)) for g in groups]
        values = np.stack([e.value for e in est])
        halves = [spearman(est[2 * p].value, est[2 * p + 1].value) for p in range(len(est) // 2)]
        out["R"].append(int(r))
        # root mean square over examples: of the s.d. across groups, and of the reported s.e.
        out["spread"].append(float(np.sqrt(np.nanmean(np.nanvar(values, axis=0, ddof=1)))))
        out["reported_stderr"].append(
            float(np.sqrt(np.nanmean(np.stack([e.stderr for e in est]) ** 2)))
        )
        out["split_half"].append(_mean_interval(halves))
        out["missing"].append(_mean_interval([np.mean(np.isnan(e.value)) for e in est]))
    return out


def compute(ctx: Context) -> Data:
    designs = {}
    for design, name in DESIGNS.items():
        study = ctx.study(name)
        if study.ref.config.design != design:
            raise ValueError(f"study {name!r} must use the {design} design")
        sweep = _sweep(study.masks, study.outputs.train_correct, study.blocks)
        designs[design] = {"study": name, **sweep}
    label = ctx.study(DESIGNS["balanced"]).label
    return {"dataset": label, "designs": designs}


PANELS = {
    "split_half": "split-half Spearman correlation",
    "missing": "examples without estimate (fraction)",
}


def draw(data: Data) -> Figure:
    fig, axes = new_figure(DOUBLE, 2.4, 1, 1 + len(PANELS))
    ax = axes[0, 0]
    for design, d in data["designs"].items():
        ax.plot(d["R"], d["spread"], "o-", color=COLORS[design])
        ax.plot(d["R"], d["reported_stderr"], "x--", color=COLORS[design])
    ax.plot([], [], "ko-", label="s.d. across disjoint groups")
    ax.plot([], [], "kx--", label="reported standard error")
    ax.set_yscale("log")
    ax.set_ylabel("memorization error (RMS over examples)")
    ax.legend(loc="upper right")
    panel_label(ax, "a", "estimation error")
    for ax, letter, (key, label) in zip(axes[0, 1:], "bc", PANELS.items(), strict=True):
        for design, d in data["designs"].items():
            mean, low, high = ([point[k] for point in d[key]] for k in range(3))
            interval_bars(ax, d["R"], mean, low, high, design, COLORS[design], marker="o")
        ax.set_ylabel(label)
        panel_label(ax, letter, label.split(" (")[0])
    for ax in axes[0]:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("replicas R in the estimate")
    axes[0, 1].legend(title="subset design", title_fontsize=6, loc="lower right")
    return fig


def _interval(mean: float, low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{mean:.2f} (one pair of groups: no interval)"
    return interval_text(mean, low, high)


def caption(data: Data) -> str:
    parts = []
    for design, d in data["designs"].items():
        sd = d["spread"]
        parts.append(
            f"{design}: error {sd[0]:.3f} at R={d['R'][0]} → {sd[-1]:.3f} at R={d['R'][-1]}, "
            f"split-half ρ {_interval(*d['split_half'][-1])}"
        )
    return (
        f"Convergence of memorization estimates on {data['dataset']} with the replicas of one "
        "study per subset design (ratio 1/2) split into disjoint groups of R replicas made of "
        "whole blocks: (a) root mean square over examples of the estimate's standard deviation "
        "across the groups (solid) and of the design-aware standard error the estimator "
        "reports (dashed), "
        "(b) Spearman correlation between "
        "two disjoint groups' estimates, (c) fraction of examples a group cannot estimate "
        "(never IN or never OUT; the balanced design never has any). Points: mean over groups "
        "(b: pairs of groups) with its 95% t interval (none with a single group or pair). "
        + "; ".join(parts)
        + "."
    )


FIGURE = FigureSpec(
    number=5,
    name="convergence",
    title="Convergence of the estimates with the number of replicas",
    studies=tuple(DESIGNS.values()),
    compute=compute,
    draw=draw,
    caption=caption,
)
