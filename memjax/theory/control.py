"""The kernel model of a study's architecture as a control variate for its estimators.

``kernel_control(study)`` fits, for every replica of a finished MLP study, the kernel model
``kind`` (memjax.theory.derived) on the replica's mask — with ``ntk_gd_paired`` from the
replica network's own initial outputs, so the control shares both sources of the network's
randomness, the subset and the initialization — and the same model on ``extra`` times as
many new replicas of the study's design (fresh replica ids: new masks of the same design,
new initializations drawn by the trainer's keys, hence the same distribution). The result,
a ``KernelControl``, goes to ``mj.estimators.memorization(..., control=...)`` (a train
output) or ``influence`` (a test output).
"""

from __future__ import annotations

import jax
import numpy as np

from memjax import subsets
from memjax.errors import DataError
from memjax.estimators import KernelControl
from memjax.models import MLP
from memjax.study import Study
from memjax.theory.derived import KINDS, _fit, initial_outputs
from memjax.theory.kernel_files import dataset_kernels
from memjax.theory.memorization import kernel_replicas

__all__ = ["kernel_control", "kernel_controls", "OUTPUTS"]

OUTPUTS = (
    "train_margin",
    "train_correct",
    "train_loss",
    "test_margin",
    "test_correct",
    "test_loss",
)


def _extra_ids(study: Study, extra: int) -> np.ndarray:
    """``extra`` x R replica ids after every id the study holds, starting on a block edge."""
    cfg = study.config
    block = subsets.balanced_block_size(cfg.ratio)[0] if cfg.design == "balanced" else 1
    start = -(-(int(study.rows.max()) + 1) // block) * block
    return np.arange(start, start + extra * len(study.rows))


def kernel_controls(
    study: Study,
    outputs: tuple[str, ...] = ("train_margin",),
    kind: str = "ntk_gd_paired",
    extra: int = 16,
    folds: int = 2,
) -> dict[str, KernelControl]:
    """The kernel model's ``outputs`` (ReplicaOutputs fields) on the study's replicas and on
    ``extra`` x R new ones, as control variates by output (module docstring); the kernel
    models are fit once for all outputs."""
    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown or not outputs:
        raise DataError(f"unknown outputs {unknown or outputs!r}: use some of {OUTPUTS}")
    if kind not in KINDS:
        raise DataError(f"unknown kernel model {kind!r}: use one of {KINDS}")
    if not isinstance(extra, (int, np.integer)) or extra < 1:
        raise DataError(f"extra (new replicas per study replica) must be >= 1, got {extra!r}")
    cfg = study.config
    if not isinstance(cfg.model, MLP):
        raise DataError(f"kernel controls need an MLP study, {study.name} has {cfg.model}")
    if cfg.design not in ("balanced", "fixed", "bernoulli"):
        raise DataError(
            f"{study.name}: design {cfg.design!r} has no subset estimator to control; use a "
            "balanced, fixed or bernoulli study"
        )
    fit = _fit(study, kind)
    ds = study.dataset
    ids = _extra_ids(study, extra)
    extra_masks = subsets.sample(ds.n_train, len(ids), cfg.ratio, cfg.seed, cfg.design, ids)
    with jax.enable_x64(True):
        km = dataset_kernels(cfg.model, ds)
    fitted = []
    for masks, rows in ((study.masks, study.rows), (extra_masks, ids)):
        gd = {"lr": fit["lr"], "steps": fit["steps"]} if "lr" in fit else {}
        if kind == "ntk_gd_paired":
            # the networks' initializations as the trainer draws them: in float32, outside
            # x64 (which would change the random draws)
            f0_train, f0_test = initial_outputs(cfg.model, ds, cfg.seed, rows)
            gd |= {"f0_train": f0_train, "f0_test": f0_test}
        with jax.enable_x64(True):
            kind_fit = kind.split("_")[0]
            fitted.append(kernel_replicas(km, ds, masks, kind=kind_fit, replica_ids=rows, **gd))
    blocks = subsets.block_ids(ids, cfg.ratio, cfg.design)
    return {
        output: KernelControl(
            values=np.asarray(getattr(fitted[0], output), np.float64),
            extra_masks=extra_masks,
            extra_values=np.asarray(getattr(fitted[1], output), np.float64),
            extra_blocks=blocks,
            folds=folds,
        )
        for output in outputs
    }


def kernel_control(
    study: Study,
    output: str = "train_margin",
    kind: str = "ntk_gd_paired",
    extra: int = 16,
    folds: int = 2,
) -> KernelControl:
    """The kernel model's ``output`` as a control variate (``kernel_controls`` for one)."""
    return kernel_controls(study, (output,), kind, extra, folds)[output]
