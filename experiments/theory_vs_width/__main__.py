"""Does kernel theory predict which examples a network memorizes, and better as width grows?

At each width, MLPs in NTK parameterization (ReLU, W_std = sqrt 2, b_std = 0.1) and their
linearizations are trained by memjax on the same subset masks with full-batch gradient
descent on MSE (one step per epoch). Beside them, kernel "models" are fit on the same masks:

* ``ntk_gd_paired``: the analytic NTK's gradient-descent dynamics (same learning rate and
  steps, memjax's mean loss) started from each replica network's own initial outputs f0.
  An infinitely wide network is exactly this (Lee et al. 2019); at finite width the NTK
  differs from the analytic one and moves during training, which is what is measured.
* ``ntk_gd``: the same without f0, i.e. the mean over initializations (width independent).
* ``nngp``: the NNGP posterior mean, kernel ridge with a 1e-6 jitter (width independent).

Memorization (Feldman & Zhang, from correctness) of every training example is estimated
from each model's replicas. Per width, the tables give the Pearson and Spearman correlation
and the mean absolute difference between the memorization of the network (or linearized
network) and of a kernel model, and the same for the accuracy on each test example (mean
over replicas). Standard errors: bootstrap over replicas (replica rows resampled with
replacement, the same rows for both models so the pairing is kept; examples never IN or
never OUT in a resample are dropped from that resample).

Writes ``summary.json`` (settings, timings, every number), ``table.md`` and ``table.csv``:

    python -m experiments.theory_vs_width [--quick] --out DIR [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import time
import warnings
from importlib import resources
from typing import Any

import jax
import numpy as np
import yaml
from scipy import stats

import memjax as mj
from memjax import theory
from memjax.models import MLP, build
from memjax.train import replica_init_keys

PAIRS = (
    ("network", "ntk_gd_paired"),
    ("network", "ntk_gd"),
    ("network", "nngp"),
    ("linearized", "ntk_gd_paired"),
    ("linearized", "ntk_gd"),
    ("network", "linearized"),
)
METRICS = ("pearson", "spearman", "mad")
QUANTITIES = ("memorization", "test_accuracy")


def load_settings(mode: str) -> dict[str, Any]:
    text = resources.files(__package__).joinpath("config.yaml").read_text()
    return yaml.safe_load(text)[mode]


def mnist1d_subset(n_train: int, n_test: int, seed: int) -> mj.data.Dataset:
    """A seeded random subset of MNIST-1D's train and test signals."""
    full = mj.data.load("mnist1d")
    if not (2 <= n_train <= full.n_train and 1 <= n_test <= full.n_test):
        raise ValueError(f"need 2 <= n_train <= {full.n_train} and 1 <= n_test <= {full.n_test}")
    rng = np.random.default_rng([seed, n_train, n_test])
    tr = np.sort(rng.choice(full.n_train, n_train, replace=False))
    te = np.sort(rng.choice(full.n_test, n_test, replace=False))
    return mj.data.from_arrays(
        full.x_train[tr],
        full.y_train[tr],
        full.x_test[te],
        full.y_test[te],
        full.num_classes,
        name=f"mnist1d[{n_train}/{n_test}]",
    )


def spec_for(width: int, depth: int) -> MLP:
    return MLP(widths=(width,) * depth, activation="relu", parameterization="ntk")


def initial_outputs(spec: MLP, ds: mj.data.Dataset, seed: int, replicas: int):
    """Each replica network's outputs at initialization (the trainer's init key of r)."""
    init, apply = build(spec, ds.input_shape, ds.num_classes)

    def outputs(key):
        params = init(key)
        return apply(params, ds.x_train), apply(params, ds.x_test)

    # lax.map: one replica at a time compiles several times faster than a vmapped init
    f0_train, f0_test = jax.lax.map(outputs, replica_init_keys(seed, np.arange(replicas)))
    return np.asarray(f0_train), np.asarray(f0_test)


