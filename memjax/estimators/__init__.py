"""Estimators: pure functions of masks (R, n) and replica outputs that return a value, its
standard error and interval (memorization, influence, C-score, LOO, datamodels, LDS, control
variates, AUC)."""

from memjax.estimators import auc
from memjax.estimators._control import (
    MIN_BLOCKS_PER_FOLD,
    MIN_REPLICAS_PER_FOLD,
    ControlledEstimate,
    Estimator,
    KernelControl,
    controlled,
    fold_ids,
)
from memjax.estimators._core import (
    Estimate,
    check_blocks,
    check_masks,
)
from memjax.estimators._datamodels import (
    GRID_SIZE,
    LASSO_MAX_ITER,
    LASSO_TOL,
    METHODS,
    Datamodels,
    cv_folds,
    datamodels,
)
from memjax.estimators._inout import (
    COUNTERFACTUAL_MEASURES,
    c_score,
    counterfactual_memorization,
    held_out_accuracy,
    influence,
    masked_mean,
    memorization,
    replica_mean,
    top_influence_pairs,
)
from memjax.estimators._lds import (
    LDS,
    N_BOOT,
    check_n_boot,
    lds,
    seed_average,
    spearman_columns,
)
from memjax.estimators._loo import (
    loo_influence,
    loo_memorization,
    loo_roles,
)

__all__ = [
    "COUNTERFACTUAL_MEASURES",
    "ControlledEstimate",
    "Datamodels",
    "Estimate",
    "Estimator",
    "GRID_SIZE",
    "KernelControl",
    "LASSO_MAX_ITER",
    "LASSO_TOL",
    "LDS",
    "METHODS",
    "MIN_BLOCKS_PER_FOLD",
    "MIN_REPLICAS_PER_FOLD",
    "N_BOOT",
    "auc",
    "c_score",
    "check_blocks",
    "check_masks",
    "check_n_boot",
    "controlled",
    "counterfactual_memorization",
    "cv_folds",
    "datamodels",
    "fold_ids",
    "held_out_accuracy",
    "influence",
    "lds",
    "loo_influence",
    "loo_memorization",
    "loo_roles",
    "masked_mean",
    "memorization",
    "replica_mean",
    "seed_average",
    "spearman_columns",
    "top_influence_pairs",
]
