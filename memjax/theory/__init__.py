"""Infinite-width and empirical kernels of memjax's models, and kernel-regression "replicas".

* ``kernel(spec)``: closed-form NNGP/NTK of an MLP spec (neural-tangents conventions);
* ``empirical_ntk(apply_fn, params, x1, x2)``: the finite-width NTK of given weights;
* ``kernel_ridge``, ``gradient_descent``, ``gradient_flow``, ``krr_loo``: kernel regression,
  including the exact dynamics of a linearized network trained by memjax on MSE;
* ``kernel_replicas``: kernel models on the engine's subset masks, as ReplicaOutputs;
* ``kernel_study``: those models on a study's masks, stored as a derived study;
* ``kernel_control``/``kernel_controls``: those models as control variates for a study's
  memorization and influence (memjax.estimators (control variates));
* ``KernelMatrices``, ``dataset_kernels``, ``load_kernel_file``: the train/test kernel
  matrices of a dataset, from a spec or from a precomputed file.
"""

from memjax.theory.analytic import kernel
from memjax.theory.control import kernel_control, kernel_controls
from memjax.theory.derived import kernel_study, source_fingerprint
from memjax.theory.empirical import empirical_ntk
from memjax.theory.kernel_files import (
    KernelMatrices,
    dataset_kernels,
    load_kernel_file,
    save_kernel_file,
)
from memjax.theory.memorization import kernel_replicas
from memjax.theory.regression import gradient_descent, gradient_flow, kernel_ridge, krr_loo

__all__ = [
    "kernel",
    "empirical_ntk",
    "kernel_ridge",
    "krr_loo",
    "gradient_descent",
    "gradient_flow",
    "kernel_replicas",
    "kernel_study",
    "kernel_control",
    "kernel_controls",
    "source_fingerprint",
    "KernelMatrices",
    "dataset_kernels",
    "load_kernel_file",
    "save_kernel_file",
]
