"""One look for every figure: sizes for a two-column paper, fonts, colours, shared helpers.

Widths follow a two-column layout: ``SINGLE`` (3.4 in, one column) and ``DOUBLE`` (7 in,
both columns). Drawing helpers take the JSON lists a figure stores (None for NaN).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = [
    "SINGLE",
    "DOUBLE",
    "CLEAN",
    "FLIPPED",
    "new_figure",
    "panel_label",
    "floats",
    "stairs",
    "errorbars",
    "interval_text",
    "interval_bars",
    "log_count_axis",
    "roc_line",
    "scatter",
    "legend",
]

SINGLE = 3.4
DOUBLE = 7.0
CLEAN = "#1f77b4"
FLIPPED = "#d62728"
RC = {
    "font.size": 7,
    "axes.titlesize": 7,
    "axes.labelsize": 7,
    "legend.fontsize": 6,
    "xtick.labelsize": 6,
    "ytick.labelsize": 6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.linewidth": 1.0,
    "lines.markersize": 3,
    "legend.frameon": False,
    "pdf.fonttype": 42,
    "figure.constrained_layout.use": True,
}


def new_figure(
    width: float, height: float, nrows: int = 1, ncols: int = 1, **kw
) -> tuple[Figure, np.ndarray]:
    """A figure of ``width`` x ``height`` inches with a 2-D array of axes."""
    plt.rcParams.update(RC)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, **kw)
    return fig, axes


def panel_label(ax: Axes, letter: str, title: str = "") -> None:
    """Bold panel letter, then the panel's title, left-aligned above the axes."""
    ax.set_title(rf"$\bf{{{letter}}}$  {title}" if letter else title, loc="left", pad=3)


def floats(values: Sequence | None) -> np.ndarray:
    """A list of numbers (None meaning NaN) as a float array."""
    if values is None:
        return np.zeros(0)
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def stairs(ax: Axes, edges: Sequence, counts: Sequence, label: str, color: str, **kw) -> None:
    """A histogram from stored bin edges and counts."""
    ax.stairs(floats(counts), floats(edges), label=label, color=color, **kw)


def log_count_axis(ax: Axes, counts: Iterable[Sequence]) -> None:
    """Log-scaled count axis with a decade of headroom above the data for the legend."""
    top = max((max(floats(c), default=1.0) for c in counts), default=1.0)
    ax.set_yscale("log")
    ax.set_ylim(0.7, 30 * max(top, 1.0))


def errorbars(
    ax: Axes, x: Sequence, y: Sequence, err: Sequence, label: str, color: str, **kw
) -> None:
    """Points joined by lines, with +-1 standard error bars."""
    ax.errorbar(floats(x), floats(y), yerr=floats(err), label=label, color=color, capsize=2, **kw)


def interval_bars(
    ax: Axes,
    x: Sequence,
    y: Sequence,
    low: Sequence,
    high: Sequence,
    label: str,
    color: str,
    **kw,
) -> None:
    """Points joined by lines, with bars from ``low`` to ``high`` (e.g. 95% intervals; none
    where a bound is NaN)."""
    y = floats(y)
    below, above = y - floats(low), floats(high) - y
    ax.errorbar(floats(x), y, yerr=[below, above], label=label, color=color, capsize=2, **kw)


def roc_line(ax: Axes, fpr: Sequence, tpr: Sequence, label: str, **kw) -> None:
    ax.plot(floats(fpr), floats(tpr), label=label, **kw)


def legend(ax: Axes, **kw) -> None:
    """A legend whose scatter-point handles are drawn large enough to see."""
    leg = ax.legend(**kw)
    for handle in leg.legend_handles:
        if isinstance(handle, PathCollection):
            handle.set_sizes([12])
            handle.set_alpha(1)


def scatter(ax: Axes, x: Sequence, y: Sequence, label: str, color: str, **kw) -> None:
    """Small translucent points (thousands of examples stay readable)."""
    kw = {"s": 2, "alpha": 0.35, "linewidths": 0, **kw}
    ax.scatter(floats(x), floats(y), label=label, color=color, rasterized=True, **kw)


def interval_text(value: float, low: float, high: float, digits: int = 2) -> str:
    """ "0.93 [0.90, 0.95]": a number with its 95% interval, as every caption shows them."""
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
