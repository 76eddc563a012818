"""Figure 11: consistency (C-score, Jiang et al. 2021) against the subset ratio.

The C-score of an example is the accuracy on it of models trained on random subsets that
exclude it, as a function of the subset size. Typical examples are predicted from little
data; atypical ones only once much of the data is seen (or never). Examples are grouped by
their C-score at ratio 1/2 measured on half of that study's replicas; the curves use the
other half and the studies at the other ratios, so grouping and curves share no replicas.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from memjax.estimators import consistency
from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.style import SINGLE, errorbars, new_figure, panel_label

GROUPING_STUDY = "digits_clean"
RATIO_STUDIES = (
    "digits_ratio_10",
    "digits_ratio_25",
    GROUPING_STUDY,
    "digits_ratio_75",
    "digits_ratio_90",
)
GROUPS = {
    "atypical (lowest 10%)": (0.0, 0.1),
    "middle": (0.1, 0.5),
    "typical (top 50%)": (0.5, 1.0),
}
COLORS = {"atypical (lowest 10%)": "C3", "middle": "C1", "typical (top 50%)": "C0"}
TIE_SEED = 0


def _groups(score: np.ndarray) -> dict[str, np.ndarray]:
    """Quantile groups of the grouping C-score; ties broken at random (seeded)."""
    tiebreak = np.random.default_rng(TIE_SEED).random(len(score))
    rank = np.empty(len(score), int)
    rank[np.lexsort((tiebreak, score))] = np.arange(len(score))
    q = rank / len(score)
    return {name: (q >= lo) & (q < hi) for name, (lo, hi) in GROUPS.items()}


def compute(ctx: Context) -> Data:
    grouping = ctx.study(GROUPING_STUDY)
    half = grouping.store.replicas // 2
    if half % 2:
        raise ValueError(f"study {GROUPING_STUDY!r} needs a multiple of 4 replicas")
    first = np.arange(half)
    score = consistency(grouping.masks[first], grouping.outputs.train_correct[first]).value
    groups = _groups(score)
    ratios, curves = [], {g: {"mean": [], "stderr": []} for g in GROUPS}
    for name in RATIO_STUDIES:
        study = ctx.study(name)
        rows = np.arange(half, 2 * half) if name == GROUPING_STUDY else np.arange(len(study.masks))
        c = consistency(study.masks[rows], study.outputs.train_correct[rows]).value
        ratios.append(study.ref.config.ratio)
        for g, members in groups.items():
            v = c[members & np.isfinite(c)]
            curves[g]["mean"].append(float(v.mean()))
            curves[g]["stderr"].append(float(v.std(ddof=1) / np.sqrt(len(v))))
    order = np.argsort(ratios)
    return {
        "dataset": grouping.label,
        "ratios": np.array(ratios)[order],
        "studies": [RATIO_STUDIES[i] for i in order],
        "group_sizes": {g: int(m.sum()) for g, m in groups.items()},
        "curves": {
            g: {k: np.array(v)[order] for k, v in curve.items()} for g, curve in curves.items()
        },
    }


def draw(data: Data) -> Figure:
    fig, axes = new_figure(SINGLE, 2.5)
    ax = axes[0, 0]
    for g, c in data["curves"].items():
        label = f"{g}, n={data['group_sizes'][g]}"
        errorbars(ax, data["ratios"], c["mean"], c["stderr"], label, COLORS[g], marker="o")
    ax.set_xlabel("subset ratio (fraction of the training set)")
    ax.set_ylabel("C-score (held-out accuracy)")
    ax.set_ylim(0, 1.05)
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right", title="group by C-score at ratio 1/2", title_fontsize=6)
    panel_label(ax, "", f"{data['dataset']}: consistency vs subset size")
    return fig


def caption(data: Data) -> str:
    parts = [
        f"{g}: {c['mean'][0]:.2f} at ratio {data['ratios'][0]:g} → {c['mean'][-1]:.2f} at "
        f"{data['ratios'][-1]:g}"
        for g, c in data["curves"].items()
    ]
    return (
        f"C-score (accuracy of replicas trained without the example) of {data['dataset']} "
        "training examples against the fraction of the training set each replica sees, one "
        "study per ratio; mean ± s.e. over the examples of each group. Groups: quantiles of "
        "the C-score at ratio 1/2 from half of that study's replicas (the curve at 1/2 uses "
        "the other half). " + "; ".join(parts) + "."
    )


FIGURE = FigureSpec(
    number=11,
    name="consistency",
    title="Consistency against subset ratio",
    studies=RATIO_STUDIES,
    compute=compute,
    draw=draw,
    caption=caption,
)
