"""Figure 14: model-level memorization, how replicas fit random labels (Zhang et al. 2017).

A family over the fraction of training labels redrawn at random and the network's width
(experiments/privacy_preservation, ``labels.yaml``): (a) train (in-subset) and test
accuracy, (b) epochs until a replica fits its subset, (c) mean memorization of the examples
whose label changed and of the others; every point with its 95% interval.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.style import (
    CLEAN,
    DOUBLE,
    FLIPPED,
    floats,
    interval_bars,
    interval_text,
    new_figure,
    panel_label,
)

CHANCE = 0.1  # digits: ten balanced classes


def compute(ctx: Context) -> Data:
    """The random-label family's rows, trained (or resumed) in
    ``<out>/privacy_preservation/labels``."""
    result = ctx.experiment(
        "privacy_preservation", "its family over random-label rates and widths", ("labels",),
        progress=ctx.progress,
    )  # fmt: skip
    return {"rows": result["labels"], "chance": CHANCE}


def _widths(rows: list[dict]) -> list[int]:
    return sorted({r["width"] for r in rows})


def _series(rows: list[dict], key: str) -> tuple[np.ndarray, ...]:
    return tuple(floats([r[key][part] for r in rows]) for part in ("value", "low", "high"))


def draw(data: Data) -> Figure:
    rows = data["rows"]
    fig, axes = new_figure(DOUBLE, 2.3, 1, 3)
    acc_ax, fit_ax, mem_ax = axes[0]
    widths = _widths(rows)
    styles = ["-", "--", "-.", ":"]
    for k, w in enumerate(widths):
        sub = [r for r in rows if r["width"] == w]
        rate = floats([r["random_labels"] for r in sub])
        ls = styles[k % len(styles)]
        for key, color, what in (
            ("train_accuracy", "C0", "train"),
            ("test_accuracy", "C1", "test"),
        ):
            interval_bars(
                acc_ax,
                rate,
                *_series(sub, key),
                f"{what}, width {w}",
                color,
                ls=ls,
                marker="o",
                ms=2,
            )
        interval_bars(
            fit_ax,
            rate,
            *_series(sub, "epochs_to_fit"),
            f"width {w}",
            "C2",
            ls=ls,
            marker="o",
            ms=2,
        )
        for key, color, what in (
            ("memorization_flipped", FLIPPED, "changed"),
            ("memorization_clean", CLEAN, "kept"),
        ):
            interval_bars(
                mem_ax,
                rate,
                *_series(sub, key),
                f"{what}, width {w}",
                color,
                ls=ls,
                marker="o",
                ms=2,
            )
    acc_ax.axhline(data["chance"], color="0.5", lw=0.6, ls=":")
    acc_ax.set_ylabel("accuracy")
    acc_ax.legend(loc="center left", fontsize=5)
    panel_label(acc_ax, "a", "fit and generalization")
    fit_ax.set_ylabel("epochs to fit the subset")
    fit_ax.legend(loc="upper left", fontsize=5)
    panel_label(fit_ax, "b", "time to fit")
    mem_ax.set_ylabel("mean memorization")
    mem_ax.legend(loc="upper left", fontsize=5)
    panel_label(mem_ax, "c", "memorization by label")
    for ax in axes[0]:
        ax.set_xlabel("fraction of random labels")
    return fig


def _text(d: dict, digits: int = 2) -> str:
    if d["value"] is None:
        return "undefined"
    return interval_text(d["value"], d["low"], d["high"], digits)


def caption(data: Data) -> str:
    rows = data["rows"]
    widest = max(_widths(rows))
    full = [r for r in rows if r["random_labels"] == max(x["random_labels"] for x in rows)]
    at_full = "; ".join(
        f"width {r['width']}: train {_text(r['train_accuracy'])}, test "
        f"{_text(r['test_accuracy'])}, fitted by epoch {_text(r['epochs_to_fit'], 0)} "
        f"({r['replicas_fitted']}/{r['replicas']} replicas), memorized "
        f"{_text(r['fraction_memorized'])} of the examples"
        for r in full
    )
    clean = [r for r in rows if r["random_labels"] == 0 and r["width"] == widest]
    start = (
        f" Without random labels the width-{widest} replicas reach test accuracy "
        f"{_text(clean[0]['test_accuracy'])}."
        if clean
        else ""
    )
    return (
        "Replicas trained on subsets of digits whose training labels are redrawn uniformly at "
        "random at the given rate (Zhang et al. 2017), per width. (a) Accuracy on their own "
        f"subsets and on the test set (dotted: chance, {data['chance']:g}); (b) first "
        "recorded epoch at which a replica's in-subset accuracy reaches 0.95 (mean over the "
        "replicas that reach it); (c) mean memorization of the examples whose label changed "
        "and of those that kept it; bars: 95% intervals. With every label random: "
        f"{at_full}.{start}"
    )


FIGURE = FigureSpec(
    number=14,
    name="random_labels",
    title="Model-level memorization: fitting random labels",
    studies=(),
    compute=compute,
    draw=draw,
    caption=caption,
)
