"""TrainConfig: how each replica is trained. Frozen and hashable, so compiled programs cache."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

__all__ = ["TrainConfig"]

OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "cosine")
LOSSES = ("xent", "mse")
VECTORIZE = ("auto", "vmap", "unroll")


@dataclass(frozen=True)
class TrainConfig:
    """Ordinary minibatch training of one replica on its own subset.

    ``batch_size=None`` means full-batch gradient descent. ``drop_last`` drops each epoch's
    final partial batch (static step counts, as in the standard benchmark). ``weight_decay``
    is L2 added to the gradient for sgd/momentum and decoupled (AdamW) for adam.
    ``linearize`` trains the first-order Taylor expansion of the network around its
    initialization. ``record_every=k > 0`` records every training example's correctness,
    margin, loss and EL2N at initialization (epoch 0) and after every k-th epoch (plus the
    squared per-example gradient norm if ``record_grad_norm``). ``group_size`` (0 =
    automatic) is a speed knob only: how many replicas run side by side in one vectorized
    step; ``vectorize`` ("auto", "vmap", "unroll") how they are mapped. Both are speed
    knobs: they do not change results beyond floating-point reduction order.
    """

    epochs: int = 30
    batch_size: int | None = 128
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    schedule: str = "constant"
    weight_decay: float = 0.0
    loss: str = "xent"
    drop_last: bool = False
    linearize: bool = False
    record_every: int = 0
    record_grad_norm: bool = False
    group_size: int = 0
    vectorize: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs}")
        if self.batch_size is not None and (
            not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise ValueError(
                f"batch_size must be a positive integer or None, got {self.batch_size}"
            )
        for name, value, allowed in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("loss", self.loss, LOSSES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}: use one of {allowed}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.record_every < 0 or self.record_every > self.epochs:
            raise ValueError(
                f"record_every must be in [0, epochs={self.epochs}], got {self.record_every}"
            )
        if self.record_grad_norm and not self.record_every:
            raise ValueError("record_grad_norm needs record_every > 0")
        if self.vectorize not in VECTORIZE:
            raise ValueError(f"unknown vectorize {self.vectorize!r}: use one of {VECTORIZE}")
        if self.group_size < 0:
            raise ValueError(f"group_size must be >= 0, got {self.group_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        allowed = {f.name for f in fields(cls)}
        unknown = set(d) - allowed
        if unknown:
            raise ValueError(f"unknown train settings {sorted(unknown)}: allowed {sorted(allowed)}")
        return cls(**d)

    def recorded_epochs(self) -> np.ndarray:
        """Epochs after which trajectories are recorded: 0 (initialization), k, 2k, ... up to
        the last multiple of k = record_every (empty when record_every is 0)."""
        if not self.record_every:
            return np.zeros(0, np.int64)
        return np.arange(0, self.epochs // self.record_every + 1) * self.record_every

    def recorded_learning_rates(self) -> np.ndarray:
        """Learning rate at the end of each recorded epoch (at epoch 0: the initial rate).
        The cosine schedule decays over each replica's own step count, so at the end of
        epoch e every replica is at e/E."""
        epochs = self.recorded_epochs()
        if self.schedule == "constant":
            return np.full(len(epochs), self.learning_rate, np.float32)
        progress = epochs / self.epochs
        return (self.learning_rate * 0.5 * (1 + np.cos(np.pi * progress))).astype(np.float32)

    def result_dict(self) -> dict[str, Any]:
        """The settings that determine results (the speed knobs are excluded)."""
        d = self.to_dict()
        d.pop("group_size")
        d.pop("vectorize")
        return d
