"""Figure 9: membership inference from the replicas (Carlini et al. 2022 style).

Each of the first targets is the victim in turn, the other replicas its shadow models.
ROC curves on log-log axes, where the attacks differ (low FPR), and each example's
vulnerability against its memorization: memorized examples are the ones an attacker finds.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from memjax.privacy import FPRS
from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.stats import spearman
from paper_figures.style import (
    CLEAN,
    DOUBLE,
    FLIPPED,
    floats,
    legend,
    new_figure,
    panel_label,
    scatter,
)

STUDY = "mnist1d_noise"
ATTACKS = {
    "lira_online": ("LiRA online", "C3", "-"),
    "lira_offline": ("LiRA offline", "C0", "-"),
    "lira_online_fixed_variance": ("LiRA online, global var.", "C3", "--"),
    "lira_offline_fixed_variance": ("LiRA offline, global var.", "C0", "--"),
    "loss_attack": ("loss attack", "0.3", "-"),
}
VULNERABILITY = "lira_online"


def compute(ctx: Context) -> Data:
    study = ctx.study(STUDY)
    rel = study.relations
    attacks = {
        name: {
            "fpr": a.fpr_grid,
            "tpr": a.tpr_grid,
            "auc": a.auc,
            "tpr_at_fpr": {f"{f:g}": a.tpr_at_fpr[f] for f in FPRS},
            "n_pairs": a.n_pairs,
        }
        for name, a in rel.attacks.items()
        if name in ATTACKS
    }
    mem = rel.columns["memorization"].value
    vul = rel.columns[VULNERABILITY].value
    flipped = study.flipped if study.flipped is not None else np.zeros(len(mem), bool)
    return {
        "study": STUDY,
        "dataset": study.label,
        "replicas": study.store.replicas,
        "n_targets": study.n_targets,
        "attacks": attacks,
        "vulnerability": {
            "attack": VULNERABILITY,
            "memorization": mem,
            "vulnerability": vul,
            "flipped": flipped,
            "spearman": spearman(mem, vul),
        },
    }


def draw(data: Data) -> Figure:
    fig, axes = new_figure(DOUBLE, 2.5, 1, 2, width_ratios=[1, 1])
    roc_ax, vul_ax = axes[0]
    for name, a in data["attacks"].items():
        label, color, ls = ATTACKS[name]
        roc_ax.plot(
            floats(a["fpr"]), floats(a["tpr"]), ls, color=color, label=f"{label} ({a['auc']:.3f})"
        )
    roc_ax.plot([1e-5, 1], [1e-5, 1], ":", color="0.6", lw=0.8, label="chance")
    roc_ax.set_xscale("log")
    roc_ax.set_yscale("log")
    roc_ax.set_xlim(1e-5, 1)
    roc_ax.set_ylim(1e-5, 1)
    roc_ax.set_xlabel("false-positive rate\n(non-members flagged)")
    roc_ax.set_ylabel("true-positive rate (members found)")
    roc_ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        title="attack (AUC)",
        title_fontsize=6,
        alignment="left",
    )
    panel_label(roc_ax, "a", "membership inference ROC")
    v = data["vulnerability"]
    flipped = np.array(v["flipped"], bool)
    mem, vul = floats(v["memorization"]), floats(v["vulnerability"])
    scatter(vul_ax, mem[~flipped], vul[~flipped], "clean label", CLEAN)
    scatter(vul_ax, mem[flipped], vul[flipped], "flipped label", FLIPPED)
    vul_ax.set_yscale("symlog", linthresh=1)
    vul_ax.set_xlabel("memorization (Δ accuracy)")
    vul_ax.set_ylabel("LiRA online vulnerability\n(Δ log-likelihood ratio)")
    legend(
        vul_ax,
        loc="upper left",
        title=f"Spearman ρ = {v['spearman']:.2f}",
        title_fontsize=6,
        alignment="left",
    )
    panel_label(vul_ax, "b", "vulnerability vs memorization")
    return fig


def caption(data: Data) -> str:
    a = data["attacks"]
    on, loss = a["lira_online"]["tpr_at_fpr"], a["loss_attack"]["tpr_at_fpr"]
    return (
        f"Membership inference on {data['dataset']} ({data['replicas']} replicas; each of the "
        f"first {data['n_targets']} is the victim in turn, the others its shadow models). "
        "(a) ROC curves on log-log axes (legend: AUC; global var.: one pooled variance instead "
        "of per-example variances): at 0.1% FPR LiRA online finds "
        f"{on['0.001']:.3f} of the members, the loss attack {loss['0.001']:.3f} "
        f"(AUC {a['lira_online']['auc']:.3f} vs {a['loss_attack']['auc']:.3f}). "
        "(b) Per-example vulnerability (mean LiRA score when the example is in the victim's "
        "training set minus when it is not; symmetric-log axis) against memorization; Spearman "
        f"{data['vulnerability']['spearman']:.2f}."
    )


FIGURE = FigureSpec(
    number=9,
    name="privacy",
    title="Membership inference and memorization",
    studies=(STUDY,),
    compute=compute,
    draw=draw,
    caption=caption,
)
