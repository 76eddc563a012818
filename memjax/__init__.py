"""memjax: memorization, influence and privacy from many replicas trained in one JAX program."""

from memjax import data, errors, estimators, models, privacy, subsets, theory
from memjax._version import __version__
from memjax.analysis import proxies, relations, tracin
from memjax.estimators import auc
from memjax.outputs import ReplicaOutputs
from memjax.study import Family, Study, open_family, open_study
from memjax.train import (
    DPConfig,
    TrainConfig,
    augment,
    queries,
    recipes,
    train_checkpoints,
    train_replicas,
    use_cpu_cores,
)

__all__ = [
    "augment",
    "auc",
    "data",
    "errors",
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
