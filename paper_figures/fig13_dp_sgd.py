"""Figure 13: DP-SGD audited by its own replicas.

A family over noise multipliers (no DP first), every member on the same masks
(experiments/privacy_preservation, ``dp.yaml``). Against the accountant's epsilon (RDP, at
the members' delta): (a) mean memorization, (b) LiRA online's TPR at FPR 0.01, (c) the
attack's empirical epsilon lower bound (memjax.privacy (audit), 95% confidence) beside the
accountant's bound (the diagonal): a point above it would refute the accounting.
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

NO_DP = "no DP"


def compute(ctx: Context) -> Data:
    """The DP family's rows, trained (or resumed) in ``<out>/privacy_preservation/dp``."""
    result = ctx.experiment(
        "privacy_preservation", "its DP-SGD family over noise multipliers", ("dp",),
        progress=ctx.progress,
    )  # fmt: skip
    return {"rows": result["dp"]}


def _x(rows: list[dict]) -> tuple[np.ndarray, float]:
    """Each member's epsilon, no DP placed at twice the largest finite one."""
    eps = floats([r["epsilon"] if r["noise_multiplier"] is not None else None for r in rows])
    finite = eps[np.isfinite(eps)]
    spot = 2 * finite.max() if len(finite) else 1.0
    return np.where(np.isfinite(eps), eps, spot), spot


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(floats([r[key][part] for r in rows]) for part in ("value", "low", "high"))


def draw(data: Data) -> Figure:
    rows = data["rows"]
    fig, axes = new_figure(DOUBLE, 2.3, 1, 3)
    x, spot = _x(rows)
    panels = (
        ("mean_memorization", "mean memorization", "a", "memorization"),
        ("lira_tpr_at_fpr_0.01", "LiRA TPR at FPR 0.01", "b", "attack success"),
    )
    for ax, (key, ylabel, letter, title) in zip(axes[0][:2], panels, strict=True):
        interval_bars(ax, x, *_series(rows, key), label="", color="C3", marker="o", ms=3)
        ax.set_ylabel(ylabel)
        panel_label(ax, letter, title)
    audit = floats([r["audit"]["epsilon_lb"] for r in rows])
    ax = axes[0][2]
    ax.plot(x, audit, "o", color="C0", ms=3, label="audit lower bound")
    grid = np.logspace(np.log10(np.nanmin(x)) - 0.3, np.log10(spot), 50)
    ax.plot(grid, grid, ":", color="0.5", lw=0.8, label="accountant's ε")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylabel("empirical ε lower bound")
    ax.legend(loc="upper left")
    panel_label(ax, "c", "audit")
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.set_xlabel("ε (RDP accountant)")
        ax.axvline(spot, color="0.8", lw=0.6)
        ax.annotate(
            NO_DP, (spot, 0.02), xycoords=("data", "axes fraction"), fontsize=5, ha="center"
        )
    return fig


def _row_text(r: dict) -> str:
    name = NO_DP if r["noise_multiplier"] is None else f"σ = {r['noise_multiplier']:g}"
    eps = "∞" if r["epsilon"] is None else f"{r['epsilon']:.3g}"
    mem, tpr = r["mean_memorization"], r["lira_tpr_at_fpr_0.01"]
    return (
        f"{name} (ε = {eps}): memorization {interval_text(mem['value'], mem['low'], mem['high'])}"
        f", TPR {interval_text(tpr['value'], tpr['low'], tpr['high'])}, audit ε ≥ "
        f"{r['audit']['epsilon_lb']:.2f}"
    )


def caption(data: Data) -> str:
    rows = data["rows"]
    dp = [r for r in rows if r["noise_multiplier"] is not None]
    above = [r for r in dp if r["audit"]["epsilon_lb"] > r["epsilon"]]
    verdict = (
        "never exceeds the accountant's ε"
        if not above
        else f"exceeds the accountant's ε for {len(above)} member(s)"
    )
    return (
        "DP-SGD (clipped per-example gradients plus Gaussian noise, Poisson batches) over "
        "noise multipliers σ, every member on the same masks, against the RDP accountant's ε "
        f"at δ = {dp[0]['delta']:g} (no DP at the right). (a) Mean memorization, (b) LiRA "
        "online's TPR at FPR 0.01 (Clopper-Pearson 95% intervals), (c) the empirical ε lower "
        "bound of the attack (Clopper-Pearson, 95% confidence over all thresholds), which "
        f"{verdict} (dotted diagonal). " + "; ".join(_row_text(r) for r in rows) + "."
    )


FIGURE = FigureSpec(
    number=13,
    name="dp_sgd",
    title="DP-SGD: memorization and attack success versus ε",
    studies=(),
    compute=compute,
    draw=draw,
    caption=caption,
)
