"""Control-variate savings versus width: the paired NTK model as a control for memorization.

Per width, an MLP in NTK parameterization trained by full-batch gradient descent on MSE
(the regime where the network follows its kernel model as width grows) on a balanced
design; the control is ``memjax.theory.kernel_control`` (the analytic NTK's gradient-descent
dynamics from each replica's own initial outputs, on its own mask, and on ``extra`` x R new
replicas for the control's mean). For correctness (Feldman-Zhang memorization, controlled
by the kernel's correctness) and margin (counterfactual memorization, controlled by the
kernel's margin):

* ``variance_ratio``: mean over examples of the controlled estimator's variance over the
  mean of the plain estimator's (same replicas): the fraction of replicas the control
  needs for the plain estimator's average standard error; ``replicas_saved`` = 1 - it;
* ``shift``: mean over examples of controlled minus plain estimate (both unbiased for the
  same estimand, so its interval should hold 0);

each with a percentile bootstrap interval over examples (the summary's unit).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memjax.estimators import memorization
from memjax.study import Study
from memjax.theory.control import kernel_controls

__all__ = ["OUTPUTS", "control_rows", "bootstrap_mean"]

OUTPUTS = {"correctness": "train_correct", "margin": "train_margin"}


def bootstrap_mean(x: np.ndarray, y: np.ndarray | None, n_boot: int, seed: int) -> dict[str, float]:
    """mean(x) (or mean(x) / mean(y)) over examples with a 95% percentile bootstrap interval
    over examples (NaN entries dropped pairwise)."""
    keep = np.isfinite(x) if y is None else np.isfinite(x) & np.isfinite(y)
    x = x[keep]
    y = None if y is None else y[keep]

    def stat(idx: np.ndarray) -> np.ndarray:
        top = x[idx].mean(-1)
        return top if y is None else top / y[idx].mean(-1)

    rng = np.random.default_rng(seed)
    boot = stat(rng.integers(0, len(x), (n_boot, len(x))))
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"value": float(stat(np.arange(len(x)))), "low": float(low), "high": float(high)}


def control_rows(study: Study, extra: int, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """One row per output of ``study`` (module docstring)."""
    rows = []
    controls = kernel_controls(study, tuple(OUTPUTS.values()), extra=extra)
    for name, output in OUTPUTS.items():
        control = controls[output]
        values = np.asarray(getattr(study.outputs, output))
        cv = memorization(study.masks, values, study.blocks, control=control)
        plain = memorization(study.masks, values, study.blocks)
        ratio = bootstrap_mean(cv.stderr**2, plain.stderr**2, n_boot, seed)
        saved = {k: 1 - ratio[k] for k in ("value", "high", "low")}
        saved = {"value": saved["value"], "low": saved["high"], "high": saved["low"]}
        corr = np.array(
            [np.corrcoef(values[:, i], control.values[:, i])[0, 1] for i in range(values.shape[1])]
        )
        rows.append(
            {
                "output": name,
                "replicas": int(len(study.rows)),
                "extra_replicas": int(len(control.extra_masks)),
                "variance_ratio": ratio,
                "replicas_saved": saved,
                "shift": bootstrap_mean(
                    np.asarray(cv.value) - np.asarray(plain.value), None, n_boot, seed
                ),
                "replica_correlation": bootstrap_mean(corr, None, n_boot, seed),
                "mean_beta": float(np.nanmean(cv.beta)),
            }
        )
    return rows
