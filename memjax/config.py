"""TrainConfig: how each replica is trained. Frozen and hashable, so compiled programs cache."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from memjax import schema
from memjax.dp import DPConfig

__all__ = ["TrainConfig"]

OPTIMIZERS = ("sgd", "momentum", "adam")
SCHEDULES = ("constant", "cosine")
LOSSES = ("xent", "mse")
VECTORIZE = ("auto", "vmap", "unroll")
MAX_EPOCHS = 10**6
MAX_INT32 = 2**31 - 1


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
    knobs: they do not change results beyond floating-point reduction order. ``dp`` (a
    memjax.dp.DPConfig) trains with DP-SGD: clipped per-example gradients plus Gaussian noise.
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
    dp: DPConfig | None = None

    def __post_init__(self) -> None:
        """Check every setting's type and bounds (see memjax.schema); store exact types."""
        checked = {
            "epochs": schema.integer(self.epochs, "epochs", 1, MAX_EPOCHS),
            "batch_size": None
            if self.batch_size is None
            else schema.integer(self.batch_size, "batch_size", 1, MAX_INT32),
            "optimizer": schema.choice(self.optimizer, "optimizer", OPTIMIZERS),
            "learning_rate": schema.number(self.learning_rate, "learning_rate", 0.0, low_open=True),
            "momentum": schema.number(self.momentum, "momentum", 0.0, 1.0, high_open=True),
            "schedule": schema.choice(self.schedule, "schedule", SCHEDULES),
            "weight_decay": schema.number(self.weight_decay, "weight_decay", 0.0),
            "loss": schema.choice(self.loss, "loss", LOSSES),
            "drop_last": schema.flag(self.drop_last, "drop_last"),
            "linearize": schema.flag(self.linearize, "linearize"),
            "record_grad_norm": schema.flag(self.record_grad_norm, "record_grad_norm"),
            "group_size": schema.integer(self.group_size, "group_size", 0, MAX_INT32),
            "vectorize": schema.choice(self.vectorize, "vectorize", VECTORIZE),
        }
        if self.dp is not None and not isinstance(self.dp, DPConfig):
            raise schema.ConfigError("dp", self.dp, "a DPConfig (or a dp section) or none")
        checked["record_every"] = schema.integer(
            self.record_every, "record_every", 0, checked["epochs"]
        )
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if self.record_grad_norm and not self.record_every:
            raise schema.ConfigError(
                "record_grad_norm", True, "false unless record_every > 0 (nothing is recorded)"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], setting: str = "train") -> TrainConfig:
        """From a config section; errors name the setting below ``setting`` (e.g. train.epochs)."""
        d = schema.section(d, setting, [f.name for f in fields(cls)])
        try:
            if d.get("dp") is not None:
                d["dp"] = DPConfig.from_dict(d["dp"])
            return cls(**d)
        except schema.ConfigError as err:
            raise err.within(setting) from None

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
        if d["dp"] is None:  # studies from before DP-SGD match their configs
            d.pop("dp")
        return d
