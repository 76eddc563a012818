"""Figure 4: train -> test influence (Feldman & Zhang 2020, fig. 3 style).

Influence of training example i on test example j: accuracy on j of the replicas trained
with i minus those trained without it. High-influence pairs are drawn side by side (a rare
training example and the test example that needs it), and the largest influence per test
example is compared with the same statistic after shuffling which block of replicas saw which
subsets, the level that estimation noise alone reaches.

The null. Under the balanced design the replicas of a block are dependent (at ratio 1/2 a
complementary pair: one replica's IN set is the other's OUT set), and the estimator's noise
carries that dependence, so a null that shuffles single replicas would mix halves of
different pairs and misstate the noise. ``block_permutation`` instead hands each block's
test results, whole and in their within-block order, to another block's masks: every block
keeps its internal structure (the noise the estimator sees), while the link between a
block's subsets and its test results, the only thing influence measures, is broken. It is a
derangement (no block keeps its own results), so no real influence leaks into the null; for
designs whose replicas are independent every replica is its own block.
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


def block_permutation(blocks: np.ndarray | None, replicas: int, seed: int) -> np.ndarray:
    """Rows (R,) such that replica r of the null gets the test results of replica rows[r].

    A random cyclic derangement of the blocks (None: one block per replica), block for block
    in within-block order. Only blocks of equal size can swap; a block whose size no other
    block shares (an unfinished last block) maps to itself, so it is refused.
    """
    ids = np.arange(replicas) if blocks is None else np.asarray(blocks)
    labels, inverse, sizes = np.unique(ids, return_inverse=True, return_counts=True)
    if len(labels) < 2:
        raise ValueError("a block permutation needs at least 2 blocks")
    if np.any(np.bincount(sizes)[sizes] < 2):
        raise ValueError(f"blocks of unequal sizes {sorted(set(sizes.tolist()))}: some cannot swap")
    members = [np.flatnonzero(inverse == g) for g in range(len(labels))]
    rng = np.random.default_rng(seed)
    rows = np.empty(replicas, np.int64)
    for size in np.unique(sizes):
        order = rng.permutation(np.flatnonzero(sizes == size))
        for g, h in zip(order, np.roll(order, -1), strict=True):
            rows[members[g]] = members[h]
    return rows


def compute(ctx: Context) -> Data:
    study = ctx.study(STUDY)
    ds, masks, correct = study.dataset, study.masks, study.outputs.test_correct
    infl = influence(masks, correct, blocks=study.blocks)
    rows = block_permutation(study.blocks, len(masks), NULL_SEED)
    null = influence(masks, correct[rows])  # values only: blocks change no value
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
            "ci_low": infl.ci_low[i, j],
            "ci_high": infl.ci_high[i, j],
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
            "shuffled blocks (noise level)": histogram(null_max, EDGES),
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
        grid[1, c].set_xlabel(
            f"infl. {p['influence']:.2f}\n[{p['ci_low']:.2f}, {p['ci_high']:.2f}]", fontsize=6
        )
    grid[0, 0].set_ylabel("training\nexample", fontsize=6)
    grid[1, 0].set_ylabel("test\nexample", fontsize=6)
    left.suptitle(r"$\bf{a}$  highest-influence train → test pairs", x=0.02, ha="left", fontsize=7)
    ax = right.subplots()
    colors = {"observed": "C3", "shuffled blocks (noise level)": "0.5"}
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
        "example, with labels and influence with its 95% interval over the study's replica "
        "blocks; (b) distribution of each test example's largest influence over all training "
        "examples, against the same statistic with whole blocks of replicas' test results "
        "shuffled across the blocks' subsets (estimation noise only; "
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
