"""Figure 9: membership inference from the replicas (Carlini et al. 2022 style).

Each of the first targets is the victim in turn, the other replicas its shadow models.
ROC curves on log-log axes, where the attacks differ (low FPR), stopping at FPR
1/(non-member pairs), with Clopper-Pearson 95% intervals at the standard FPRs; LiRA as its
reference code computes it (``convention="reference"``), plus the paper's one-sided offline
test for contrast. Right: each example's vulnerability against its memorization: memorized
examples are the ones an attacker finds. Where the study stored augmented queries
(``train.queries``; the full config's shifted views of each signal), LiRA fits its
Gaussians per view and averages the per-view scores, as the reference code does.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from memjax.privacy import FPRS, AttackResult, lira_eval
from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.style import (
    CLEAN,
    DOUBLE,
    FLIPPED,
    floats,
    interval_text,
    legend,
    new_figure,
    panel_label,
    scatter,
)

STUDY = "mnist1d_noise"
IDENTITY = "lira_online_identity"  # with augmented queries: the single-query attack beside
ATTACKS = {
    "lira_online": ("LiRA online", "C3", "-"),
    "lira_offline": ("LiRA offline", "C0", "-"),
    "lira_online_fixed_variance": ("LiRA online, global var.", "C3", "--"),
    "lira_offline_fixed_variance": ("LiRA offline, global var.", "C0", "--"),
    "loss_attack": ("loss attack", "0.3", "-"),
    "lira_offline_paper": ("LiRA offline, paper's one-sided test", "C0", "-."),
    IDENTITY: ("LiRA online, identity query only", "C1", ":"),
}
VULNERABILITY = "lira_online"
FLOOR = 1e-5  # lower limit of the log axes


def compute(ctx: Context) -> Data:
    study = ctx.study(STUDY)
    rel = study.relations
    attacks = {name: _attack_data(a) for name, a in rel.attacks.items() if name in ATTACKS}
    if study.outputs.train_margin_views is not None and "lira_online" in attacks:
        one = lira_eval(study.masks, study.outputs.train_margin, study.n_targets)
        attacks[IDENTITY] = _attack_data(one)
    mem = rel.columns["memorization"].value
    vul = rel.columns[VULNERABILITY].value
    flipped = study.flipped if study.flipped is not None else np.zeros(len(mem), bool)
    return {
        "study": STUDY,
        "dataset": study.label,
        "replicas": study.store.replicas,
        "n_targets": study.n_targets,
        "query_views": int(study.store.meta.get("query_views") or 1),  # 1: the example itself
        "attacks": attacks,
        "vulnerability": {
            "attack": VULNERABILITY,
            "memorization": mem,
            "vulnerability": vul,
            "flipped": flipped,
            "spearman": {
                "value": rel.spearman[VULNERABILITY],
                "ci": list(rel.spearman_ci[VULNERABILITY]),
            },
        },
    }


def _attack_data(a: AttackResult) -> dict:
    shown = np.isfinite(a.tpr_grid)  # the curve stops at FPR 1/(non-members)
    return {
        "fpr": a.fpr_grid[shown],
        "tpr": a.tpr_grid[shown],
        "convention": a.convention,
        "auc": a.auc,
        "auc_ci": list(a.auc_ci),
        "tpr_at_fpr": {f"{f:g}": a.tpr_at_fpr[f] for f in FPRS},  # NaN: undefined
        "tpr_ci": {f"{f:g}": list(a.tpr_ci[f]) for f in FPRS},
        "undefined": {f"{f:g}": why for f, why in a.undefined.items()},
        "n_pairs": a.n_pairs,
        "n_members": a.n_members,
        "n_nonmembers": a.n_nonmembers,
    }


def draw(data: Data) -> Figure:
    fig, axes = new_figure(DOUBLE, 2.5, 1, 2, width_ratios=[1, 1])
    roc_ax, vul_ax = axes[0]
    lowest = 1.0
    for name, a in data["attacks"].items():
        label, color, ls = ATTACKS[name]
        roc_ax.plot(
            floats(a["fpr"]), floats(a["tpr"]), ls, color=color, label=f"{label} ({_auc_text(a)})"
        )
        lowest = min(lowest, 1 / a["n_nonmembers"])
        at = [f for f in FPRS if np.isfinite(a["tpr_at_fpr"][f"{f:g}"])]
        if name != "lira_offline_paper" and at:  # intervals of the reference convention
            tpr = np.array([a["tpr_at_fpr"][f"{f:g}"] for f in at])
            ci = np.array([a["tpr_ci"][f"{f:g}"] for f in at]).T
            ci[0] = np.maximum(ci[0], FLOOR)  # a log axis cannot show 0
            yerr = np.abs(ci - np.maximum(tpr, FLOOR))
            roc_ax.errorbar(at, np.maximum(tpr, FLOOR), yerr, fmt="none", ecolor=color, lw=0.8)
    roc_ax.axvline(lowest, color="0.6", lw=0.6, ls=":")
    roc_ax.plot([FLOOR, 1], [FLOOR, 1], ":", color="0.6", lw=0.8, label="chance")
    roc_ax.set_xscale("log")
    roc_ax.set_yscale("log")
    roc_ax.set_xlim(FLOOR, 1)
    roc_ax.set_ylim(FLOOR, 1)
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
        title=f"Spearman ρ = {_interval_text(v['spearman']['value'], v['spearman']['ci'])}",
        title_fontsize=6,
        alignment="left",
    )
    panel_label(vul_ax, "b", "vulnerability vs memorization")
    return fig


def _interval_text(value: float, ci: list) -> str:
    """'0.85 [0.82, 0.88]' (NaN bounds: 'undefined')."""
    if not np.isfinite(value):
        return "undefined"
    return interval_text(value, *(np.nan if x is None else x for x in ci))


def _auc_text(a: dict) -> str:
    """An attack's AUC with its 95% interval (examples as clusters of pairs)."""
    return interval_text(a["auc"], *a["auc_ci"], 3)


