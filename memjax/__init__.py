"""memjax: memorization, influence and privacy from many replicas trained in one JAX program."""

from memjax import (
    auc,
    augment,
    data,
    estimators,
    models,
    privacy,
    proxies,
    queries,
    recipes,
    relations,
    subsets,
    theory,
    tracin,
)
from memjax.config import TrainConfig
from memjax.dp import DPConfig
from memjax.family import Family, open_family
from memjax.outputs import ReplicaOutputs
from memjax.results import Study, open_study
from memjax.runtime import use_cpu_cores
from memjax.train import train_checkpoints, train_replicas

__version__ = "0.1.0"

__all__ = [
    "augment",
    "auc",
    "data",
    "estimators",
    "models",
    "privacy",
    "proxies",
    "queries",
    "recipes",
    "relations",
    "theory",
    "subsets",
    "tracin",
    "TrainConfig",
    "DPConfig",
    "ReplicaOutputs",
    "Study",
    "open_study",
    "Family",
    "open_family",
    "train_checkpoints",
    "train_replicas",
    "use_cpu_cores",
    "__version__",
]
