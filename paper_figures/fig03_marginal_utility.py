"""Figure 3: the marginal utility of memorized examples (Feldman & Zhang 2020, fig. 2 style).

Remove every training example whose memorization exceeds a threshold, retrain replicas on
what is left, and compare their test accuracy with replicas trained after removing as many
examples chosen at random. If memorized examples matter for generalization (the long-tail
theory), the first costs more accuracy than the second.

Retraining uses the source study's model and training config on the full training set
minus the removed examples; replicas differ in initialization and data order (and, for
random removal, in which examples are removed). Results are cached in ``derived/``.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from memjax.train import train_replicas
from paper_figures.context import Context
from paper_figures.derived import cached_result
from paper_figures.spec import Data, FigureSpec
from paper_figures.style import SINGLE, errorbars, new_figure, panel_label

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
    full = acc[0]

    def summary(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return block.mean(axis=1), block.std(axis=1, ddof=1) / np.sqrt(replicas)

    mem_mean, mem_se = summary(acc[1::2])
    rnd_mean, rnd_se = summary(acc[2::2])
    return {
        "source_study": SOURCE,
        "dataset": study.label,
        "n_train": len(mem),
        "replicas_per_point": replicas,
        "full_data_accuracy": {"mean": full.mean(), "stderr": full.std(ddof=1) / np.sqrt(replicas)},
        "thresholds": thresholds,
        "removed": removed,
        "removed_fraction": removed / len(mem),
        "memorized_removed": {"mean": mem_mean, "stderr": mem_se},
        "random_removed": {"mean": rnd_mean, "stderr": rnd_se},
        "accuracy_cost_difference": rnd_mean - mem_mean,
    }


def draw(data: Data) -> Figure:
    fig, axes = new_figure(SINGLE, 2.5)
    ax = axes[0, 0]
    x = [100 * f for f in data["removed_fraction"]]
    full = data["full_data_accuracy"]
    ax.axhline(100 * full["mean"], color="0.5", ls=":", lw=0.8, label="all data")
    for key, label, color in (
        ("memorized_removed", "memorization > threshold removed", "C3"),
        ("random_removed", "same number removed at random", "C0"),
    ):
        m = data[key]
        y = [100 * v for v in m["mean"]]
        e = [100 * v for v in m["stderr"]]
        errorbars(ax, x, y, e, label, color, marker="o")
    for xi, yi, t in zip(
        x, [100 * v for v in data["memorized_removed"]["mean"]], data["thresholds"], strict=True
    ):
        ax.annotate(f">{t:g}", (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=5.5)
    ax.set_xlabel("training examples removed (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(loc="lower left")
    panel_label(ax, "", f"{data['dataset']}: retrained without the removed examples")
    return fig


def caption(data: Data) -> str:
    parts = [
        f"mem > {t:g} ({r} examples): {100 * m:.1f}% vs {100 * q:.1f}%"
        for t, r, m, q in zip(
            data["thresholds"],
            data["removed"],
            data["memorized_removed"]["mean"],
            data["random_removed"]["mean"],
            strict=True,
        )
    ]
    return (
        f"Test accuracy of replicas retrained on {data['dataset']} after removing the training "
        "examples whose memorization exceeds a threshold (red; thresholds annotated) or as "
        "many random examples (blue), mean ± s.e. over "
        f"{data['replicas_per_point']} replicas; all data: "
        f"{100 * data['full_data_accuracy']['mean']:.1f}%. Memorized vs random removal: "
        + "; ".join(parts)
        + "."
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