def _correlations(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return {"pearson": np.nan, "spearman": np.nan, "mad": float(np.mean(np.abs(a - b)))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        spearman = stats.spearmanr(a, b).statistic
    return {
        "pearson": float(np.corrcoef(a, b)[0, 1]),
        "spearman": float(spearman),
        "mad": float(np.mean(np.abs(a - b))),
    }


def _agreement(masks, a: mj.ReplicaOutputs, b: mj.ReplicaOutputs, rows) -> dict[str, dict]:
    """Metrics between models a and b on the replica rows ``rows`` (repeats allowed)."""
    m = masks[rows]
    return {
        "memorization": _correlations(
            mj.estimators.memorization(m, a.train_correct[rows]).value,
            mj.estimators.memorization(m, b.train_correct[rows]).value,
        ),
        "test_accuracy": _correlations(a.test_correct[rows].mean(0), b.test_correct[rows].mean(0)),
    }


def compare(
    masks: np.ndarray, a: mj.ReplicaOutputs, b: mj.ReplicaOutputs, boots: int, seed: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Each quantity's metrics between models a and b, with bootstrap-over-replicas stderr."""
    R = len(masks)
    point = _agreement(masks, a, b, np.arange(R))
    rng = np.random.default_rng(seed)
    samples = [_agreement(masks, a, b, rng.integers(0, R, R)) for _ in range(boots)]
    return {
        q: {
            m: {
                "value": point[q][m],
                "stderr": float(np.nanstd([s[q][m] for s in samples], ddof=1)),
            }
            for m in METRICS
        }
        for q in QUANTITIES
    }


def accuracy(out: mj.ReplicaOutputs) -> dict[str, float]:
    """Mean train/test accuracy over replicas, with the stderr over replicas."""
    res = {}
    for split in ("train", "test"):
        per_replica = getattr(out, f"{split}_correct").mean(axis=1)
        res[split] = float(per_replica.mean())
        res[f"{split}_stderr"] = float(per_replica.std(ddof=1) / np.sqrt(len(per_replica)))
    return res


def run(settings: dict[str, Any]) -> dict[str, Any]:
    """Train and fit every model at every width; returns the summary (see module doc)."""
    s = settings
    ds = mnist1d_subset(s["n_train"], s["n_test"], s["seed"])
    masks = mj.subsets.sample(ds.n_train, s["replicas"], 0.5, seed=s["seed"])
    cfg = mj.TrainConfig(
        epochs=s["epochs"],
        batch_size=None,
        optimizer="sgd",
        learning_rate=s["learning_rate"],
        loss="mse",
    )
    gd = {"lr": s["learning_rate"], "steps": s["epochs"]}
    start = time.perf_counter()
    with jax.enable_x64(True):
        # in NTK parameterization the kernels do not depend on the widths
        kernels = theory.dataset_kernels(spec_for(s["widths"][0], s["depth"]), ds)
        shared = {
            "ntk_gd": theory.kernel_replicas(kernels, ds, masks, kind="ntk", **gd),
            "nngp": theory.kernel_replicas(kernels, ds, masks, kind="nngp"),
        }
    timings: dict[str, Any] = {"width_independent_kernels_s": time.perf_counter() - start}
    per_width = []
    for width in s["widths"]:
        spec = spec_for(width, s["depth"])
        t0 = time.perf_counter()
        models = dict(shared)
        models["network"] = mj.train_replicas(spec, ds, masks, cfg, seed=s["seed"])
        t1 = time.perf_counter()
        lin_cfg = dataclasses.replace(cfg, linearize=True)
        models["linearized"] = mj.train_replicas(spec, ds, masks, lin_cfg, seed=s["seed"])
        t2 = time.perf_counter()
        f0_train, f0_test = initial_outputs(spec, ds, s["seed"], len(masks))
        with jax.enable_x64(True):
            models["ntk_gd_paired"] = theory.kernel_replicas(
                kernels, ds, masks, kind="ntk", f0_train=f0_train, f0_test=f0_test, **gd
            )
        t3 = time.perf_counter()
        per_width.append(
            {
                "width": width,
                "accuracy": {name: accuracy(out) for name, out in models.items()},
                "pairs": {
                    f"{a}~{b}": compare(masks, models[a], models[b], s["bootstrap"], s["seed"])
                    for a, b in PAIRS
                },
                "seconds": {"network": t1 - t0, "linearized": t2 - t1, "kernel_paired": t3 - t2},
            }
        )
        print(f"width {width}: {json.dumps(per_width[-1]['seconds'])}", flush=True)
    timings["total_s"] = time.perf_counter() - start
    return {
        "question": "does kernel theory predict network memorization better as width grows?",
        "settings": s,
        "dataset": {"name": ds.name, "fingerprint": ds.fingerprint},
        "stderr": "bootstrap over replicas (paired resampling of replica rows)",
        "timings": timings,
        "widths": per_width,
    }


def _fmt(d: dict[str, float]) -> str:
    return f"{d['value']:.3f} ± {d['stderr']:.3f}"


def tables(summary: dict[str, Any]) -> str:
    """Markdown: one table per quantity, a row per (width, pair), then the accuracies."""
    lines = []
    for q in QUANTITIES:
        lines += [
            f"### {q.replace('_', ' ')}: agreement between models",
            "",
            "| width | model | kernel / reference | Pearson | Spearman | mean abs. diff. |",
            "|---|---|---|---|---|---|",
        ]
        for w in summary["widths"]:
            for pair, res in w["pairs"].items():
                a, b = pair.split("~")
                cells = " | ".join(_fmt(res[q][m]) for m in METRICS)
                lines.append(f"| {w['width']} | {a} | {b} | {cells} |")
        lines.append("")
    names = list(summary["widths"][0]["accuracy"])
    lines += [
        "### accuracy (mean over replicas ± stderr)",
        "",
        "| width | " + " | ".join(f"{n} train / test" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for w in summary["widths"]:
        cells = " | ".join(
            f"{w['accuracy'][n]['train']:.3f} / {w['accuracy'][n]['test']:.3f} ± "
            f"{w['accuracy'][n]['test_stderr']:.3f}"
            for n in names
        )
        lines.append(f"| {w['width']} | {cells} |")
    return "\n".join(lines) + "\n"


def write(summary: dict[str, Any], out: str) -> None:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, allow_nan=True)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(tables(summary))
    with open(os.path.join(out, "table.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["width", "model", "reference", "quantity", "metric", "value", "stderr"])
        for row in summary["widths"]:
            for pair, res in row["pairs"].items():
                for q in QUANTITIES:
                    for m in METRICS:
                        w.writerow(
                            [
                                row["width"],
                                *pair.split("~"),
                                q,
                                m,
                                res[q][m]["value"],
                                res[q][m]["stderr"],
                            ]
                        )


def parse_overrides(items: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides (VALUE parsed as YAML) to known settings only."""
    settings = dict(settings)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in settings:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY in {sorted(settings)}")
        settings[key] = yaml.safe_load(value)
    return settings


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.theory_vs_width",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="the CPU-minutes setting")
    parser.add_argument("--out", required=True, help="directory for summary.json and tables")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of config.yaml, e.g. --set widths=[64,4096]",
    )
    args = parser.parse_args(argv)
    settings = parse_overrides(args.set, load_settings("quick" if args.quick else "full"))
    summary = run(settings)
    write(summary, args.out)
    print(tables(summary))
    return summary


if __name__ == "__main__":
    main()
