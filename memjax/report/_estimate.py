"""`memjax estimate`: the per-example table, the summary and a histogram of a study.

The table holds memorization and every other per-example score of memjax.analysis.relations
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
from typing import Any

import numpy as np

from memjax.errors import DataError
from memjax.estimators import Estimate
from memjax.jsonio import json_text, strict_json
from memjax.study import Location, Study, locate

__all__ = [
    "estimate_study",
    "summary",
    "study_columns",
    "csv_text",
    "ranked_examples",
    "check_estimable",
    "strict_json",
]

TOP_K = 20
HIST_BINS = np.round(np.linspace(-1.0, 1.0, 21), 2)
# An example is ranked only if both sides have this many replicas (a sample variance each).
MIN_RANKED_SIDE = 2


def ranked_examples(est: Estimate) -> np.ndarray:
    """Indices of the examples whose estimate has an interval (finite value, stderr and
    bounds, >= MIN_RANKED_SIDE replicas IN and OUT), from most to least memorized (ties by
    index). Rankings never lead with an example whose value rests on one replica."""
    ok = (
        np.isfinite(est.value)
        & np.isfinite(est.stderr)
        & np.isfinite(est.ci_low)
        & np.isfinite(est.ci_high)
        & (est.n_in >= MIN_RANKED_SIDE)
        & (est.n_out >= MIN_RANKED_SIDE)
    )
    idx = np.flatnonzero(ok)
    return idx[np.argsort(-est.value[idx], kind="stable")]


def study_columns(study: Study) -> dict[str, np.ndarray]:
    """Per-example table columns (name -> (n,) array): every score of the study's relations
    with its standard error and interval, the IN/OUT counts and the dataset's side arrays."""
    ds = study.dataset
    n_in = study.masks.sum(axis=0)
    cols: dict[str, np.ndarray] = {
        "index": np.arange(ds.n_train),
        "label": ds.y_train,
        "n_in": n_in,
        "n_out": study.replicas - n_in,
    }
    for name, est in study.relations.columns.items():
        cols[name] = est.value
        cols[f"{name}_stderr"] = est.stderr
        cols[f"{name}_ci_low"] = est.ci_low
        cols[f"{name}_ci_high"] = est.ci_high
    for key, value in ds.train_info.items():
        cols[key] = value
    return cols


def _interval(est: Estimate) -> dict[str, float]:
    return {
        "value": float(est.value),
        "stderr": float(est.stderr),
        "ci_low": float(est.ci_low),
        "ci_high": float(est.ci_high),
    }


def summary(study: Study) -> dict[str, Any]:
    """Mean test and training accuracy of the replicas (with design-aware intervals),
    histogram counts, top memorized, how every proxy and attack score relates to
    memorization, and why any column is missing.

    "top_memorized" ranks only examples with an interval (``ranked_examples``), each shown
    with its design-aware 95% interval; undefined numbers are None (strict JSON)."""
    mem = study.relations.columns["memorization"]
    finite = np.isfinite(mem.value)
    counts, _ = np.histogram(mem.value[finite], bins=HIST_BINS)
    order = ranked_examples(mem)
    result = {
        "study": study.name,
        "dataset": study.meta.get("dataset_name"),
        "replicas_finished": study.replicas,
        "replicas_planned": study.planned_replicas,
        "complete": study.complete,
        "test_accuracy": _interval(study.accuracy["test"]),
        "train_accuracy_in_subset": _interval(study.accuracy["in_subset"]),
        "train_accuracy_out_of_subset": _interval(study.accuracy["out_of_subset"]),
        "memorization_mean": float(np.nanmean(mem.value)),
        "examples_without_estimate": int((~finite).sum()),
        "histogram": {"bin_edges": HIST_BINS.tolist(), "counts": counts.tolist()},
        "examples_ranked": len(order),
        "ranking_requires": (
            f">= {MIN_RANKED_SIDE} replicas IN and OUT, a finite stderr and interval"
        ),
        "top_memorized": [
            {
                "index": int(i),
                "label": int(study.dataset.y_train[i]),
                "memorization": float(mem.value[i]),
                "stderr": float(mem.stderr[i]),
                "ci_low": float(mem.ci_low[i]),
                "ci_high": float(mem.ci_high[i]),
                "n_in": int(mem.n_in[i]),
                "n_out": int(mem.n_out[i]),
            }
            for i in order[:TOP_K]
        ],
        **study.relations.summary(),
    }
    return strict_json(result)


def csv_text(cols: dict[str, np.ndarray]) -> str:
    """The per-example table as CSV text: a header of column names, floats to 6 digits."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    names = list(cols)
    writer.writerow(names)
    for row in zip(*(cols[k] for k in names), strict=True):
        writer.writerow(
            [f"{v:.6g}" if isinstance(v, (float, np.floating)) else int(v) for v in row]
        )
    return buf.getvalue()


def _histogram_png(
    loc: Location, name: str, mem: np.ndarray, flipped: np.ndarray | None, title: str
) -> None:
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    loc.write_bytes(name, buf.getvalue())


def check_estimable(study: Study, what: str) -> None:
    """Refuse, naming why, a study whose replicas cannot support IN-minus-OUT estimates."""
    if study.replicas < 2:
        raise DataError(f"{study.path}: fewer than 2 finished replicas, nothing to {what}")
    if study.config.design == "all":
        raise DataError(
            f"{study.path}: its replicas train on every example (design 'all'), so no example "
            "is ever held out and memorization is undefined; read its outputs with mj.open_study"
        )


def estimate_study(study: Study, out_dir: str | None = None, partial: bool = False) -> dict:
    """Write memorization.csv, summary.json (strict JSON; ``missing`` names each column that
    could not be computed and why) and memorization_hist.png; return the summary."""
    check_estimable(study, "estimate")
    if not study.complete and not partial:
        raise DataError(
            f"{study.path} is unfinished ({study.replicas}/{study.planned_replicas} replicas); "
            "resume it with `memjax run` or pass --partial to estimate from the finished replicas"
        )
    out = locate(out_dir or study.path)  # a directory or URL (memjax.study's locations)
    cols = study_columns(study)
    result = summary(study)
    out.write_text("memorization.csv", csv_text(cols))
    _histogram_png(
        out,
        "memorization_hist.png",
        cols["memorization"],
        study.flipped,
        f"{result['dataset']}: {study.replicas} replicas",
    )
    text = json_text(result, indent=2)
    out.write_text("summary.json", text)
    return result
