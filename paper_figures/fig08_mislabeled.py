"""Figure 8: finding mislabeled examples with memorization and with its cheap proxies.

ROC curves for recovering the injected label flips of MNIST-1D from each per-example score
(oriented so that "suspicious" is high), and the AUCs side by side: memorization, which
needs many replicas, against proxies computed from single training runs.

Intervals (95%) treat the examples as the units (labels are flipped at random) and hold the
per-example scores fixed: AUCs have DeLong intervals on the logit scale
(``memjax.estimators.auc.auc_interval``), memorization minus the highest-AUC proxy a paired DeLong
interval (``memjax.estimators.auc.auc_difference``), with the caption's wording chosen from it,
and each ROC point a Clopper-Pearson interval of its TPR (the threshold held fixed).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from memjax.analysis.proxies import FINAL_PROXIES, PRESENTATION_PROXIES, TRAJECTORY_PROXIES
from memjax.analysis.relations import SUSPICIOUS_WHEN_HIGH
from memjax.estimators.auc import auc_difference
from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.stats import difference_statement, roc_points
from paper_figures.style import DOUBLE, floats, interval_text, new_figure, panel_label, roc_line

STUDY = "mnist1d_noise"
PROXIES = (*FINAL_PROXIES, *PRESENTATION_PROXIES, *TRAJECTORY_PROXIES)  # single-run scores
SCORES = ("memorization", "held_out_accuracy", *PROXIES)
FPR_GRID = np.unique(np.r_[np.linspace(0, 1, 201), np.logspace(-3, 0, 31)])
LABELS = {
    "memorization": "memorization",
    "held_out_accuracy": "held-out accuracy (low)",
    "loss": "final loss",
    "confidence": "confidence (low)",
    "margin": "margin (low)",
    "learning_time": "learning time",
    "forgetting_events": "forgetting events",
    "learning_time_recorded": "learning time (recorded epochs)",
    "forgetting_events_recorded": "forgetting events (recorded epochs)",
    "el2n": "EL2N",
    "grand": "GraNd",
    "self_influence": "self-influence",
}


def compute(ctx: Context) -> Data:
    study = ctx.study(STUDY)
    if study.flipped is None:
        raise ValueError(f"figure 8 needs label noise in study {STUDY!r}")
    rel = study.relations
    columns = rel.columns
    curves, oriented = {}, {}
    for name in SCORES:
        if name not in columns:
            continue  # trajectory proxies exist only if the study recorded them
        value = columns[name].value
        oriented[name] = value if SUSPICIOUS_WHEN_HIGH[name] else -value
        curves[name] = {
            "label": LABELS[name],
            **roc_points(study.flipped, oriented[name], FPR_GRID),
            "auc_ci": rel.flipped_auc_ci[name],
        }
    best = max((k for k in curves if k in PROXIES), key=lambda k: curves[k]["auc"])
    return {
        "study": STUDY,
        "dataset": study.label,
        "replicas": study.store.replicas,
        "n_flipped": int(study.flipped.sum()),
        "n_examples": len(study.flipped),
        "curves": curves,
        "best_proxy": best,
        "memorization_minus_best_proxy": auc_difference(
            study.flipped, oriented["memorization"], oriented[best]
        ),
    }


def draw(data: Data) -> Figure:
    fig, axes = new_figure(DOUBLE, 2.4, 1, 2, width_ratios=[1.2, 1])
    roc_ax, bar_ax = axes[0]
    order = sorted(data["curves"], key=lambda k: -data["curves"][k]["auc"])
    colors = {name: f"C{i % 10}" for i, name in enumerate(order)}
    for name in order:
        c = data["curves"][name]
        style = {"color": "k", "lw": 1.6, "zorder": 3} if name == "memorization" else {}
        roc_line(roc_ax, c["fpr"], c["tpr"], c["label"], **{"color": colors[name], **style})
        if name == "memorization":
            roc_ax.fill_between(
                floats(c["fpr"]),
                floats(c["tpr_low"]),
                floats(c["tpr_high"]),
                color="k",
                alpha=0.12,
                lw=0,
            )
    roc_ax.plot([0, 1], [0, 1], ":", color="0.6", lw=0.8)
    roc_ax.set_xlabel("false-positive rate (clean labels flagged)")
    roc_ax.set_ylabel("true-positive rate (flipped labels found)")
    roc_ax.legend(loc="lower right", ncol=2, fontsize=5.5)
    panel_label(roc_ax, "a", f"{data['dataset']}: ROC")
    aucs = floats([data["curves"][k]["auc"] for k in order])
    low, high = (
        floats([data["curves"][k]["auc_ci"][0] for k in order]),
        floats([data["curves"][k]["auc_ci"][1] for k in order]),
    )
    y = np.arange(len(order))[::-1]
    point_colors = ["k" if k == "memorization" else colors[k] for k in order]
    bar_ax.hlines(y, low, high, color=point_colors, lw=1.2)
    bar_ax.scatter(aucs, y, color=point_colors, s=12, zorder=3)
    for yi, a, h in zip(y, aucs, high, strict=True):
        bar_ax.text(max(a, h) + 0.012, yi, f"{a:.3f}", va="center", fontsize=6)
    bar_ax.axvline(0.5, color="0.6", lw=0.6, ls=":")
    bar_ax.set_yticks(y, [data["curves"][k]["label"] for k in order])
    bar_ax.set_xlim(min(0.5, np.nanmin(low) - 0.02), 1.08)
    bar_ax.set_xlabel("ROC AUC, flipped labels (bars: 95% DeLong int.)")
    panel_label(bar_ax, "b", "AUC by score")
    return fig


def _interval(value: float, ci: list[float]) -> str:
    if not np.isfinite(ci).all():
        return f"{value:.3f} (no interval)"
    return interval_text(value, ci[0], ci[1], 3)


def caption(data: Data) -> str:
    curves, best = data["curves"], data["best_proxy"]
    mem = curves["memorization"]
    d = data["memorization_minus_best_proxy"]
    return (
        f"Recovering the {data['n_flipped']} flipped labels among {data['n_examples']} "
        f"{data['dataset']} training examples ({data['replicas']} replicas) from each "
        "per-example score, oriented so that high is suspicious (held-out accuracy, confidence and "
        "margin reversed); proxies are averaged over the replicas that trained on the "
        "example. (a) ROC curves (shaded: Clopper-Pearson 95% intervals of memorization's TPR, "
        "the threshold held fixed), (b) AUCs with 95% DeLong intervals (logit scale), the "
        "examples as units and the scores held fixed. Memorization AUC "
        f"{_interval(mem['auc'], mem['auc_ci'])}; highest-AUC proxy {LABELS[best]} "
        f"{_interval(curves[best]['auc'], curves[best]['auc_ci'])}; "
        + difference_statement(
            "memorization scores",
            f"{LABELS[best]} scores",
            "AUC",
            d["value"],
            d["ci_low"],
            d["ci_high"],
        )
        + " (paired DeLong interval, not adjusted for picking the highest proxy)."
    )


FIGURE = FigureSpec(
    number=8,
    name="mislabeled",
    title="Finding mislabeled examples",
    studies=(STUDY,),
    compute=compute,
    draw=draw,
    caption=caption,
)
