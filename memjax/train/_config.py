"""TrainConfig: how each replica is trained. Frozen and hashable, so compiled programs cache."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from memjax import schema
from memjax.models import COMPUTE_DTYPES, CONV_MODES
from memjax.train import recipes
from memjax.train._dp import DPConfig
from memjax.train.augment import AUGMENTS
from memjax.train.queries import QUERIES

__all__ = ["TrainConfig"]

OPTIMIZERS = recipes.OPTIMIZERS  # registered in recipes, beside their implementations
LOSSES = ("xent", "mse")
VECTORIZE = ("auto", "vmap", "unroll")
MAX_EPOCHS = 10**6
MAX_INT32 = 2**31 - 1
# settings added after studies were first stored (result_dict omits them at their defaults)
RECIPE_SETTINGS = (
    "warmup_epochs",
    "knot_epochs",
    "knot_multipliers",
    "nesterov",
    "decay_norm_and_bias",
    "label_smoothing",
    "ema_decay",
)
# Settings added after studies were first stored: left out of result_dict at their default,
# so that stores written before them still resume and merge.
LATER_DEFAULTS = {"augment": "none", "cutout": 0, "compute_dtype": "float32"}


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
    memjax.DPConfig) trains with DP-SGD: clipped per-example gradients plus Gaussian noise.

    Recipes of the literature (memjax.train.recipes has the formulas):

    * ``schedule`` in constant, cosine, linear, one_cycle, piecewise_linear, after a linear
      warmup of ``warmup_epochs`` (fractional allowed; one_cycle's rising phase), or through
      the knots (``knot_epochs``, ``knot_multipliers``) of piecewise_linear; every schedule
      runs over the replica's own step count.
    * ``nesterov``: Nesterov momentum (optimizer momentum; torch.optim.SGD's rule).
    * ``decay_norm_and_bias=False``: weight decay only of parameters with ndim > 1.
    * ``label_smoothing``: the training loss is cross-entropy against (1 - a) onehot + a / K;
      the evaluated losses and margins (and the correctness records) are unsmoothed; the
      recorded gradient norms (``record_grad_norm``) are of the smoothed training loss.
    * ``ema_decay`` = d > 0: evaluation and recordings use each replica's exponential
      moving average of its parameters (d ema + (1 - d) params after every step).

    ``queries`` ("none", "mirror", "mirror_shift", "shift"; ``memjax.train.queries``) also
    evaluates every train and test example under LiRA's deterministic augmented views after
    training and stores their margins (R, n, K) beside the identity margins.

    ``augment="crop_flip"`` trains on random crops (pad 4, reflect) and horizontal flips of
    image inputs (``augment="crop"``: crops only, for classes that mirroring changes, such
    as digits), ``cutout=k > 0`` also zeroes a k x k square (memjax.train.augment); the draws of
    replica r are a function of (seed, r, epoch, step). ``compute_dtype="bfloat16"`` runs
    convolutions and matmuls in bfloat16 with float32 parameters, optimizer state, loss,
    normalization statistics and evaluated margins. ``conv`` ("auto", "patches",
    "native") picks the convolution implementation (memjax.models): a speed knob.
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
    warmup_epochs: float = 0.0
    knot_epochs: tuple[float, ...] = ()
    knot_multipliers: tuple[float, ...] = ()
    nesterov: bool = False
    decay_norm_and_bias: bool = True
    label_smoothing: float = 0.0
    ema_decay: float = 0.0
    queries: str = "none"
    augment: str = "none"
    cutout: int = 0
    compute_dtype: str = "float32"
    conv: str = "auto"
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
            "weight_decay": schema.number(self.weight_decay, "weight_decay", 0.0),
            "loss": schema.choice(self.loss, "loss", LOSSES),
            "drop_last": schema.flag(self.drop_last, "drop_last"),
            "linearize": schema.flag(self.linearize, "linearize"),
            "record_grad_norm": schema.flag(self.record_grad_norm, "record_grad_norm"),
            "group_size": schema.integer(self.group_size, "group_size", 0, MAX_INT32),
            "vectorize": schema.choice(self.vectorize, "vectorize", VECTORIZE),
            "queries": schema.choice(self.queries, "queries", QUERIES),
            "augment": schema.choice(self.augment, "augment", AUGMENTS),
            "cutout": schema.integer(self.cutout, "cutout", 0, MAX_INT32),
            "compute_dtype": schema.choice(self.compute_dtype, "compute_dtype", COMPUTE_DTYPES),
            "conv": schema.choice(self.conv, "conv", CONV_MODES),
        }
        if self.dp is not None and not isinstance(self.dp, DPConfig):
            raise schema.SettingError("dp", self.dp, "a DPConfig (or a dp section) or none")
        checked["record_every"] = schema.integer(
            self.record_every, "record_every", 0, checked["epochs"]
        )
        checked.update(
            recipes.check_settings(self, checked["epochs"], checked["optimizer"], checked["loss"])
        )
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if self.record_grad_norm and not self.record_every:
            raise schema.SettingError(
                "record_grad_norm", True, "false unless record_every > 0 (nothing is recorded)"
            )

    def to_dict(self) -> dict[str, Any]:
        """Every setting, lists for the knots (as a config file and study.json hold them)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], setting: str = "train") -> TrainConfig:
        """From a config section; errors name the setting below ``setting`` (e.g. train.epochs)."""
        d = schema.section(d, setting, [f.name for f in fields(cls)])
        try:
            if d.get("dp") is not None:
                d["dp"] = DPConfig.from_dict(d["dp"])
            return cls(**d)
        except schema.SettingError as err:
            raise err.within(setting) from None

    def recorded_epochs(self) -> np.ndarray:
        """Epochs after which trajectories are recorded: 0 (initialization), k, 2k, ... up to
        the last multiple of k = record_every (empty when record_every is 0)."""
        if not self.record_every:
            return np.zeros(0, np.int64)
        return np.arange(0, self.epochs // self.record_every + 1) * self.record_every

    def recorded_learning_rates(self) -> np.ndarray:
        """Learning rate at the end of each recorded epoch (at epoch 0: the initial rate).
        Schedules run over each replica's own step count, so at the end of epoch e every
        replica is at e/E of its training."""
        progress = self.recorded_epochs() / self.epochs
        return np.asarray(recipes.rate_at(self, progress), np.float32)

    def result_dict(self) -> dict[str, Any]:
        """The settings that determine results (the speed knobs are excluded). Recipe
        settings, ``augment``, ``cutout`` and ``compute_dtype`` at their defaults and
        ``queries`` when "none" are left out, so studies stored before they existed still
        match their configs."""
        d = self.to_dict()
        for knob in ("group_size", "vectorize", "conv"):
            d.pop(knob)
        for f in fields(self):
            if f.name in RECIPE_SETTINGS and getattr(self, f.name) == f.default:
                d.pop(f.name)
        if d["queries"] == "none":
            d.pop("queries")
        if d["dp"] is None:  # studies from before DP-SGD match their configs
            d.pop("dp")
        return {k: v for k, v in d.items() if k not in LATER_DEFAULTS or v != LATER_DEFAULTS[k]}
