"""Figure 4: train -> test influence (Feldman & Zhang 2020, fig. 3 style).

Influence of training example i on test example j: accuracy on j of the replicas trained
with i minus those trained without it. High-influence pairs are drawn side by side (a rare
training example and the test example that needs it), and the largest influence per test
example is compared with the same statistic after shuffling which replica saw which subset,
the level that estimation noise alone reaches.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from memjax.estimators import influence
from paper_figures.context import Context
from paper_figures.spec import Data, FigureSpec
from paper_figures.stats import histogram
from paper_figures.style import DOUBLE, log_count_axis, new_figure, panel_label, stairs

STUDY = "digits_clean"
PAIRS = 6
EDGES = np.round(np.linspace(-0.2, 1.0, 25), 3)
NULL_SEED = 0


def _top_pairs(value: np.ndarray, k: int) -> list[tuple[int, int]]:
    """The k largest influences with no train or test example used twice."""
    flat = np.where(np.isfinite(value), value, -np.inf).ravel()
    used_train, used_test, pairs = set(), set(), []
    for t in np.argsort(-flat, kind="stable"):
        i, j = divmod(int(t), value.shape[1])
        if i not in used_train and j not in used_test:
            pairs.append((i, j))
            used_train.add(i)
            used_test.add(j)
        if len(pairs) == k:
            break
    return pairs


def compute(ctx: Context) -> Data:
    study = ctx.study(STUDY)
    ds, masks, correct = study.dataset, study.masks, study.outputs.test_correct
    infl = influence(masks, correct)
    shuffled = correct[np.random.default_rng(NULL_SEED).permutation(len(correct))]
    null = influence(masks, shuffled)
    observed_max = np.nanmax(infl.value, axis=0)
    null_max = np.nanmax(null.value, axis=0)
    threshold = float(np.quantile(null_max, 0.99))
    side = int(round(np.sqrt(ds.x_train.shape[1])))
    mem = study.memorization
    pairs = [
        {
            "train_index": i,
            "test_index": j,
            "influence": infl.value[i, j],
            "stderr": infl.stderr[i, j],
            "train_label": int(ds.y_train[i]),
            "test_label": int(ds.y_test[j]),
            "train_memorization": mem.value[i],
            "train_image": ds.x_train[i].reshape(side, side),
            "test_image": ds.x_test[j].reshape(side, side),
        }
        for i, j in _top_pairs(infl.value, PAIRS)
    ]
    return {
        "study": STUDY,
        "dataset": study.label,
        "replicas": study.store.replicas,
        "pairs": pairs,
        "bin_edges": EDGES,
        "max_influence_counts": {
            "observed": histogram(observed_max, EDGES),
            "shuffled replicas (noise level)": histogram(null_max, EDGES),
        },
        "null_99th_percentile": threshold,
        "fraction_above_null_99th": float(np.mean(observed_max > threshold)),
        "n_test": len(observed_max),
    }


def draw(data: Data) -> Figure:
    fig = new_figure(DOUBLE, 2.5)[0]
    fig.clear()
    left, right = fig.subfigures(1, 2, width_ratios=[2.1, 1])
    grid = left.subplots(2, len(data["pairs"]))
    for c, p in enumerate(data["pairs"]):
        for r, (key, label) in enumerate((("train", "train_label"), ("test", "test_label"))):
            ax = grid[r, c]
            ax.imshow(np.array(p[f"{key}_image"], float), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[:].set_visible(False)
            ax.set_title(f"{key} y={p[label]}", fontsize=6, pad=1)
        grid[1, c].set_xlabel(f"infl. {p['influence']:.2f}±{p['stderr']:.2f}", fontsize=6)
    grid[0, 0].set_ylabel("training\nexample", fontsize=6)
    grid[1, 0].set_ylabel("test\nexample", fontsize=6)
    left.suptitle(r"$\bf{a}$  highest-influence train → test pairs", x=0.02, ha="left", fontsize=7)
    ax = right.subplots()
    colors = {"observed": "C3", "shuffled replicas (noise level)": "0.5"}
    for name, counts in data["max_influence_counts"].items():
        stairs(
            ax, data["bin_edges"], counts, name, colors[name], zorder=3 if name == "observed" else 2
        )
    ax.axvline(data["null_99th_percentile"], color="0.5", ls=":", lw=0.8)
    log_count_axis(ax, data["max_influence_counts"].values())
    ax.set_xlabel("largest influence on a test example\n(Δ accuracy, IN − OUT)")
    ax.set_ylabel("test examples")
    ax.legend(loc="upper right")
    panel_label(ax, "b", "largest influence")
    return fig


def caption(data: Data) -> str:
    return (
        f"Influence of training examples on test examples in {data['dataset']} "
        f"({data['replicas']} replicas): (a) the {len(data['pairs'])} highest-influence pairs "
        "(each training and test example used once), training example above its test "
        "example, with labels and influence ± standard error; (b) distribution of each test "
        "example's largest influence over all training examples, against the same statistic "
        "with the replicas' test results shuffled across subsets (estimation noise only; "
        f"dotted: its 99th percentile, {data['null_99th_percentile']:.2f}). "
        f"{100 * data['fraction_above_null_99th']:.1f}% of the {data['n_test']} test examples "
        "have a largest influence above that level."
    )


FIGURE = FigureSpec(
    number=4,
    name="influence",
    title="High-influence train-test pairs",
    studies=(STUDY,),
    compute=compute,
    draw=draw,
    caption=caption,
)
