"""ReplicaOutputs: what a replica (network or kernel "model") leaves behind for the estimators.

Everything downstream of training reads these arrays only; they are the contract between the
trainer, the kernel-regression models of memjax.theory, the store and the estimators.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ReplicaOutputs",
    "per_example_metrics",
    "TRAJECTORY_FIELDS",
    "FINAL_FIELDS",
    "PRESENTATION_FIELDS",
    "VIEW_FIELDS",
]

FINAL_FIELDS = (
    "train_correct",
    "train_margin",
    "train_loss",
    "test_correct",
    "test_margin",
    "test_loss",
)
# margins under LiRA's augmented queries (TrainConfig.queries): float32 (R, n, K) / (R, m, K)
VIEW_FIELDS = ("train_margin_views", "test_margin_views")
# counted by the trainer at every presentation of every training example: int arrays (R, n)
PRESENTATION_FIELDS = ("forgetting_events", "first_learned")
# recorded at initialization and every `record_every` epochs for every training example:
# arrays (R, T, n)
TRAJECTORY_FIELDS = ("traj_correct", "traj_margin", "traj_loss", "traj_el2n", "traj_grad_sq")


@dataclass(frozen=True)
class ReplicaOutputs:
    """Per-replica, per-example results (numpy). Row j belongs to replica ``replica_ids[j]``.

    ``*_margin`` is the true-class logit minus logsumexp of the other logits
    (= log(p_y / (1 - p_y))), ``*_loss`` the training loss of that example, ``*_correct``
    whether the argmax is the label.

    ``forgetting_events`` and ``first_learned`` (int32 (R, n); from trained networks only)
    follow Toneva et al. (2019): a presentation is an example's appearance in a minibatch,
    judged right or wrong by that step's forward pass, before its update.
    ``forgetting_events`` counts correct -> incorrect transitions between consecutive
    presentations. ``first_learned`` is the epoch index e (0 = the first epoch) of the
    presentation from which the example is right at every presentation, i.e. it was learned
    after e epochs of training; ``epochs`` (one past the last epoch index, a censored "later
    than the end") if it is wrong at its last presentation. Examples a replica never
    presented (outside its subset) have 0 events and ``first_learned`` -1.

    ``traj_*`` (optional, shape (R, T, n)) hold correctness, margin and loss of every training
    example at each epoch in ``record_epochs`` (0 = initialization, then every
    ``record_every`` epochs), plus EL2N (||softmax - onehot||_2) and, if requested, the
    squared per-example gradient norm; ``record_lr`` is the learning rate at each recorded
    epoch (for TracIn-style sums).

    ``train_margin_views`` / ``test_margin_views`` (optional, (R, n, K) / (R, m, K)) are
    the margins under the K views of ``TrainConfig.queries`` (``memjax.train.queries``), in its
    view order; the identity view equals ``*_margin``.
    """

    replica_ids: np.ndarray
    train_correct: np.ndarray
    train_margin: np.ndarray
    train_loss: np.ndarray
    test_correct: np.ndarray
    test_margin: np.ndarray
    test_loss: np.ndarray
    forgetting_events: np.ndarray | None = None
    first_learned: np.ndarray | None = None
    traj_correct: np.ndarray | None = None
    traj_margin: np.ndarray | None = None
    traj_loss: np.ndarray | None = None
    traj_el2n: np.ndarray | None = None
    traj_grad_sq: np.ndarray | None = None
    record_epochs: np.ndarray | None = None
    record_lr: np.ndarray | None = None
    train_margin_views: np.ndarray | None = None
    test_margin_views: np.ndarray | None = None

    @property
    def replicas(self) -> int:
        return len(self.replica_ids)

    def arrays(self) -> dict[str, np.ndarray]:
        """All non-None replica-indexed arrays by name (replica axis first)."""
        names = (
            "replica_ids",
            *FINAL_FIELDS,
            *PRESENTATION_FIELDS,
            *TRAJECTORY_FIELDS,
            *VIEW_FIELDS,
        )
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}


def margin_from_logits(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """True-class logit minus logsumexp over the other classes, computed stably."""
    true = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    others = jnp.where(jax.nn.one_hot(labels, logits.shape[-1], dtype=bool), -jnp.inf, logits)
    return true - jax.nn.logsumexp(others, axis=-1)


def loss_from_logits(
    logits: jax.Array, labels: jax.Array, loss: str, label_smoothing: float = 0.0
) -> jax.Array:
    """Per-example loss (logits (..., K), labels (...)): softmax cross-entropy, or
    0.5 * ||logits - onehot||^2. ``label_smoothing`` = a > 0 (xent only; the trainer passes
    it for training steps only, evaluated losses are unsmoothed) is the cross-entropy
    against the target (1 - a) onehot + a / K, as torch's ``label_smoothing``."""
    if loss == "xent":
        logp = jax.nn.log_softmax(logits)
        nll = -jnp.take_along_axis(logp, labels[..., None], -1)[..., 0]
        if not label_smoothing:
            return nll
        return (1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(logp, axis=-1)
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return 0.5 * jnp.sum((logits - onehot) ** 2, axis=-1)


def per_example_metrics(logits: jax.Array, labels: jax.Array, loss: str) -> dict[str, jax.Array]:
    """correct / margin / loss / el2n of each example from its logits."""
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    return {
        "correct": jnp.argmax(logits, axis=-1) == labels,
        "margin": margin_from_logits(logits, labels),
        "loss": loss_from_logits(logits, labels, loss),
        "el2n": jnp.linalg.norm(jax.nn.softmax(logits) - onehot, axis=-1),
    }
