"""Cheap memorization proxies, read from the outputs and trajectories the trainer records.

Each proxy is first a per-replica, per-example number (R, n), then averaged over the
replicas that trained on the example (its IN replicas) with a standard error, via
``estimators.masked_mean``. Proxies are what one would compute from a single training run,
so only IN replicas count: on OUT replicas the example is a test point.

Forgetting events and learning time are counted by the trainer at every presentation of an
example, as Toneva et al. (2019) define them (``ReplicaOutputs.forgetting_events`` and
``first_learned``; always there for trained networks). Trajectory proxies need
``TrainConfig(record_every=k)``: recordings happen at initialization (epoch 0) and after
epochs k, 2k, ... (``outputs.record_epochs``); GraNd and self-influence also need
``record_grad_norm=True``. The recorded-epoch approximations of forgetting events and
learning time stay available as ``forgetting_events_recorded`` / ``learning_time_recorded``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from memjax.errors import DataError
from memjax.estimators import Estimate, masked_mean
from memjax.outputs import ReplicaOutputs

__all__ = [
    "EARLY_FRACTION",
    "final_loss",
    "confidence",
    "margin",
    "learning_epochs",
    "learning_time",
    "learning_time_recorded",
    "forgetting_counts",
    "forgetting_events",
    "forgetting_events_recorded",
    "early_epoch_index",
    "el2n",
    "grand",
    "self_influence",
    "all_proxies",
]

EARLY_FRACTION = 0.1  # Paul et al. (2021) score at epoch 20 of 200


def final_loss(
    masks: np.ndarray, outputs: ReplicaOutputs, blocks: np.ndarray | None = None
) -> Estimate:
    """Training loss at the end of training."""
    return masked_mean(masks, outputs.train_loss, blocks)


def confidence(
    masks: np.ndarray, outputs: ReplicaOutputs, blocks: np.ndarray | None = None
) -> Estimate:
    """Softmax probability of the label at the end: sigmoid(margin), as margin = logit(p_y)."""
    return masked_mean(
        masks, 1.0 / (1.0 + np.exp(-outputs.train_margin.astype(np.float64))), blocks
    )


def margin(
    masks: np.ndarray, outputs: ReplicaOutputs, blocks: np.ndarray | None = None
) -> Estimate:
    """Logit-scaled confidence log(p_y / (1 - p_y)) at the end of training."""
    return masked_mean(masks, outputs.train_margin, blocks)


def _trajectory(outputs: ReplicaOutputs, name: str, masks: np.ndarray) -> np.ndarray:
    traj = getattr(outputs, name)
    if traj is None or outputs.record_epochs is None:
        need = "record_grad_norm=True" if name == "traj_grad_sq" else "record_every > 0"
        raise DataError(f"outputs have no {name}: train with TrainConfig({need})")
    r, n = masks.shape
    if traj.ndim != 3 or traj.shape[0] != r or traj.shape[2] != n:
        raise DataError(f"{name} must be (replicas={r}, recordings, n={n}), got {traj.shape}")
    if traj.shape[1] != len(outputs.record_epochs):
        raise DataError(
            f"{name} has {traj.shape[1]} recordings but record_epochs has "
            f"{len(outputs.record_epochs)}"
        )
    return traj


def _presented(outputs: ReplicaOutputs, name: str, masks: np.ndarray) -> np.ndarray:
    """A per-presentation count (R, n), checked against the masks."""
    value = getattr(outputs, name)
    if value is None:
        raise DataError(
            f"outputs have no {name}: it is counted by memjax.train_replicas while training "
            "(kernel models and stores written before it existed lack it)"
        )
    if value.shape != masks.shape:
        raise DataError(f"{name} must be (replicas, n) = {masks.shape}, got {value.shape}")
    return value


def _presented_in(masks: np.ndarray, outputs: ReplicaOutputs) -> np.ndarray:
    """IN replicas that presented the example at least once (with ``drop_last`` an IN
    example can miss every epoch's kept batches); proxies average over these."""
    return masks & (_presented(outputs, "first_learned", masks) >= 0)


def learning_time(
    masks: np.ndarray, outputs: ReplicaOutputs, blocks: np.ndarray | None = None
) -> Estimate:
    """Mean over IN replicas of ``first_learned`` (Toneva et al. 2019): the number of epochs
    trained before the presentation from which the example is always classified right
    (censored at the number of epochs when wrong at its last presentation)."""
    first = _presented(outputs, "first_learned", masks)
    return masked_mean(_presented_in(masks, outputs), first.astype(np.float64), blocks)


def forgetting_events(
    masks: np.ndarray, outputs: ReplicaOutputs, blocks: np.ndarray | None = None
) -> Estimate:
    """Mean over IN replicas of the correct -> incorrect transitions between consecutive
    presentations (Toneva et al. 2019), counted in training. As there, an example's first
    presentation follows an implicit "not yet learned", so it adds no event; unlike there,
    examples wrong at their last presentation count the events they had (not infinity):
    ``learning_time`` ranks them last instead."""
    events = _presented(outputs, "forgetting_events", masks)
    return masked_mean(_presented_in(masks, outputs), events.astype(np.float64), blocks)


def learning_epochs(traj_correct: np.ndarray, record_epochs: np.ndarray) -> np.ndarray:
    """Per replica and example (R, n): first recorded epoch from which it stays correct.

    Never-learned examples (incorrect at the last recording) get the next recording epoch
    after the last one (record_epochs[-1] + spacing), i.e. they are censored at "later than
    the end" and stay finite, so averages over replicas remain defined.
    """
    correct = np.asarray(traj_correct, bool)
    epochs = np.asarray(record_epochs)
    stays = np.flip(np.logical_and.accumulate(np.flip(correct, axis=1), axis=1), axis=1)
    first = np.argmax(stays, axis=1)
    spacing = epochs[-1] - epochs[-2] if len(epochs) > 1 else max(epochs[0], 1)
    return np.where(stays[:, -1], epochs[first], epochs[-1] + spacing).astype(np.float64)


def learning_time_recorded(
    masks: np.ndarray, outputs: ReplicaOutputs, blocks: np.ndarray | None = None
) -> Estimate:
    """Recorded-epoch approximation of ``learning_time``: mean over IN replicas of
    ``learning_epochs`` of the recordings (in epochs)."""
    correct = _trajectory(outputs, "traj_correct", masks)
    return masked_mean(masks, learning_epochs(correct, outputs.record_epochs), blocks)


def forgetting_counts(traj_correct: np.ndarray) -> np.ndarray:
    """Per replica and example (R, n): correct -> incorrect transitions between consecutive
    recordings (T, axis 1). Unlike Toneva et al., never-learned examples count 0 (not
    infinity); ``learning_epochs`` ranks those instead."""
    c = np.asarray(traj_correct, bool)
    return (c[:, :-1] & ~c[:, 1:]).sum(axis=1).astype(np.float64)


def forgetting_events_recorded(
    masks: np.ndarray, outputs: ReplicaOutputs, blocks: np.ndarray | None = None
) -> Estimate:
    """Recorded-epoch approximation of ``forgetting_events``: mean over IN replicas of the
    transitions between consecutive recordings (initialization included), which misses
    every forgetting that is undone before the next recording."""
    return masked_mean(
        masks, forgetting_counts(_trajectory(outputs, "traj_correct", masks)), blocks
    )


def early_epoch_index(record_epochs: np.ndarray, epoch: int | None = None) -> int:
    """Index of the recording used for "early" scores (EL2N, GraNd).

    ``epoch=None``: Paul et al.'s early epoch, the first recording after initialization at
    or after EARLY_FRACTION of the last recorded epoch (initialization itself only if it is
    the sole recording). An explicit epoch must be one of the recorded epochs; 0 scores at
    initialization.
    """
    epochs = np.asarray(record_epochs)
    if epoch is None:
        early = (epochs > 0) & (epochs >= EARLY_FRACTION * epochs[-1])
        return int(np.argmax(early)) if early.any() else 0
    hits = np.flatnonzero(epochs == epoch)
    if not len(hits):
        raise DataError(f"epoch {epoch} was not recorded; recorded epochs: {epochs.tolist()}")
    return int(hits[0])


def el2n(
    masks: np.ndarray,
    outputs: ReplicaOutputs,
    epoch: int | None = None,
    blocks: np.ndarray | None = None,
) -> Estimate:
    """EL2N (Paul et al. 2021): ||softmax - onehot||_2 at an early epoch."""
    traj = _trajectory(outputs, "traj_el2n", masks)
    return masked_mean(masks, traj[:, early_epoch_index(outputs.record_epochs, epoch)], blocks)


def grand(
    masks: np.ndarray,
    outputs: ReplicaOutputs,
    epoch: int | None = None,
    blocks: np.ndarray | None = None,
) -> Estimate:
    """GraNd (Paul et al. 2021): per-example loss-gradient norm (all parameters), early."""
    traj = _trajectory(outputs, "traj_grad_sq", masks)
    return masked_mean(
        masks, np.sqrt(traj[:, early_epoch_index(outputs.record_epochs, epoch)]), blocks
    )


def self_influence(
    masks: np.ndarray, outputs: ReplicaOutputs, blocks: np.ndarray | None = None
) -> Estimate:
    """TracIn self-influence (Pruthi et al. 2020, TracInCP): sum over the recorded
    checkpoints after training began (epochs k, 2k, ...) of learning rate x squared
    per-example gradient norm. The initialization recording (epoch 0) is left out, so each
    stretch of k epochs counts once, through the checkpoint at its end."""
    traj = _trajectory(outputs, "traj_grad_sq", masks)
    if outputs.record_lr is None or np.shape(outputs.record_lr) != (traj.shape[1],):
        raise DataError(
            f"self-influence needs record_lr, the learning rate of each of the {traj.shape[1]} "
            f"recordings; got {outputs.record_lr!r}"
        )
    lr = np.where(np.asarray(outputs.record_epochs) > 0, outputs.record_lr, 0.0)
    return masked_mean(masks, np.einsum("t,rtn->rn", lr, traj.astype(np.float64)), blocks)


EARLY_PROXIES = ("el2n", "grand")
FINAL_PROXIES: dict[str, Callable[[np.ndarray, ReplicaOutputs], Estimate]] = {
    "loss": final_loss,
    "confidence": confidence,
    "margin": margin,
}
# counted at every presentation: name -> (what it reads, function)
PRESENTATION_PROXIES = {
    "learning_time": (("first_learned",), learning_time),
    "forgetting_events": (("forgetting_events", "first_learned"), forgetting_events),
}
# name -> (what it reads besides record_epochs, function)
TRAJECTORY_PROXIES = {
    "learning_time_recorded": (("traj_correct",), learning_time_recorded),
    "forgetting_events_recorded": (("traj_correct",), forgetting_events_recorded),
    "el2n": (("traj_el2n",), el2n),
    "grand": (("traj_grad_sq",), grand),
    "self_influence": (("traj_grad_sq", "record_lr"), self_influence),
}


def all_proxies(
    masks: np.ndarray,
    outputs: ReplicaOutputs,
    epoch: int | None = None,
    blocks: np.ndarray | None = None,
) -> dict[str, Estimate]:
    """Every proxy the outputs allow, in this order: final, per-presentation (trained
    networks), trajectory (only if recorded); ``epoch`` is the early epoch of EL2N and
    GraNd (see ``early_epoch_index``); ``blocks`` (R,) the replicas' block ids, so the
    standard errors treat a block as one unit (None: independent replicas)."""
    out = {name: fn(masks, outputs, blocks=blocks) for name, fn in FINAL_PROXIES.items()}
    for name, (needs, fn) in PRESENTATION_PROXIES.items():
        if all(getattr(outputs, k) is not None for k in needs):
            out[name] = fn(masks, outputs, blocks=blocks)
    for name, (needs, fn) in TRAJECTORY_PROXIES.items():
        if all(getattr(outputs, k) is not None for k in ("record_epochs", *needs)):
            early = {"epoch": epoch} if name in EARLY_PROXIES else {}
            out[name] = fn(masks, outputs, blocks=blocks, **early)
    return out
