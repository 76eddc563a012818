"""Figure 3: the marginal utility of memorized examples (Feldman & Zhang 2020, fig. 2 style).

Remove every training example whose memorization exceeds a threshold, retrain replicas on
what is left, and compare their test accuracy with replicas trained after removing as many
examples chosen at random. If memorized examples matter for generalization (the long-tail
theory), the first costs more accuracy than the second.

Retraining uses the source study's model and training config on the full training set
minus the removed examples; replicas differ in initialization and data order (and, for
random removal, in which examples are removed). Results are cached in ``derived/``.

Intervals: the replicas are the units (the test set held fixed). Each mean accuracy gets a
t interval over its replicas (``stats.unit_mean``), each random-minus-memorized difference a
Welch t interval (``stats.unit_difference``), and the caption's wording per threshold is
chosen from that interval (``stats.difference_statement``).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from memjax.train import train_replicas
from paper_figures.context import Context
from paper_figures.derived import cached_result
from paper_figures.spec import Data, FigureSpec
from paper_figures.stats import difference_statement, unit_difference, unit_mean
from paper_figures.style import SINGLE, interval_bars, new_figure, panel_label

SOURCE = "digits_clean"
DEFAULTS = {"thresholds": [0.5, 0.3, 0.1, 0.02], "replicas": 8, "seed": 1}


def _removal_masks(
    mem: np.ndarray, thresholds: list[float], replicas: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Training masks (rows: full data, then per threshold memorized-removed and random-removed
    blocks of ``replicas`` rows) and the number removed per threshold."""
    n = len(mem)
    rows = [np.ones((replicas, n), bool)]
    removed = []
    for t, theta in enumerate(thresholds):
        high = np.nan_to_num(mem, nan=-np.inf) > theta
        removed.append(int(high.sum()))
        rows.append(np.tile(~high, (replicas, 1)))
        rng = np.random.default_rng([seed, t])
        random = np.ones((replicas, n), bool)
        for r in range(replicas):
            random[r, rng.choice(n, size=int(high.sum()), replace=False)] = False
        rows.append(random)
    return np.concatenate(rows), np.array(removed)


def compute(ctx: Context) -> Data:
    settings = {**DEFAULTS, **ctx.figure_settings("marginal_utility")}
    study = ctx.study(SOURCE)
    thresholds = [float(t) for t in settings["thresholds"]]
    replicas, seed = int(settings["replicas"]), int(settings["seed"])
    mem = study.memorization.value
    masks, removed = _removal_masks(mem, thresholds, replicas, seed)
    cfg = study.ref.config
    key = {
        "source_fingerprint": study.store.meta["dataset_fingerprint"],
        "source_config": cfg.result_dict(),
        "thresholds": thresholds,
        "replicas": replicas,
        "seed": seed,
    }

    def retrain() -> dict[str, np.ndarray]:
        out = train_replicas(cfg.model, study.dataset, masks, cfg.train, seed=seed)
        return {"test_accuracy": out.test_correct.mean(axis=1)}

    result = cached_result(
        ctx,
        "marginal_utility",
        key,
        retrain,
        f"{len(masks)} replicas retrained on {study.label} without high-memorization or "
        "random examples (figure 3)",
    )
    acc = np.array(result["test_accuracy"]).reshape(1 + 2 * len(thresholds), replicas)
    return {
        "source_study": SOURCE,
        "dataset": study.label,
        "n_train": len(mem),
        "replicas_per_point": replicas,
        "thresholds": thresholds,
        "removed": removed,
        "removed_fraction": removed / len(mem),
        **accuracy_summary(acc),
    }


KEYS = ("mean", "stderr", "ci_low", "ci_high")


def accuracy_summary(acc: np.ndarray) -> Data:
    """Means and differences of the test accuracies ``acc`` (1 + 2T, replicas): rows are
    all data, then per threshold memorized-removed and random-removed; 95% intervals with
    the replicas as units."""
    full = unit_mean(acc[0])

    def rows(stats: list[dict]) -> dict[str, list[float]]:
        return {k: [s["value" if k == "mean" else k] for s in stats] for k in KEYS}

    return {
        "full_data_accuracy": {k: full["value" if k == "mean" else k] for k in KEYS},
        "memorized_removed": rows([unit_mean(a) for a in acc[1::2]]),
        "random_removed": rows([unit_mean(a) for a in acc[2::2]]),
        "random_minus_memorized": rows(
            [unit_difference(r, m) for m, r in zip(acc[1::2], acc[2::2], strict=True)]
        ),
    }


def draw(data: Data) -> Figure:
    fig, axes = new_figure(SINGLE, 2.5)
    ax = axes[0, 0]
    x = [100 * f for f in data["removed_fraction"]]
    full = data["full_data_accuracy"]
    ax.axhline(100 * full["mean"], color="0.5", ls=":", lw=0.8, label="all data (band: 95% int.)")
    ax.axhspan(100 * full["ci_low"], 100 * full["ci_high"], color="0.5", alpha=0.15, lw=0)
    for key, label, color in (
        ("memorized_removed", "memorization > threshold removed", "C3"),
        ("random_removed", "same number removed at random", "C0"),
    ):
        m = data[key]
        y, low, high = ([100 * v for v in m[k]] for k in ("mean", "ci_low", "ci_high"))
        interval_bars(ax, x, y, low, high, f"{label} (95% int.)", color, marker="o")
    for xi, yi, t in zip(
        x, [100 * v for v in data["memorized_removed"]["mean"]], data["thresholds"], strict=True
    ):
        ax.annotate(f">{t:g}", (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=5.5)
    ax.set_xlabel("training examples removed (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower left")
    panel_label(ax, "", f"{data['dataset']}: retrained without the removed examples")
    return fig


def _interval(m: dict) -> str:
    return f"{m['mean']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"


def _row(m: dict, i: int) -> dict:
    """Threshold ``i``'s entries of a per-threshold summary."""
    return {k: m[k][i] for k in KEYS}


def caption(data: Data) -> str:
    mem, rnd, diff = (
        data[k] for k in ("memorized_removed", "random_removed", "random_minus_memorized")
    )
    parts = [
        f"memorization > {t:g} ({r} examples removed): {_interval(_row(mem, i))} vs random "
        f"{_interval(_row(rnd, i))}; "
        + difference_statement(
            "replicas without random examples",
            "those without memorized ones",
            "test accuracy",
            diff["mean"][i],
            diff["ci_low"][i],
            diff["ci_high"][i],
        )
        for i, (t, r) in enumerate(zip(data["thresholds"], data["removed"], strict=True))
    ]
    return (
        f"Test accuracy of replicas retrained on {data['dataset']} after removing the training "
        "examples whose memorization exceeds a threshold (red; thresholds annotated) or as "
        "many random examples (blue): means over "
        f"{data['replicas_per_point']} replicas per point with 95% t intervals over replicas "
        "(bars; the test set held fixed), differences with Welch t intervals. All data: "
        f"{_interval(data['full_data_accuracy'])}. " + ". ".join(parts) + "."
    )


FIGURE = FigureSpec(
    number=3,
    name="marginal_utility",
    title="Marginal utility of memorized examples",
    studies=(SOURCE,),
    compute=compute,
    draw=draw,
    caption=caption,
)
