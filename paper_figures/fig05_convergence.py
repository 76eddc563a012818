"""Figure 5: how fast memorization estimates converge, for the three subset designs.

The same study (digits, random halves) under the balanced, fixed and bernoulli designs;
its replicas are split into disjoint groups of R. Per R: the error of the estimates (their
actual spread across disjoint groups, beside the standard error the estimator reports), the
Spearman correlation between the estimates of two disjoint groups (split-half reliability),
and the fraction of examples a group cannot estimate (never IN or never OUT).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from memjax.estimators import memorization
from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.stats import spearman
from paper_figures.style import DOUBLE, errorbars, new_figure, panel_label

DESIGNS = {"balanced": "digits_clean", "fixed": "digits_fixed", "bernoulli": "digits_bernoulli"}
COLORS = {"balanced": "C2", "fixed": "C1", "bernoulli": "C4"}
MIN_R = 4


def _mean_se(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")


def _sweep(masks: np.ndarray, correct: np.ndarray) -> dict[str, list]:
    """Per group size R: stderr, split-half Spearman and missing fraction, mean ± s.e. over
    the disjoint groups (pairs of groups for the correlation) of consecutive replicas."""
    total = len(masks)
    sizes = [r for r in 2 ** np.arange(1, 20) if MIN_R <= r <= total // 2]
    out: dict[str, list] = {
        k: [] for k in ("R", "spread", "reported_stderr", "split_half", "missing")
    }
    for r in sizes:
        groups = [np.arange(g * r, (g + 1) * r) for g in range(total // r)]
        est = [memorization(masks[g], correct[g]) for g in groups]
        values = np.stack([e.value for e in est])
        halves = [spearman(est[2 * p].value, est[2 * p + 1].value) for p in range(len(est) // 2)]
        out["R"].append(int(r))
        # root mean square over examples: of the s.d. across groups, and of the reported s.e.
        out["spread"].append(float(np.sqrt(np.nanmean(np.nanvar(values, axis=0, ddof=1)))))
        out["reported_stderr"].append(
            float(np.sqrt(np.nanmean(np.stack([e.stderr for e in est]) ** 2)))
        )
        out["split_half"].append(_mean_se(halves))
        out["missing"].append(_mean_se([np.mean(np.isnan(e.value)) for e in est]))
    return out


def compute(ctx: Context) -> Data:
    designs = {}
    for design, name in DESIGNS.items():
        study = ctx.study(name)
        if study.ref.config.design != design:
            raise ValueError(f"study {name!r} must use the {design} design")
        designs[design] = {"study": name, **_sweep(study.masks, study.outputs.train_correct)}
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
            mean = [m for m, _ in d[key]]
            err = [e for _, e in d[key]]
            errorbars(ax, d["R"], mean, err, design, COLORS[design], marker="o")
        ax.set_ylabel(label)
        panel_label(ax, letter, label.split(" (")[0])
    for ax in axes[0]:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("replicas R in the estimate")
    axes[0, 1].legend(title="subset design", title_fontsize=6, loc="lower right")
    return fig


def caption(data: Data) -> str:
    parts = []
    for design, d in data["designs"].items():
        sd = d["spread"]
        parts.append(
            f"{design}: error {sd[0]:.3f} at R={d['R'][0]} → {sd[-1]:.3f} at R={d['R'][-1]}, "
            f"split-half ρ {d['split_half'][-1][0]:.2f}"
        )
    return (
        f"Convergence of memorization estimates on {data['dataset']} with the replicas of one "
        "study per subset design (ratio 1/2) split into disjoint groups of R consecutive "
        "replicas: (a) root mean square over examples of the estimate's standard deviation "
        "across the groups (solid) and of the standard error the estimator reports (dashed), "
        "(b) Spearman correlation between "
        "two disjoint groups' estimates, (c) fraction of examples a group cannot estimate "
        "(never IN or never OUT; the balanced design never has any). Points: mean ± s.e. over "
        "groups (b: pairs of groups). " + "; ".join(parts) + "."
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
