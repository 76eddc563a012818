"""Figure 10: forgetting events and learning time (Toneva et al. 2019), against memorization.

Both are counted as Toneva et al. define them: at every presentation of an example, from the
forward pass of the minibatch that holds it, before that step's update, in each replica
that trained on the example. The figure shows their distributions for clean and flipped
labels, and how their mean rises with memorization: examples learned late and forgotten
often are the memorized ones. Beside them (in the data) the recorded-epoch approximation of
forgetting, to show how many events recordings every few epochs miss.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.stats import binned_means, histogram, spearman
from paper_figures.style import (
    CLEAN,
    DOUBLE,
    FLIPPED,
    errorbars,
    log_count_axis,
    new_figure,
    panel_label,
    stairs,
)

STUDY = "mnist1d_noise"
PROXIES = {
    "forgetting_events": "forgetting events per run",
    "learning_time": "learning time (epochs)",
}
RECORDED = "forgetting_events_recorded"  # the approximation from recordings, for comparison
TITLES = {"forgetting_events": "forgetting events", "learning_time": "learning time"}
MEM_EDGES = np.round(np.linspace(-0.2, 1.0, 13), 3)


def _edges(values: np.ndarray, name: str, epochs: int) -> np.ndarray:
    if name == "learning_time":  # epochs 0..E-1, plus the "never learned" value E
        step = max(1, -(-(epochs + 1) // 20))
        return np.arange(0, epochs + step + 1, step) - 0.5
    top = max(float(np.nanmax(values)), 1.0)
    return np.linspace(0, top, 21)


def compute(ctx: Context) -> Data:
    study = ctx.study(STUDY)
    cols = study.relations.columns
    missing = [p for p in PROXIES if p not in cols]
    if missing:
        raise ValueError(
            f"study {STUDY!r} has no per-presentation counts {missing}: its store predates "
            "them; train it again"
        )
    if study.flipped is None:
        raise ValueError(f"figure 10 needs label noise in study {STUDY!r}")
    mem = cols["memorization"].value
    groups = {"clean label": ~study.flipped, "flipped label": study.flipped}
    epochs = study.ref.config.train.epochs
    proxies = {}
    for name, label in PROXIES.items():
        value = cols[name].value
        edges = _edges(value, name, epochs)
        proxies[name] = {
            "label": label,
            "bin_edges": edges,
            "counts": {g: histogram(value[m], edges) for g, m in groups.items()},
            "mean": {g: float(np.nanmean(value[m])) for g, m in groups.items()},
            "vs_memorization": binned_means(mem, value, MEM_EDGES),
            "spearman_with_memorization": spearman(mem, value),
        }
    recorded = None
    if RECORDED in cols:
        value = cols[RECORDED].value
        recorded = {
            "record_epochs": study.outputs.record_epochs,
            "mean": {g: float(np.nanmean(value[m])) for g, m in groups.items()},
        }
    return {
        "study": STUDY,
        "dataset": study.label,
        "replicas": study.store.replicas,
        "epochs": epochs,
        "proxies": proxies,
        "forgetting_events_recorded": recorded,
    }


def draw(data: Data) -> Figure:
    fig, axes = new_figure(DOUBLE, 2.0, 1, 4)
    colors = {"clean label": CLEAN, "flipped label": FLIPPED}
    for k, (name, p) in enumerate(data["proxies"].items()):
        ax = axes[0, k]
        for g, counts in p["counts"].items():
            stairs(ax, p["bin_edges"], counts, g, colors[g], fill=g != "clean label", alpha=0.6)
        log_count_axis(ax, p["counts"].values())
        ax.set_xlabel(p["label"])
        ax.set_ylabel("training examples")
        ax.legend(loc="upper right")
        panel_label(ax, "ab"[k], TITLES[name])
        ax2 = axes[0, k + 2]
        b = p["vs_memorization"]
        rho = p["spearman_with_memorization"]
        errorbars(
            ax2, b["x"], b["mean"], b["stderr"], f"mean ± s.e.\nSpearman {rho:.2f}", "k", marker="o"
        )
        ax2.set_xlabel("memorization (Δ accuracy)")
        ax2.set_ylabel(p["label"])
        ax2.legend(loc="upper left")
        panel_label(ax2, "cd"[k], f"{TITLES[name]} vs mem.")
    return fig


def caption(data: Data) -> str:
    f, t = data["proxies"]["forgetting_events"], data["proxies"]["learning_time"]
    fm, tm = f["mean"], t["mean"]
    text = (
        "Forgetting events (correct → incorrect transitions between consecutive presentations "
        "of the example, judged by the forward pass of its minibatch before the update; per "
        "run = mean count per replica) and learning time (epochs trained before the "
        "presentation from which the example is always right; wrong at its last presentation "
        f"= {data['epochs']}, the number of epochs) on {data['dataset']} ({data['replicas']} "
        "replicas), averaged over the replicas that trained on each example. (a, b) "
        "Distributions for clean and flipped labels: mean forgetting "
        f"{fm['clean label']:.2f} vs {fm['flipped label']:.2f}, learning time "
        f"{tm['clean label']:.1f} vs {tm['flipped label']:.1f} epochs. (c, d) Binned means "
        "(± s.e.) against memorization; Spearman ρ "
        f"{f['spearman_with_memorization']:.2f} and {t['spearman_with_memorization']:.2f}."
    )
    rec = data.get("forgetting_events_recorded")
    if rec:
        every = rec["record_epochs"][1] - rec["record_epochs"][0]
        rm = rec["mean"]
        text += (
            f" Counted only between recordings every {every} epochs, the mean forgetting "
            f"would read {rm['clean label']:.2f} vs {rm['flipped label']:.2f}."
        )
    return text


FIGURE = FigureSpec(
    number=10,
    name="forgetting",
    title="Forgetting events and learning time",
    studies=(STUDY,),
    compute=compute,
    draw=draw,
    caption=caption,
)
