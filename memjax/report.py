"""`memjax estimate`: the per-example table, the summary and a histogram from a finished store.

The table holds memorization and every other per-example score of memjax.relations
(counterfactual memorization, held-out accuracy, attack vulnerabilities, proxies), each with
its standard error and 95% interval computed for the study's design (blocks of the balanced
design are the unit of independence); the summary adds their Spearman correlations with
memorization and, for a study with label noise, each score's ROC AUC for finding the
flipped labels.

Pure functions of stored arrays: nothing here trains. Files are written atomically, so an
interrupted estimate never leaves a table that looks complete.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

import numpy as np

from memjax.outputs import ReplicaOutputs
from memjax.relations import Relations, relations
from memjax.store import Store, atomic_write_text
from memjax.study import build_dataset
from memjax.subsets import block_ids

__all__ = ["estimate_study", "summary", "study_relations"]

TOP_K = 20
HIST_BINS = np.round(np.linspace(-1.0, 1.0, 21), 2)


def _n_targets(replicas: int) -> int:
    """Membership-inference victims: 16 as in the LiRA paper, fewer for small studies."""
    return max(1, min(16, replicas // 4))


def study_relations(
    store: Store, masks: np.ndarray, out: ReplicaOutputs
) -> tuple[dict[str, np.ndarray], Relations]:
    """Per-example table columns (name -> (n,) array) and the relations behind them."""
    ds = build_dataset(store.meta["config"]["dataset"])
    flipped = ds.train_info.get("flipped")
    sub = store.meta["config"]["subsets"]
    blocks = block_ids(out.replica_ids, sub["ratio"], sub["design"])
    rel = relations(masks, out, flipped, n_targets=_n_targets(len(masks)), blocks=blocks)
    n_in = masks.sum(axis=0)
    cols: dict[str, np.ndarray] = {
        "index": np.arange(ds.n_train),
        "label": ds.y_train,
        "n_in": n_in,
        "n_out": len(masks) - n_in,
    }
    for name, est in rel.columns.items():
        cols[name] = est.value
        cols[f"{name}_stderr"] = est.stderr
        cols[f"{name}_ci_low"] = est.ci_low
        cols[f"{name}_ci_high"] = est.ci_high
    for key, value in ds.train_info.items():
        cols[key] = value
    return cols, rel


def summary(
    store: Store,
    masks: np.ndarray,
    out: ReplicaOutputs,
    cols: dict[str, np.ndarray],
    rel: Relations,
) -> dict[str, Any]:
    """Mean test accuracy of the replicas (with stderr), histogram counts, top memorized,
    and how every proxy and attack score relates to memorization."""
    acc = out.test_correct.mean(axis=1)
    mem = cols["memorization"]
    finite = np.isfinite(mem)
    counts, _ = np.histogram(mem[finite], bins=HIST_BINS)
    order = np.argsort(np.where(finite, -mem, np.inf))[:TOP_K]
    return {
        "study": store.meta.get("name"),
        "dataset": store.meta.get("dataset_name"),
        "replicas_finished": int(len(masks)),
        "replicas_planned": store.replicas,
        "complete": bool(len(masks) == store.replicas),
        "test_accuracy_mean": float(acc.mean()),
        "test_accuracy_stderr": float(acc.std(ddof=1) / np.sqrt(len(acc))),
        "train_accuracy_in_subset": float(out.train_correct[masks].mean()),
        "train_accuracy_out_of_subset": float(out.train_correct[~masks].mean()),
        "memorization_mean": float(np.nanmean(mem)),
        "examples_without_estimate": int((~finite).sum()),
        "histogram": {"bin_edges": HIST_BINS.tolist(), "counts": counts.tolist()},
        "top_memorized": [
            {
                "index": int(i),
                "label": int(cols["label"][i]),
                "memorization": float(mem[i]),
                "stderr": float(cols["memorization_stderr"][i]),
            }
            for i in order
        ],
        **rel.summary(),
    }


def _csv_text(cols: dict[str, np.ndarray]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    names = list(cols)
    writer.writerow(names)
    for row in zip(*(cols[k] for k in names), strict=True):
        writer.writerow(
            [f"{v:.6g}" if isinstance(v, (float, np.floating)) else int(v) for v in row]
        )
    return buf.getvalue()


def _histogram_png(path: str, mem: np.ndarray, flipped: np.ndarray | None, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.4, 2.4), dpi=150)
    finite = np.isfinite(mem)
    if flipped is None:
        ax.hist(mem[finite], bins=HIST_BINS, color="C0")
    else:
        ax.hist(mem[finite & ~flipped], bins=HIST_BINS, color="C0", label="clean label")
        ax.hist(mem[finite & flipped], bins=HIST_BINS, color="C3", alpha=0.7, label="flipped label")
        ax.legend(fontsize=7)
    ax.set_xlabel("memorization estimate")
    ax.set_ylabel("training examples")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def estimate_study(
    store: Store, out_dir: str | None = None, partial: bool = False
) -> dict[str, Any]:
    """Write memorization.csv, summary.json and memorization_hist.png; return the summary."""
    rows = store.done_rows()
    if len(rows) < 2:
        raise ValueError(f"{store.path}: fewer than 2 finished replicas, nothing to estimate")
    if not store.is_complete() and not partial:
        raise ValueError(
            f"{store.path} is unfinished ({len(rows)}/{store.replicas} replicas); resume it with "
            "`memjax run` or pass --partial to estimate from the finished replicas"
        )
    out_dir = out_dir or store.path
    os.makedirs(out_dir, exist_ok=True)
    masks, out = store.masks(rows), store.load_outputs(rows)
    cols, rel = study_relations(store, masks, out)
    result = summary(store, masks, out, cols, rel)
    atomic_write_text(os.path.join(out_dir, "memorization.csv"), _csv_text(cols))
    _histogram_png(
        os.path.join(out_dir, "memorization_hist.png"),
        cols["memorization"],
        cols["flipped"].astype(bool) if "flipped" in cols else None,
        f"{result['dataset']}: {len(rows)} replicas",
    )
    atomic_write_text(os.path.join(out_dir, "summary.json"), json.dumps(result, indent=2))
    return result
