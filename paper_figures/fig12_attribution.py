"""Figure 12: attribution scored by retraining, exact leave-one-out, and theory as a control.

From experiments/attribution (its studies under ``<out>/attribution``): (a) the linear
datamodeling score of each estimator versus the training replicas it used, on MNIST-1D
(solid) and digits (dashed), replica-free estimators as horizontal lines; (b) the Pearson
correlation over examples between subset memorization at several ratios and exact
leave-one-out memorization of a tiny training set; (c) the fraction of replicas the paired
NTK control variate saves at equal standard error, versus width. Every number with its 95%
interval.
"""

from __future__ import annotations

import math

from matplotlib.figure import Figure

from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.style import (
    DOUBLE,
    interval_bars,
    interval_text,
    new_figure,
    panel_label,
)

CURVES = ("influence", "datamodels-ridge", "datamodels-lasso", "tracin")
LINES = ("kernel-ntk", "random")
COLORS = {
    "influence": "C0",
    "datamodels-ridge": "C1",
    "datamodels-lasso": "C2",
    "tracin": "C5",
    "kernel-ntk": "C4",
    "random": "0.5",
}
STYLES = ("-", "--", ":")
OUTPUT_COLORS = {"correctness": "C3", "margin": "C0"}


def compute(ctx: Context) -> Data:
    """The experiment's summary, trained (or resumed) in ``<out>/attribution``."""
    return ctx.experiment("attribution", "LDS, exact LOO and kernel control-variate studies")


def _has_score(r: dict) -> bool:
    return r["value"] is not None and math.isfinite(r["value"])


def _scored(rows: list[dict], name: str) -> list[dict]:
    return [r for r in rows if r["estimator"] == name and _has_score(r)]


def _lds_panel(ax, lds: dict) -> None:
    for style, (dataset, part) in zip(STYLES, lds.items(), strict=False):
        rows = part["rows"]
        for name in CURVES:
            got = _scored(rows, name)
            if got:
                interval_bars(
                    ax,
                    [r["replicas"] for r in got],
                    [r["value"] for r in got],
                    [r["ci_low"] for r in got],
                    [r["ci_high"] for r in got],
                    label=f"{name} ({dataset})",
                    color=COLORS[name],
                    ls=style,
                    marker="o",
                    ms=2,
                )
        for name in LINES:
            for r in _scored(rows, name):
                label = f"{name} ({dataset})"
                ax.axhline(r["value"], color=COLORS[name], ls=style, lw=0.8, label=label)
                ax.axhspan(r["ci_low"], r["ci_high"], color=COLORS[name], alpha=0.12, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training replicas")
    ax.set_ylabel("LDS (test margin)")
    highs = [r["ci_high"] for p in lds.values() for r in p["rows"] if _has_score(r)]
    ax.set_ylim(top=max(highs) + 0.6 * (max(highs) - ax.get_ylim()[0]))
    ax.legend(loc="upper left", fontsize=4, ncol=2)
    panel_label(ax, "a", "LDS versus replicas")


def _by(rows: list[dict], key: str, value: str) -> list[dict]:
    return [r for r in rows if r[key] == value]


def _series(rows: list[dict], x: str, y: str):
    return (
        [r[x] for r in rows],
        [r[y]["value"] for r in rows],
        [r[y]["low"] for r in rows],
        [r[y]["high"] for r in rows],
    )


def _loo_panel(ax, loo: dict) -> None:
    for output, color in OUTPUT_COLORS.items():
        rows = _by(loo["rows"], "output", output)
        interval_bars(ax, *_series(rows, "ratio", "pearson"), label=output, color=color, marker="o")
    ax.set_xlabel("subset ratio")
    ax.set_ylabel("Pearson r with exact LOO")
    ax.set_ylim(top=1.0)
    ax.legend(loc="lower right")
    panel_label(ax, "b", f"subset vs exact LOO (n = {loo['n_train']})")


def _control_panel(ax, control: dict) -> None:
    for output, color in OUTPUT_COLORS.items():
        rows = _by(control["rows"], "output", output)
        interval_bars(
            ax, *_series(rows, "width", "replicas_saved"), label=output, color=color, marker="o"
        )
    ax.axhline(0.5, color="0.6", ls=":", lw=0.8)
    ax.axhline(0.0, color="0.8", lw=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("width")
    ax.set_ylabel("replicas saved at equal SE")
    ax.legend(loc="upper left")
    panel_label(ax, "c", "kernel control variate")


def draw(data: Data) -> Figure:
    fig, axes = new_figure(DOUBLE, 2.4, 1, 3)
    _lds_panel(axes[0][0], data["lds"])
    _loo_panel(axes[0][1], data["loo"])
    _control_panel(axes[0][2], data["control"])
    return fig


def _lds_text(dataset: str, part: dict) -> str:
    rows = [r for r in part["rows"] if _has_score(r)]
    most = {r["estimator"]: max(q["replicas"] for q in _scored(rows, r["estimator"])) for r in rows}
    items = []
    for r in rows:
        if r["estimator"] in CURVES and r["replicas"] != most[r["estimator"]]:
            continue
        used = f" ({r['replicas']} replicas)" if r["estimator"] in CURVES else ""
        items.append(
            f"{r['estimator']}{used} {interval_text(r['value'], r['ci_low'], r['ci_high'])}"
        )
    return f"{dataset}: " + ", ".join(items)


def _pair(x: dict) -> str:
    return interval_text(x["value"], x["low"], x["high"])


def caption(data: Data) -> str:
    lds, loo, control = data["lds"], data["loo"], data["control"]
    part = next(iter(lds.values()))
    loo_text = "; ".join(
        f"ratio {r['ratio']:g} {r['output']} r = {_pair(r['pearson'])}" for r in loo["rows"]
    )
    saved = "; ".join(
        f"width {r['width']} {r['output']} {_pair(r['replicas_saved'])}"
        f" (variance ratio {_pair(r['variance_ratio'])})"
        for r in control["rows"]
    )
    halves = [r for r in control["rows"] if r["replicas_saved"]["low"] > 0.5]
    verdict = (
        "saves more than half the replicas (interval above 0.5) for "
        + ", ".join(f"{r['output']} at width {r['width']}" for r in halves)
        if halves
        else "saves half the replicas nowhere (no interval above 0.5)"
    )
    return (
        "(a) Linear datamodeling score (mean over test examples of the Spearman correlation "
        "between predicted and retrained test margins; two-way bootstrap 95% intervals over "
        f"test examples and {part['eval_subsets']} evaluation subsets of {part['eval_seeds']} "
        "seeds) versus the training replicas used; kernel-ntk (representer weights of the "
        "architecture's NTK, no replicas) and random attributions as lines. At the most "
        "replicas: "
        + "; ".join(_lds_text(d, p) for d, p in lds.items())
        + f". (b) Pearson correlation over the {loo['n_train']} examples of a tiny "
        f"{loo['dataset']} set between subset memorization and exact leave-one-out "
        f"memorization ({loo['seeds']} seeds of each of the {loo['n_train'] + 1} subsets; "
        f"percentile bootstrap over examples): {loo_text}. (c) Fraction of replicas the "
        "paired NTK control variate saves at equal standard error (1 - mean controlled "
        "variance / mean plain variance, bootstrap over examples), MLPs in NTK "
        f"parameterization trained by full-batch GD on MSE; it {verdict}: {saved}."
    )


FIGURE = FigureSpec(
    number=12,
    name="attribution",
    title="Attribution by retraining, exact leave-one-out, and the kernel as a control variate",
    studies=(),
    compute=compute,
    draw=draw,
    caption=caption,
)
