"""Figure 10: forgetting events and learning time (Toneva et al. 2019), against memorization.

Both are counted as Toneva et al. define them: at every presentation of an example, from the
forward pass of the minibatch that holds it, before that step's update, in each replica
that trained on the example. The figure shows their distributions for clean and flipped
labels, and how their mean rises with memorization: examples learned late and forgotten
often are the memorized ones. Beside them (in the data) the recorded-epoch approximation of
forgetting, to show how many events recordings every few epochs miss.

Intervals (95%) treat the examples as the units (labels are flipped at random) and hold each
example's replica average fixed: group and bin means have t intervals over examples
(``stats.unit_mean``, ``stats.binned_means``), flipped-minus-clean differences Welch t
intervals (``stats.unit_difference``, the caption's wording chosen from them), Spearman
correlations Fisher-z intervals with the Bonett-Wright standard error (from
``memjax.analysis.relations``).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.stats import (
    binned_means,
    difference_statement,
    histogram,
    unit_difference,
    unit_mean,
)
from paper_figures.style import (
    CLEAN,
    DOUBLE,
    FLIPPED,
    interval_bars,
    interval_text,
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
    rel = study.relations

    def by_group(value: np.ndarray) -> dict:
        return {
            "mean": {g: unit_mean(value[m]) for g, m in groups.items()},
            "flipped_minus_clean": unit_difference(value[study.flipped], value[~study.flipped]),
        }

    proxies = {}
    for name, label in PROXIES.items():
        value = cols[name].value
        edges = _edges(value, name, epochs)
        proxies[name] = {
            "label": label,
            "bin_edges": edges,
            "counts": {g: histogram(value[m], edges) for g, m in groups.items()},
            **by_group(value),
            "vs_memorization": binned_means(mem, value, MEM_EDGES),
            "spearman_with_memorization": {
                "value": rel.spearman[name],
                "ci": rel.spearman_ci[name],
            },
        }
    recorded = None
    if RECORDED in cols:
        recorded = {"record_epochs": study.outputs.record_epochs, **by_group(cols[RECORDED].value)}
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
        rho = _rho(p["spearman_with_memorization"])
        label = f"mean (95% int.)\nSpearman {rho}"
        interval_bars(ax2, b["x"], b["mean"], b["ci_low"], b["ci_high"], label, "k", marker="o")
        ax2.set_xlabel("memorization (Δ accuracy)")
        ax2.set_ylabel(p["label"])
        ax2.legend(loc="upper left")
        panel_label(ax2, "cd"[k], f"{TITLES[name]} vs mem.")
    return fig


def _interval(m: dict, digits: int) -> str:
    return interval_text(m["value"], m["ci_low"], m["ci_high"], digits)


def _rho(r: dict) -> str:
    low, high = r["ci"]
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{r['value']:.2f} (no interval)"
    return f"{r['value']:.2f} [{low:.2f}, {high:.2f}]"


def _groups(p: dict, what: str, digits: int) -> str:
    """ "clean x [l, h] vs flipped y [l, h]; <statement>" for one quantity's group means."""
    m, d = p["mean"], p["flipped_minus_clean"]
    return (
        f"{_interval(m['clean label'], digits)} for clean vs "
        f"{_interval(m['flipped label'], digits)} for flipped labels; "
        + difference_statement(
            "flipped labels", "clean ones", what, d["value"], d["ci_low"], d["ci_high"]
        )
    )


def caption(data: Data) -> str:
    f, t = data["proxies"]["forgetting_events"], data["proxies"]["learning_time"]
    text = (
        "Forgetting events (correct → incorrect transitions between consecutive presentations "
        "of the example, judged by the forward pass of its minibatch before the update; per "
        "run = mean count per replica) and learning time (epochs trained before the "
        "presentation from which the example is always right; wrong at its last presentation "
        f"= {data['epochs']}, the number of epochs) on {data['dataset']} ({data['replicas']} "
        "replicas), averaged over the replicas that trained on each example. Intervals are "
        "95%, over examples (the replica averages held fixed): t intervals for means, Welch "
        "for differences, Fisher z (Bonett-Wright) for Spearman ρ. (a, b) Distributions for "
        f"clean and flipped labels: mean forgetting {_groups(f, 'mean forgetting', 2)}; mean "
        f"learning time (epochs) {_groups(t, 'mean learning time', 2)}. (c, d) Binned means "
        "against memorization; Spearman ρ "
        f"{_rho(f['spearman_with_memorization'])} and {_rho(t['spearman_with_memorization'])}."
    )
    rec = data.get("forgetting_events_recorded")
    if rec:
        every = rec["record_epochs"][1] - rec["record_epochs"][0]
        text += (
            f" Counted only between recordings every {every} epochs, the mean forgetting "
            f"would read {_groups(rec, 'mean forgetting', 2)}."
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
