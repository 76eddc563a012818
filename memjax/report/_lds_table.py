"""The LDS table of ``memjax lds``: attribution estimators from one study, scored on an
evaluation study (design "eval") of the same dataset, versus the replicas they used.

Estimators (attributions (n_train, n_test) of the evaluation output, the test margin by
default):

* ``influence``: Feldman & Zhang's subset influence (IN-minus-OUT mean), memjax.estimators;
* ``datamodels-ridge``, ``datamodels-lasso``: memjax.estimators.datamodels, lam by cross-validation;
* ``kernel-ntk``: the representer weights of kernel ridge regression with the architecture's
  analytic NTK on the full training set (MLPs): with alpha = (K + ridge I)^-1 Y (n, C), train
  i's contribution to test j's margin is K(x_j, x_i) (alpha_{i, y_j} - alpha_{i, c_j}), c_j
  the kernel predictor's runner-up class for x_j. It uses no replicas. Chosen over the
  leave-one-out change of the predictor because it is exact for the kernel model's linear
  output and costs one solve;
* ``tracin``: TracIn's train -> test attributions (memjax.analysis.tracin) averaged over the study's
  first 1, 2, 4 and 8 replicas, retrained with checkpoints (``train_checkpoints``: a
  replica is a function of (seed, id, mask), so these are the study's own runs; the row's
  note gives the largest difference of the retrained outputs from the stored ones). The
  checkpoints are the study's recorded epochs, or TRACIN_CHECKPOINTS evenly spaced ones
  when it recorded none;
* ``random``: i.i.d. normal attributions, the floor every estimator must beat.

Replica-based estimators are scored on the first 1/8, 1/4, 1/2 and all of the study's
finished replicas (whole blocks), the cost curve of TRAK's paper.
"""

from __future__ import annotations

import csv
import os
from dataclasses import replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from memjax.analysis.tracin import tracin
from memjax.errors import DataError
from memjax.estimators import check_n_boot, datamodels, influence, lds
from memjax.jsonio import json_text, strict_json
from memjax.models import MLP
from memjax.study import Study
from memjax.train import train_checkpoints

__all__ = [
    "ESTIMATORS",
    "FRACTIONS",
    "kernel_attributions",
    "lds_table",
    "tracin_rows",
    "write_table",
]

ESTIMATORS = ("influence", "datamodels-ridge", "datamodels-lasso", "kernel-ntk", "tracin", "random")
FRACTIONS = (0.125, 0.25, 0.5, 1.0)
OUTPUTS = ("test_margin", "test_correct", "test_loss")
TRACIN_REPLICAS = (1, 2, 4, 8)
TRACIN_CHECKPOINTS = 4
KERNEL_RIDGE = 1e-3  # relative to the mean training diagonal of the kernel


def kernel_attributions(spec: MLP, ds, ridge: float = KERNEL_RIDGE) -> np.ndarray:
    """Representer weights (n_train, n_test) of NTK ridge regression on the whole training
    set for each test example's margin (module docstring)."""
    from memjax.theory.kernel_files import dataset_kernels

    k_tt, k_st = dataset_kernels(spec, ds).train_test("ntk")
    k_tt, k_st = jnp.asarray(k_tt), jnp.asarray(k_st)
    y = jax.nn.one_hot(ds.y_train, ds.num_classes, dtype=k_tt.dtype)
    scale = ridge * jnp.mean(jnp.diagonal(k_tt))
    alpha = jnp.linalg.solve(k_tt + scale * jnp.eye(len(k_tt), dtype=k_tt.dtype), y)
    f = k_st @ alpha  # (m, C)
    true = jnp.asarray(ds.y_test)
    runner_up = jnp.argmax(f.at[jnp.arange(len(f)), true].set(-jnp.inf), axis=1)
    diff = alpha[:, true] - alpha[:, runner_up]  # (n, m)
    return np.asarray(k_st.T * diff, np.float64)


