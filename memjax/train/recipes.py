"""Training recipes of the literature for one replica: its optimizer (momentum, Nesterov,
weight decay and the parameters it spares, parameter EMA) and its learning-rate schedule.

Every rate is a function of the replica's own progress f = step / total_steps in [0, 1]
(replicas train on subsets of different sizes, so they take different numbers of steps):
at the end of epoch e every replica is at f = e / epochs, whatever its subset size.
Schedules (``TrainConfig.schedule``), with w = warmup_epochs / epochs and
p = (f - w) / (1 - w) the progress after warmup:

* ``constant``: 1; ``cosine``: (1 + cos(pi p)) / 2; ``linear``: 1 - p; each after a linear
  warmup f / w from 0 (the first step of a warmup has rate 0, as in optax's and the fast
  CIFAR trainers' schedules);
* ``one_cycle``: torch's ``OneCycleLR`` (cosine annealing, ``div_factor=25``,
  ``final_div_factor=1e4``): from 1/25 up to 1 over the warmup (its ``pct_start`` is w, and
  a warmup is required), then down to 1/25/1e4 at the end, on the continuous progress f;
* ``piecewise_linear``: linear interpolation through the knots (``knot_epochs``,
  ``knot_multipliers``) at f * epochs, constant beyond the first and last knot (numpy's
  ``interp``): ``[0, 5, 24], [0, 1, 0]`` is the triangle of the fast CIFAR-10 trainers.

The learning rate is ``learning_rate`` times the schedule's multiplier.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from memjax import schema
from memjax._registry import Registry

if TYPE_CHECKING:
    from memjax.train._config import TrainConfig

__all__ = [
    "SCHEDULES",
    "OPTIMIZERS",
    "ONE_CYCLE_DIV",
    "ONE_CYCLE_FINAL_DIV",
    "decayed",
    "gradient_transform",
    "learning_rate",
    "rate_at",
    "ReplicaOptimizer",
    "EmaState",
    "check_settings",
]

ONE_CYCLE_DIV = 25.0  # torch OneCycleLR's div_factor: the rate starts at peak / 25
ONE_CYCLE_FINAL_DIV = 1e4  # and its final_div_factor: it ends at peak / 25 / 1e4


def decayed(params: Any) -> Any:
    """The parameters weight decay applies to when norm and bias parameters are spared:
    those with ndim > 1 (kernels), not biases or normalization scales and offsets (1-D)."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


# optimizer name -> (cfg, weight-decay transforms) -> the transform without its learning rate
OPTIMIZERS: Registry[Callable[..., optax.GradientTransformation]] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(cfg: TrainConfig, decay: list) -> optax.GradientTransformation:
    return optax.chain(*decay) if decay else optax.identity()


@OPTIMIZERS.register("momentum")
def _momentum(cfg: TrainConfig, decay: list) -> optax.GradientTransformation:
    return optax.chain(*decay, optax.trace(decay=cfg.momentum, nesterov=cfg.nesterov))


@OPTIMIZERS.register("adam")
def _adam(cfg: TrainConfig, decay: list) -> optax.GradientTransformation:
    return optax.chain(optax.scale_by_adam(), *decay)


def gradient_transform(cfg: TrainConfig) -> optax.GradientTransformation:
    """The optimizer without its learning rate (the trainer applies ``learning_rate`` per
    replica and step): ``p <- p - lr * update``.

    sgd/momentum add weight decay to the gradient before the momentum, as
    ``torch.optim.SGD(momentum, nesterov, weight_decay)`` does: g = g + wd p, b = mu b + g,
    update = g + mu b (Nesterov) or b. adam decays decoupled (AdamW): update = adam(g) + wd p.
    """
    mask = None if cfg.decay_norm_and_bias else decayed
    decay = [optax.add_decayed_weights(cfg.weight_decay, mask)] if cfg.weight_decay else []
    return OPTIMIZERS[cfg.optimizer](cfg, decay)


