"""The README's picture of the default study: its memorization histogram and its most
memorized training signals, each with its 95% interval, drawn from the stored study.

Run after `make run`: `python docs/readme_figure.py results/default docs/default-study.png`.
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import memjax as mj  # noqa: E402
from memjax.report import HIST_BINS, ranked_examples  # noqa: E402

SHOWN = 6


def draw(study_dir: str, out: str) -> None:
    study = mj.open_study(study_dir)
    mem = study.memorization
    order = ranked_examples(mem)
    fig = plt.figure(figsize=(9, 3.6), dpi=150, layout="constrained")
    grid = fig.add_gridspec(2, SHOWN // 2 + 2)
    ax = fig.add_subplot(grid[:, :2])
    ax.hist(mem.value[np.isfinite(mem.value)], bins=HIST_BINS, color="C0")
    width = np.median(mem.ci_high[order] - mem.ci_low[order])
    ax.set_title(
        f"{study.replicas} replicas, {len(order)} examples\nmedian 95% interval width {width:.2f}",
        fontsize=8,
    )
    ax.set_xlabel("memorization")
    ax.set_ylabel("training examples")
    for k, i in enumerate(order[:SHOWN]):
        sub = fig.add_subplot(grid[k // (SHOWN // 2), 2 + k % (SHOWN // 2)])
        sub.plot(study.dataset.x_train[i].ravel(), color="k", lw=0.8)
        sub.set_xticks([])
        sub.set_yticks([])
        sub.set_title(
            f"#{i} label {study.dataset.y_train[i]}\n"
            f"mem {mem.value[i]:.2f} [{mem.ci_low[i]:.2f}, {mem.ci_high[i]:.2f}]",
            fontsize=7,
        )
    fig.savefig(out, metadata={"Software": None})


if __name__ == "__main__":
    draw(*sys.argv[1:3])