def tracin_rows(study: Study, output: str, score) -> list[dict[str, Any]]:
    """The ``tracin`` rows: ``score`` (attributions -> LDS) of TracIn averaged over the
    study's first 1, 2, 4, 8 replicas (module docstring)."""
    cfg = study.config.train
    if not cfg.record_every:
        cfg = replace(cfg, record_every=max(1, cfg.epochs // TRACIN_CHECKPOINTS))
    k = min(max(TRACIN_REPLICAS), len(study.rows))
    rows = study.rows[:k]
    spec, ds = study.config.model, study.dataset
    ckpt = train_checkpoints(
        spec,
        ds,
        study.masks[:k],
        cfg,
        seed=study.config.seed,
        replica_ids=rows,
        max_subset_size=int(study.meta["max_subset_size"]),
    )
    stored = getattr(study.outputs, output)[:k].astype(np.float64)
    drift = float(np.max(np.abs(getattr(ckpt.outputs, output) - stored)))
    per_replica = tracin(spec, ds, cfg, ckpt, output)  # (k, n, m)
    note = (
        f"checkpoints at epochs {ckpt.epochs[1:].tolist()}; retrained replicas' {output} "
        f"differ from the study's by at most {drift:.1e}"
    )
    counts = [c for c in TRACIN_REPLICAS if c <= k]
    return [_row("tracin", c, score(per_replica[:c].mean(axis=0)), note) for c in counts]


def _prefix(study: Study, fraction: float) -> int:
    """How many of the study's first finished replicas make ``fraction`` in whole blocks."""
    r = len(study.rows)
    want = max(2, int(round(fraction * r)))
    if study.blocks is None:
        return min(want, r)
    ends = np.flatnonzero(np.r_[study.blocks[1:] != study.blocks[:-1], True]) + 1
    return int(ends[np.argmin(np.abs(ends - want))])


def _row(name: str, replicas: int, score=None, note: str = "") -> dict[str, Any]:
    keys = ("value", "ci_low", "ci_high")
    values = {k: (None if score is None else float(getattr(score, k))) for k in keys}
    return {"estimator": name, "replicas": replicas, **values, "note": note}


def lds_table(
    study: Study,
    eval_study: Study,
    output: str = "test_margin",
    estimators: tuple[str, ...] = ESTIMATORS,
    fractions: tuple[float, ...] = FRACTIONS,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows (estimator, replicas, value, ci_low, ci_high, note) of the LDS table."""
    if output not in OUTPUTS:
        raise DataError(f"unknown output {output!r}: use one of {OUTPUTS}")
    unknown = set(estimators) - set(ESTIMATORS)
    if unknown:
        raise DataError(f"unknown estimators {sorted(unknown)}: use some of {ESTIMATORS}")
    check_n_boot(n_boot)
    if study.meta["dataset_fingerprint"] != eval_study.meta["dataset_fingerprint"]:
        raise DataError(
            f"{eval_study.path} was trained on another dataset than {study.path}: an "
            "evaluation study must share the training study's dataset"
        )
    if study.config.design in ("all", "eval", "loo"):
        raise DataError(
            f"{study.path}: design {study.config.design!r} gives no subset-based "
            "attributions; use a balanced, fixed or bernoulli study"
        )
    masks_eval, values_eval = eval_study.eval_subsets(output)
    eval_blocks = None  # each evaluation subset is its own unit (its seeds are averaged)

    def score(attr: np.ndarray):
        return lds(attr, masks_eval, values_eval, eval_blocks, n_boot=n_boot, seed=seed)

    values = np.asarray(getattr(study.outputs, output), np.float64)
    rows = []
    for r in sorted({_prefix(study, f) for f in fractions}):
        masks, blocks = study.masks[:r], None if study.blocks is None else study.blocks[:r]
        if "influence" in estimators:
            rows.append(_row("influence", r, score(influence(masks, values[:r], blocks).value)))
        for method in ("ridge", "lasso"):
            if f"datamodels-{method}" in estimators:
                try:
                    fit = datamodels(masks, values[:r], method=method, blocks=blocks)
                    rows.append(_row(f"datamodels-{method}", r, score(fit.weights)))
                except ValueError as err:  # too few replicas or blocks for cross-validation
                    rows.append(_row(f"datamodels-{method}", r, note=f"not available: {err}"))
    if "kernel-ntk" in estimators:
        spec = study.config.model
        if not isinstance(spec, MLP):
            note = f"not available: analytic kernels exist for MLPs, not {type(spec).__name__}"
            rows.append(_row("kernel-ntk", 0, note=note))
        elif output != "test_margin":
            rows.append(_row("kernel-ntk", 0, note="not available: kernel weights are margins'"))
        else:
            attr = kernel_attributions(spec, study.dataset)
            rows.append(_row("kernel-ntk", 0, score(attr), "representer weights, no replicas"))
    if "tracin" in estimators:
        rows.extend(tracin_rows(study, output, score))
    if "random" in estimators:
        attr = np.random.default_rng(seed).normal(size=(masks_eval.shape[1], values_eval.shape[1]))
        rows.append(_row("random", 0, score(attr), "i.i.d. normal attributions"))
    return rows


def write_table(rows: list[dict[str, Any]], out: str, about: dict[str, Any]) -> tuple[str, str]:
    """lds.json (``about`` and the rows) and lds.csv under ``out``; returns both paths."""
    os.makedirs(out, exist_ok=True)
    path_json, path_csv = os.path.join(out, "lds.json"), os.path.join(out, "lds.csv")
    with open(path_json, "w") as f:
        f.write(json_text(strict_json({**about, "rows": rows}), indent=2))
    with open(path_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path_json, path_csv
