"""Figure 11: held-out accuracy against the subset ratio, and the C-score (Jiang et al. 2021).

The held-out accuracy of an example at a ratio is the accuracy on it of models trained on
random subsets of that size that exclude it; the C-score averages it over a family of
ratios (``memjax.estimators.c_score``). Typical examples are predicted from little data;
atypical ones only once much of the data is seen (or never). Examples are grouped by their
held-out accuracy at ratio 1/2 measured on half of that study's replicas (whole blocks);
the curves use the other half and the studies at the other ratios, so grouping and curves
share no replicas. Group means carry 95% intervals over the studies' replica blocks, the
examples held fixed (``stats.example_average``); the C-score's group mean averages the
per-ratio group means, and its interval the per-ratio bounds (the studies are independent;
the same convention as ``c_score``).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from memjax.estimators import c_score, held_out_accuracy
from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.stats import example_average
from paper_figures.style import SINGLE, interval_bars, interval_text, new_figure, panel_label

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
C_SCORE_X = 1.12  # where the C-score is drawn, right of the ratio axis


def _groups(score: np.ndarray) -> dict[str, np.ndarray]:
    """Quantile groups of the grouping held-out accuracy; ties broken at random (seeded)."""
    tiebreak = np.random.default_rng(TIE_SEED).random(len(score))
    rank = np.empty(len(score), int)
    rank[np.lexsort((tiebreak, score))] = np.arange(len(score))
    q = rank / len(score)
    return {name: (q >= lo) & (q < hi) for name, (lo, hi) in GROUPS.items()}


def compute(ctx: Context) -> Data:
    grouping = ctx.study(GROUPING_STUDY)
    half = grouping.store.replicas // 2
    first, second = np.arange(half), np.arange(half, 2 * half)
    blocks = grouping.blocks
    if blocks is not None and np.intersect1d(blocks[first], blocks[second]).size:
        raise ValueError(f"study {GROUPING_STUDY!r}: its halves must not split a block")
    correct = grouping.outputs.train_correct
    score = held_out_accuracy(grouping.masks[first], correct[first], grouping.blocks_of(first))
    groups = _groups(score.value)
    ratios, per_ratio = [], []
    curves = {g: {"mean": [], "ci_low": [], "ci_high": []} for g in GROUPS}
    for name in RATIO_STUDIES:
        study = ctx.study(name)
        rows = second if name == GROUPING_STUDY else np.arange(study.store.replicas)
        masks, correct = study.masks[rows], study.outputs.train_correct[rows]
        held_out = held_out_accuracy(masks, correct, study.blocks_of(rows))
        ratios.append(study.ref.config.ratio)
        per_ratio.append(held_out)
        for g, members in groups.items():
            m = members & np.isfinite(held_out.value)
            e = example_average(masks, correct, study.blocks_of(rows), m / m.sum(), True)
            curves[g]["mean"].append(e["value"])
            curves[g]["ci_low"].append(e["ci_low"])
            curves[g]["ci_high"].append(e["ci_high"])
    order = np.argsort(ratios)
    c = c_score(per_ratio)
    return {
        "dataset": grouping.label,
        "ratios": np.array(ratios)[order],
        "studies": [RATIO_STUDIES[i] for i in order],
        "group_sizes": {g: int(m.sum()) for g, m in groups.items()},
        "curves": {
            g: {k: np.array(v)[order] for k, v in curve.items()} for g, curve in curves.items()
        },
        "c_score_groups": {
            g: {k: float(np.mean(curve[k])) for k in ("mean", "ci_low", "ci_high")}
            for g, curve in curves.items()
        },
        "c_score": {"value": c.value, "ci_low": c.ci_low, "ci_high": c.ci_high},
    }


def draw(data: Data) -> Figure:
    fig, axes = new_figure(SINGLE, 2.5)
    ax = axes[0, 0]
    for k, (g, c) in enumerate(data["curves"].items()):
        label = f"{g}, n={data['group_sizes'][g]}"
        interval_bars(
            ax, data["ratios"], c["mean"], c["ci_low"], c["ci_high"], label, COLORS[g], marker="o"
        )
        s = data["c_score_groups"][g]
        x = C_SCORE_X + 0.02 * (k - 1)
        interval_bars(
            ax, [x], [s["mean"]], [s["ci_low"]], [s["ci_high"]], "", COLORS[g], marker="D"
        )
    ax.axvline(1.0, color="0.8", lw=0.6)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0, C_SCORE_X], ["0", "0.25", "0.5", "0.75", "1", "C"])
    ax.set_xlabel("subset ratio (fraction of the training set); C: C-score")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1.05)
    ax.set_xlim(0, C_SCORE_X + 0.08)
    ax.legend(loc="lower right", title="group by held-out acc. at ratio 1/2", title_fontsize=6)
    panel_label(ax, "", f"{data['dataset']}: held-out accuracy vs subset size")
    return fig


def caption(data: Data) -> str:
    r = data["ratios"]
    parts = []
    for g, c in data["curves"].items():
        s = data["c_score_groups"][g]
        parts.append(
            f"{g}: {interval_text(c['mean'][0], c['ci_low'][0], c['ci_high'][0])} "
            f"at ratio {r[0]:g} "
            f"→ {interval_text(c['mean'][-1], c['ci_low'][-1], c['ci_high'][-1])} at {r[-1]:g}, "
            f"C-score {interval_text(s['mean'], s['ci_low'], s['ci_high'])}"
        )
    ratios = ", ".join(f"{x:g}" for x in r)
    return (
        f"Held-out accuracy (accuracy of replicas trained without the example) of "
        f"{data['dataset']} training examples against the fraction of the training set each "
        "replica sees, one study per ratio, and at C the C-score: the held-out accuracy "
        f"averaged over the ratios {ratios}. Group means with 95% intervals over the studies' "
        "replica blocks (examples held fixed; the C-score's interval averages the per-ratio "
        "bounds). Groups: quantiles of the held-out accuracy at ratio 1/2 from half of that "
        "study's replicas (the curve at 1/2 uses the other half). " + "; ".join(parts) + "."
    )


FIGURE = FigureSpec(
    number=11,
    name="consistency",
    title="Held-out accuracy against subset ratio, and the C-score",
    studies=RATIO_STUDIES,
    compute=compute,
    draw=draw,
    caption=caption,
)