def _tpr_text(a: dict, fpr: float) -> str:
    """'0.123 [0.100, 0.150]' or why the TPR is undefined."""
    key = f"{fpr:g}"
    if not np.isfinite(a["tpr_at_fpr"][key]):
        return f"undefined ({a['n_nonmembers']} non-member pairs cannot resolve FPR {fpr:g})"
    low, high = a["tpr_ci"][key]
    return f"{a['tpr_at_fpr'][key]:.3f} [{low:.3f}, {high:.3f}]"


def caption(data: Data) -> str:
    a = data["attacks"]
    on, loss = a["lira_online"], a["loss_attack"]
    rho = data["vulnerability"]["spearman"]
    offline = ""
    if "lira_offline_paper" in a:
        offline = (
            ' The paper\'s one-sided offline test (dash-dotted, convention "paper") has AUC '
            f"{_auc_text(a['lira_offline_paper'])} where the code's two-sided test has "
            f"{_auc_text(a['lira_offline'])}."
        )
    k = data.get("query_views", 1)
    views = ""
    if k > 1:
        views = (
            f" LiRA queries every training example under {k} views (Gaussians per view, the "
            "per-view scores averaged as in the reference code)"
        )
        if IDENTITY in a:
            one = a[IDENTITY]
            views += (
                f"; with the identity query alone (dotted) LiRA online has AUC {_auc_text(one)} "
                f"and finds {_tpr_text(one, 1e-3)} of the members at 0.1% FPR"
            )
        views += "."
    return (
        f"Membership inference on {data['dataset']} ({data['replicas']} replicas; each of the "
        f"first {data['n_targets']} is the victim in turn, the others its shadow models; "
        f"{on['n_members']} member and {on['n_nonmembers']} non-member pairs).{views} "
        "(a) ROC curves on log-log axes, LiRA as its reference code computes it (convention "
        '"reference": median centres, two-sided offline test, TPR read at FPR < α); legend: '
        "AUC with its 95% interval (examples as clusters of pairs); global var.: one pooled "
        "variance instead of per-example variances. Curves stop "
        "at FPR 1/(non-member pairs) (vertical dotted line); bars: Clopper-Pearson 95% "
        f"intervals of the TPR. At 0.1% FPR LiRA online finds {_tpr_text(on, 1e-3)} of the "
        f"members, the loss attack {_tpr_text(loss, 1e-3)}; at 0.001% FPR LiRA online: "
        f"{_tpr_text(on, 1e-5)} (AUC {_auc_text(on)} vs {_auc_text(loss)}).{offline} "
        "(b) Per-example vulnerability (mean LiRA score when the example is in the victim's "
        "training set minus when it is not; symmetric-log axis) against memorization; Spearman "
        f"{_interval_text(rho['value'], rho['ci'])} (examples as units)."
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
