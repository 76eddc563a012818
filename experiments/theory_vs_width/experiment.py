"""Does kernel theory predict which examples a network memorizes, and better as width grows?

At each width, MLPs in NTK parameterization (ReLU, W_std = sqrt 2, b_std = 0.1) and their
linearizations are trained by memjax on the same subset masks with full-batch gradient
descent on MSE (one step per epoch). Beside them, kernel "models" are fit on the same masks:

* ``ntk_gd_paired``: the analytic NTK's gradient-descent dynamics (same learning rate and
  steps, memjax's mean loss) started from each replica network's own initial outputs f0.
  An infinitely wide network is exactly this (Lee et al. 2019); at finite width the NTK
  differs from the analytic one and moves during training, which is what is measured.
* ``ntk_gd``: the same from f0 = 0: the mean predictor over initializations (the outputs are
  linear in f0, whose mean is 0), width independent. Its memorization is that of the mean
  predictor (the correctness of argmax E_init[f]), not the mean over initializations of
  the memorization (which would average the correctness of each initialization's model).
* ``nngp``: the NNGP posterior mean, kernel ridge with a 1e-6 jitter (width independent).

Memorization (Feldman & Zhang, from correctness) of every training example is estimated
from each model's replicas. Per width, the tables give the Pearson and Spearman correlation
and the mean absolute difference between the memorization of the network (or linearized
network) and of a kernel model, and the same for the accuracy on each test example (mean
over replicas). Errors: bootstrap over the design's blocks (complementary pairs of replicas
under the balanced design at ratio 1/2, the unit of independence: whole blocks resampled
with replacement, the same rows for both models so the pairing is kept; examples never IN
or never OUT in a resample are dropped from that resample), as a standard error and a 95%
percentile interval.

``run`` returns the summary: settings, timings, every agreement number, and each model's
per-example memorization (network, linearized and paired NTK per width; the
width-independent kernel models once), so figures can draw the examples themselves.
"""

from __future__ import annotations

import dataclasses
import json
import time
from importlib import resources
from typing import Any

import jax
import numpy as np
import yaml

import memjax as mj
from experiments.theory_vs_width.agreement import PAIRS, accuracy, compare
from memjax import theory
from memjax.models import MLP, build
from memjax.train import replica_init_keys

__all__ = ["load_settings", "mnist1d_subset", "spec_for", "initial_outputs", "run"]

WIDTH_DEPENDENT = ("network", "linearized", "ntk_gd_paired")
RATIO, DESIGN = 0.5, "balanced"


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


def per_example_memorization(masks: np.ndarray, out: mj.ReplicaOutputs) -> list[float | None]:
    """Each training example's memorization by one model (None where undefined)."""
    value = mj.estimators.memorization(masks, out.train_correct).value
    return [None if not np.isfinite(v) else float(v) for v in value]


def run(settings: dict[str, Any]) -> dict[str, Any]:
    """Train and fit every model at every width; returns the summary (see module doc)."""
    s = settings
    ds = mnist1d_subset(s["n_train"], s["n_test"], s["seed"])
    masks = mj.subsets.sample(ds.n_train, s["replicas"], RATIO, seed=s["seed"], design=DESIGN)
    blocks = mj.subsets.block_ids(np.arange(s["replicas"]), RATIO, DESIGN)
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
                    f"{a}~{b}": compare(
                        masks, models[a], models[b], s["bootstrap"], s["seed"], blocks
                    )
                    for a, b in PAIRS
                },
                "seconds": {"network": t1 - t0, "linearized": t2 - t1, "kernel_paired": t3 - t2},
                "memorization": {
                    name: per_example_memorization(masks, models[name]) for name in WIDTH_DEPENDENT
                },
            }
        )
        print(f"width {width}: {json.dumps(per_width[-1]['seconds'])}", flush=True)
    timings["total_s"] = time.perf_counter() - start
    return {
        "question": "does kernel theory predict network memorization better as width grows?",
        "settings": s,
        "dataset": {"name": ds.name, "fingerprint": ds.fingerprint},
        "stderr": "bootstrap over blocks of replicas (paired resampling of whole blocks); "
        "ci_low/ci_high: its 95% percentile interval",
        "timings": timings,
        "widths": per_width,
        "examples": {
            "train_label": ds.y_train.tolist(),
            "memorization": {
                name: per_example_memorization(masks, out) for name, out in shared.items()
            },
        },
    }