# schedule name -> (cfg, progress f, numpy or jax.numpy) -> the learning rate at f
SCHEDULES: Registry[Callable[..., Any]] = Registry("schedule")


def _after_warmup(cfg: TrainConfig, f, xp, shape: Callable[[Any], Any]):
    """``shape(p)`` of the progress p after a linear warm-up from 0 over warmup_epochs."""
    w = cfg.warmup_epochs / cfg.epochs
    p = (f - w) / (1.0 - w) if w else f
    rate = shape(p)
    return xp.where(f < w, cfg.learning_rate * f / w, rate) if w else rate


@SCHEDULES.register("constant")
def _constant(cfg: TrainConfig, f, xp):
    return _after_warmup(cfg, f, xp, lambda p: xp.full_like(f, cfg.learning_rate))


@SCHEDULES.register("cosine")
def _cosine(cfg: TrainConfig, f, xp):
    base = cfg.learning_rate
    return _after_warmup(cfg, f, xp, lambda p: base * 0.5 * (1.0 + xp.cos(xp.pi * p)))


@SCHEDULES.register("linear")
def _linear(cfg: TrainConfig, f, xp):
    return _after_warmup(cfg, f, xp, lambda p: cfg.learning_rate * (1.0 - p))


@SCHEDULES.register("one_cycle")
def _one_cycle(cfg: TrainConfig, f, xp):
    """torch's OneCycleLR (cosine): from peak / 25 up over the warm-up, down to peak / 25e4."""
    base, w = cfg.learning_rate, cfg.warmup_epochs / cfg.epochs
    p = (f - w) / (1.0 - w) if w else f
    low = 1.0 / ONE_CYCLE_DIV
    rise = _annealed(low, 1.0, f / w, xp)
    fall = _annealed(1.0, low / ONE_CYCLE_FINAL_DIV, p, xp)
    return base * xp.where(f < w, rise, fall)


@SCHEDULES.register("piecewise_linear")
def _piecewise_linear(cfg: TrainConfig, f, xp):
    knots = xp.asarray(cfg.knot_epochs, xp.float32 if xp is jnp else np.float64)
    multipliers = xp.asarray(cfg.knot_multipliers, knots.dtype)
    return cfg.learning_rate * xp.interp(f * cfg.epochs, knots, multipliers)


def rate_at(cfg: TrainConfig, f, xp=np):
    """The learning rate at progress ``f`` (an array of fractions of the replica's training,
    in [0, 1]); ``xp`` is numpy (recorded rates) or jax.numpy (in the step)."""
    return SCHEDULES[cfg.schedule](cfg, f, xp)


def _annealed(start: float, end: float, t, xp):
    """torch's cosine annealing from ``start`` (t = 0) to ``end`` (t = 1)."""
    return end + (start - end) * 0.5 * (1.0 + xp.cos(xp.pi * t))


def learning_rate(cfg: TrainConfig, step: jax.Array, total_steps: jax.Array) -> jax.Array:
    """The rate of one replica's step (int, from 0) of its ``total_steps`` (its own count)."""
    if cfg.schedule == "constant" and not cfg.warmup_epochs:
        return jnp.asarray(cfg.learning_rate, jnp.float32)
    f = jnp.minimum(step / jnp.maximum(total_steps, 1), 1.0)
    return rate_at(cfg, f, jnp).astype(jnp.float32)


class EmaState(NamedTuple):
    """Optimizer state plus the exponential moving average of the replica's parameters."""

    inner: Any
    ema: Any


