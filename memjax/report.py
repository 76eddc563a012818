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

__all__ = ["estimate_study", "summary", "study_relations", "strict_json"]

TOP_K = 20
HIST_BINS = np.round(np.linspace(-1.0, 1.0, 21), 2)
# An example is ranked only if both sides have this many replicas (a sample variance each).
MIN_RANKED_SIDE = 2


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float as None and numpy scalars as Python numbers, so
    ``json.dumps(..., allow_nan=False)`` writes standard JSON (no bare NaN or Infinity)."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return strict_json(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


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
    how every proxy and attack score relates to memorization, and why any column is missing.

    "top_memorized" ranks only examples with >= MIN_RANKED_SIDE replicas IN and OUT, a
    finite standard error and interval, each shown with its design-aware 95% interval;
    undefined numbers are None (strict JSON)."""
    acc = out.test_correct.mean(axis=1)
    mem, se = cols["memorization"], cols["memorization_stderr"]
    finite = np.isfinite(mem)
    counts, _ = np.histogram(mem[finite], bins=HIST_BINS)
    low, high = cols["memorization_ci_low"], cols["memorization_ci_high"]
    ranked = (
        finite
        & np.isfinite(se)
        & np.isfinite(low)
        & np.isfinite(high)
        & (cols["n_in"] >= MIN_RANKED_SIDE)
        & (cols["n_out"] >= MIN_RANKED_SIDE)
    )
    order = np.argsort(np.where(ranked, -mem, np.inf), kind="stable")[: min(TOP_K, ranked.sum())]
    result = {
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
        "examples_ranked": int(ranked.sum()),
        "ranking_requires": (
            f">= {MIN_RANKED_SIDE} replicas IN and OUT, a finite stderr and interval"
        ),
        "top_memorized": [
            {
                "index": int(i),
                "label": int(cols["label"][i]),
                "memorization": float(mem[i]),
                "stderr": float(se[i]),
                "ci_low": float(low[i]),
                "ci_high": float(high[i]),
                "n_in": int(cols["n_in"][i]),
                "n_out": int(cols["n_out"][i]),
            }
            for i in order
        ],
        **rel.summary(),
    }
    return strict_json(result)


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
    """Write memorization.csv, summary.json (strict JSON; ``missing`` names each column that
    could not be computed and why) and memorization_hist.png; return the summary."""
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
    text = json.dumps(result, indent=2, allow_nan=False)
    atomic_write_text(os.path.join(out_dir, "summary.json"), text)
    return result
