"""Figure 2: the most and the least memorized training examples, as the data look.

Digits are drawn as 8x8 images, MNIST-1D examples as signals, each with its label and its
memorization estimate with its 95% interval (over the study's replica blocks; Newcombe's
interval, which stays open when every replica agrees): what a high score looks like (atypical or
ambiguous examples) next to what a low one looks like (prototypes).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.style import CLEAN, DOUBLE, FLIPPED, floats, interval_text, new_figure

STUDIES = ("digits_clean", "mnist1d_clean")
PER_ROW = 8


def _examples(ctx: Context, name: str) -> dict:
    study = ctx.study(name)
    ds = study.dataset
    mem = study.memorization
    finite = np.flatnonzero(np.isfinite(mem.value))
    value, width = mem.value[finite], (mem.ci_high - mem.ci_low)[finite]
    # most: highest score; least: lowest score; ties broken by the narrower interval
    most = finite[np.lexsort((width, -value))][:PER_ROW]
    least = finite[np.lexsort((width, value))][:PER_ROW]
    side = int(round(np.sqrt(ds.x_train.shape[1])))  # digits: 64 = 8x8; MNIST-1D: 40, a signal
    kind = "image" if ds.x_train.ndim == 2 and side * side == ds.x_train.shape[1] else "signal"

    def rows(indices: np.ndarray) -> list[dict]:
        return [
            {
                "index": int(i),
                "label": int(ds.y_train[i]),
                "memorization": float(mem.value[i]),
                "ci_low": float(mem.ci_low[i]),
                "ci_high": float(mem.ci_high[i]),
                "x": ds.x_train[i].reshape(side, side) if kind == "image" else ds.x_train[i],
            }
            for i in indices
        ]

    return {
        "study": name,
        "dataset": study.label,
        "replicas": study.store.replicas,
        "kind": kind,
        "most": rows(most),
        "least": rows(least),
    }


def compute(ctx: Context) -> Data:
    return {"panels": [_examples(ctx, name) for name in STUDIES]}


def draw(data: Data) -> Figure:
    rows = [(p, which) for p in data["panels"] for which in ("most", "least")]
    fig, axes = new_figure(DOUBLE, 1.05 * len(rows), len(rows), PER_ROW)
    for r, (panel, which) in enumerate(rows):
        for c, ex in enumerate(panel[which]):
            ax = axes[r, c]
            if panel["kind"] == "image":
                ax.imshow(np.array(ex["x"], float), cmap="gray_r", vmin=0, vmax=1)
            else:
                x = floats(ex["x"])
                ax.plot(x, np.arange(len(x)), color=FLIPPED if which == "most" else CLEAN)
                ax.invert_yaxis()
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            ax.set_title(
                f"y={ex['label']}  {ex['memorization']:.2f}\n"
                f"[{ex['ci_low']:.2f}, {ex['ci_high']:.2f}]",
                fontsize=6,
                pad=2,
            )
        axes[r, 0].set_ylabel(f"{panel['dataset']}\n{which} memorized", fontsize=6)
    return fig


def _interval(e: dict) -> str:
    return interval_text(e["memorization"], e["ci_low"], e["ci_high"])


def caption(data: Data) -> str:
    parts = []
    for p in data["panels"]:
        top = ", ".join(_interval(e) for e in p["most"][:3])
        low = ", ".join(_interval(e) for e in p["least"][:3])
        parts.append(f"{p['dataset']} ({p['replicas']} replicas): top scores {top}; lowest {low}")
    return (
        f"The {PER_ROW} most and {PER_ROW} least memorized training examples of digits (8x8 "
        "images) and MNIST-1D (signals, position down the vertical axis); above each: its "
        "label y and memorization estimate with its 95% interval over the study's replica "
        "blocks. " + "; ".join(parts) + "."
    )


FIGURE = FigureSpec(
    number=2,
    name="extremes",
    title="Most and least memorized examples",
    studies=STUDIES,
    compute=compute,
    draw=draw,
    caption=caption,
)