class ReplicaOptimizer:
    """One replica's update: the gradient transform, the learning rate, and with
    ``ema_decay`` = d > 0 a parameter average ema <- d ema + (1 - d) params after every
    step (from ema = the initial parameters, no bias correction, as timm's ModelEmaV2),
    which evaluation uses instead of the parameters."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.tx = gradient_transform(cfg)
        self.ema_decay = cfg.ema_decay

    def init(self, params: Any) -> Any:
        state = self.tx.init(params)
        return EmaState(state, params) if self.ema_decay else state

    def update(self, grads: Any, state: Any, params: Any, lr: jax.Array) -> tuple[Any, Any]:
        """(new params, new state) after one step at rate ``lr``."""
        inner = state.inner if self.ema_decay else state
        updates, inner = self.tx.update(grads, inner, params)
        new = jax.tree.map(lambda p, u: p - lr * u, params, updates)
        if not self.ema_decay:
            return new, inner
        d = self.ema_decay
        ema = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, state.ema, new)
        return new, EmaState(inner, ema)

    def evaluated(self, params: Any, state: Any) -> Any:
        """The parameters evaluation and recordings use: the EMA when there is one."""
        return state.ema if self.ema_decay else params


def _numbers(value: Any, setting: str, low: float | None = None) -> tuple[float, ...]:
    """A list of finite numbers (>= low), as a tuple of floats."""
    if not isinstance(value, (list, tuple)):
        raise schema.SettingError(setting, value, "a list of numbers")
    return tuple(schema.number(v, f"{setting}[{i}]", low) for i, v in enumerate(value))


def check_settings(cfg: TrainConfig, epochs: int, optimizer: str, loss: str) -> dict[str, Any]:
    """The recipe settings of ``cfg`` checked (types, bounds, and how they combine with the
    already checked ``epochs``, ``optimizer`` and ``loss``); raises schema.ConfigError."""
    out = {
        "label_smoothing": schema.number(
            cfg.label_smoothing, "label_smoothing", 0.0, 1.0, high_open=True
        ),
        "nesterov": schema.flag(cfg.nesterov, "nesterov"),
        "decay_norm_and_bias": schema.flag(cfg.decay_norm_and_bias, "decay_norm_and_bias"),
        "schedule": schema.choice(cfg.schedule, "schedule", SCHEDULES),
        "warmup_epochs": schema.number(
            cfg.warmup_epochs, "warmup_epochs", 0.0, epochs, high_open=True
        ),
        "knot_epochs": _numbers(cfg.knot_epochs, "knot_epochs", 0.0),
        "knot_multipliers": _numbers(cfg.knot_multipliers, "knot_multipliers", 0.0),
        "ema_decay": schema.number(cfg.ema_decay, "ema_decay", 0.0, 1.0, high_open=True),
    }
    if out["label_smoothing"] and loss != "xent":
        raise schema.SettingError(
            "label_smoothing", cfg.label_smoothing, "0 unless loss is 'xent' (it smooths targets)"
        )
    if out["nesterov"] and optimizer != "momentum":
        raise schema.SettingError("nesterov", True, "false unless optimizer is 'momentum'")
    schedule, knots, values = out["schedule"], out["knot_epochs"], out["knot_multipliers"]
    if schedule == "one_cycle" and not out["warmup_epochs"]:
        raise schema.SettingError(
            "warmup_epochs", cfg.warmup_epochs, "> 0 for schedule one_cycle (its rising phase)"
        )
    if schedule != "piecewise_linear":
        if knots or values:
            raise schema.SettingError(
                "knot_epochs" if knots else "knot_multipliers",
                list(knots or values),
                "empty unless schedule is 'piecewise_linear'",
            )
        return out
    if out["warmup_epochs"]:
        raise schema.SettingError(
            "warmup_epochs", cfg.warmup_epochs, "0 for schedule piecewise_linear (use its knots)"
        )
    if len(knots) < 2 or any(a >= b for a, b in zip(knots[:-1], knots[1:], strict=True)):
        raise schema.SettingError(
            "knot_epochs", list(knots), "at least 2 increasing epochs for piecewise_linear"
        )
    if len(values) != len(knots):
        raise schema.SettingError(
            "knot_multipliers", list(values), f"{len(knots)} numbers >= 0, one per knot epoch"
        )
    if not math.fsum(values):
        raise schema.SettingError("knot_multipliers", list(values), "not all 0 (no training)")
    return out
