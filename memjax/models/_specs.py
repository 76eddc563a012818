"""Model specs: small frozen descriptions that build flax modules (and, in memjax.theory, kernels).

A spec is pure data, so it can be written into a study config, hashed, and handed to the
theory package, which computes the infinite-width kernel of *exactly* the same architecture.
The MLP follows neural-tangents' ``stax.Dense`` conventions:

* ``parameterization="ntk"``: weights and biases are N(0, 1); a layer computes
  ``W_std / sqrt(fan_in) * x @ W + b_std * b``.
* ``parameterization="standard"``: weights are N(0, W_std**2 / fan_in), biases N(0, b_std**2);
  a layer computes ``x @ W + b``.

``b_std=None`` means no bias at all. Hidden layers and the readout use the same W_std/b_std,
as ``stax.serial([Dense(w, W_std, b_std), act] * depth, Dense(C, W_std, b_std))`` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from memjax import schema
from memjax.errors import ConfigError
from memjax.models._activations import ACTIVATIONS
from memjax.models._parameterizations import PARAMETERIZATIONS
from memjax.models._patch_conv import Conv, native_conv
from memjax.models._registry import SPECS
from memjax.models._resnets import NORMS, ResNet9, ResNet18, WideResNet

__all__ = [
    "MLP",
    "CNN1D",
    "CNN2D",
    "ResNet9",
    "ResNet18",
    "WideResNet",
    "NORMS",
    "COMPUTE_DTYPES",
    "Network",
    "spec_from_dict",
    "spec_to_dict",
    "build",
    "build_network",
]

Params = Any
State = Any  # a network's running statistics (BatchNorm's "batch_stats"); {} when it has none
ApplyFn = Callable[[Params, jax.Array], jax.Array]


def _activation(name: str, negative_slope: float) -> Callable[[jax.Array], jax.Array]:
    fn = ACTIVATIONS[name].fn
    return lambda x: fn(x, negative_slope)


class NTDense(nn.Module):
    """Dense layer with neural-tangents' ntk/standard parameterization (see module doc)."""

    features: int
    W_std: float
    b_std: float | None
    parameterization: str

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        scales = PARAMETERIZATIONS[self.parameterization].scales
        w_init, w_scale, b_init, b_scale = scales(self.W_std, self.b_std or 0.0, fan_in)
        w = self.param("kernel", nn.initializers.normal(w_init), (fan_in, self.features))
        y = x @ w if w_scale == 1.0 else w_scale * (x @ w)
        if self.b_std is not None:
            b = self.param("bias", nn.initializers.normal(b_init), (self.features,))
            y = y + (b if b_scale == 1.0 else b_scale * b)
        return y


class _MLPModule(nn.Module):
    spec: MLP
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = self.spec
        act = _activation(s.activation, s.negative_slope)
        x = x.reshape(x.shape[0], -1)
        for w in s.widths:
            x = act(NTDense(w, s.W_std, s.b_std, s.parameterization)(x))
        return NTDense(self.num_classes, s.W_std, s.b_std, s.parameterization)(x)


@SPECS.register("MLP")
@dataclass(frozen=True)
class MLP:
    """Fully connected network; inputs are flattened. depth = len(widths) hidden layers."""

    widths: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    parameterization: str = "ntk"
    W_std: float = math.sqrt(2.0)
    b_std: float | None = 0.1
    negative_slope: float = 0.01

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if not self.widths or min(self.widths) < 1:
            raise ConfigError(
                f"MLP widths must be a non-empty tuple of positive ints: {self.widths}"
            )
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {self.activation!r}: use one of {list(ACTIVATIONS)}"
            )
        if self.parameterization not in PARAMETERIZATIONS:
            raise ConfigError(
                f"unknown parameterization {self.parameterization!r}: use one of "
                f"{list(PARAMETERIZATIONS)}"
            )
        if self.W_std <= 0 or (self.b_std is not None and self.b_std < 0):
            raise ConfigError(
                f"need W_std > 0 and b_std >= 0 or None, got {self.W_std}, {self.b_std}"
            )

    def module(self, num_classes: int, native: bool = False) -> nn.Module:
        return _MLPModule(self, num_classes)

    def matmul_flops(self, input_shape: tuple[int, ...], num_classes: int) -> int:
        """Forward multiply-add FLOPs per example (2 per multiply-accumulate)."""
        sizes = (math.prod(input_shape), *self.widths, num_classes)
        return sum(2 * a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))


class _CNN1DModule(nn.Module):
    spec: CNN1D
    num_classes: int
    native: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = self.spec
        x = x.reshape(x.shape[0], -1, 1) if x.ndim == 2 else x
        for i, c in enumerate(s.channels):
            x = jax.nn.relu(Conv(c, (s.kernel_size,), native=self.native, name=f"Conv_{i}")(x))
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(self.num_classes)(x)


@SPECS.register("CNN1D")
@dataclass(frozen=True)
class CNN1D:
    """1-D convolutional net for signals such as MNIST-1D: conv stack, flatten, linear readout."""

    channels: tuple[int, ...] = (32, 32, 32)
    kernel_size: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    def module(self, num_classes: int, native: bool = False) -> nn.Module:
        return _CNN1DModule(self, num_classes, native)

    def matmul_flops(self, input_shape: tuple[int, ...], num_classes: int) -> int:
        length = input_shape[0]
        chans = (input_shape[1] if len(input_shape) > 1 else 1, *self.channels)
        conv = sum(
            2 * length * self.kernel_size * a * b
            for a, b in zip(chans[:-1], chans[1:], strict=False)
        )
        return conv + 2 * length * chans[-1] * num_classes


class _CNN2DModule(nn.Module):
    spec: CNN2D
    num_classes: int
    native: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = self.spec
        if x.ndim == 2:
            x = x.reshape(x.shape[0], *s.image_shape)
        for i, c in enumerate(s.channels):
            x = jax.nn.relu(Conv(c, (s.kernel_size,) * 2, native=self.native, name=f"Conv_{i}")(x))
            if min(x.shape[1:3]) >= 4:
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(nn.Dense(s.hidden)(x))
        return nn.Dense(self.num_classes)(x)


@SPECS.register("CNN2D")
@dataclass(frozen=True)
class CNN2D:
    """Small image CNN: conv+pool blocks, one hidden dense layer. Flat inputs are reshaped
    to ``image_shape`` (e.g. (8, 8, 1) for digits)."""

    channels: tuple[int, ...] = (32, 64)
    kernel_size: int = 3
    hidden: int = 128
    image_shape: tuple[int, int, int] = (8, 8, 1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "image_shape", tuple(int(c) for c in self.image_shape))

    def module(self, num_classes: int, native: bool = False) -> nn.Module:
        return _CNN2DModule(self, num_classes, native)

    def matmul_flops(self, input_shape: tuple[int, ...], num_classes: int) -> int:
        h, w, c = input_shape if len(input_shape) == 3 else self.image_shape
        total, k2 = 0, self.kernel_size**2
        for out in self.channels:
            total += 2 * h * w * k2 * c * out
            c = out
            if min(h, w) >= 4:
                h, w = h // 2, w // 2
        return total + 2 * h * w * c * self.hidden + 2 * self.hidden * num_classes


Spec = MLP | CNN1D | CNN2D | ResNet9 | ResNet18 | WideResNet
COMPUTE_DTYPES = ("float32", "bfloat16")


def spec_to_dict(spec: Spec) -> dict[str, Any]:
    d = asdict(spec)
    return {
        "type": type(spec).__name__,
        **{k: list(v) if isinstance(v, tuple) else v for k, v in d.items()},
    }


MAX_WIDTH = 2**31 - 1


def _check_fields(d: dict[str, Any]) -> dict[str, Any]:
    """Type and bounds of each given spec field (memjax.schema); names are model.FIELD."""
    s = schema
    checks = {
        "widths": lambda v, k: s.positive_ints(v, k, MAX_WIDTH),
        "channels": lambda v, k: s.positive_ints(v, k, MAX_WIDTH),
        "image_shape": lambda v, k: s.positive_ints(v, k, MAX_WIDTH, length=3),
        "activation": lambda v, k: s.choice(v, k, ACTIVATIONS),
        "parameterization": lambda v, k: s.choice(v, k, PARAMETERIZATIONS),
        "W_std": lambda v, k: s.number(v, k, 0.0, low_open=True),
        "b_std": lambda v, k: None if v is None else s.number(v, k, 0.0),
        "negative_slope": lambda v, k: s.number(v, k),
        "kernel_size": lambda v, k: s.integer(v, k, 1, MAX_WIDTH),
        "hidden": lambda v, k: s.integer(v, k, 1, MAX_WIDTH),
        "width": lambda v, k: s.integer(v, k, 1, MAX_WIDTH),
        "depth": lambda v, k: s.integer(v, k, 10, MAX_WIDTH),
        "width_factor": lambda v, k: s.integer(v, k, 1, MAX_WIDTH),
        "norm": lambda v, k: s.choice(v, k, NORMS),
    }
    return {name: checks[name](value, f"model.{name}") for name, value in d.items()}


def spec_from_dict(d: dict[str, Any]) -> Spec:
    """Inverse of spec_to_dict. Every field is type- and bounds-checked (no coercion:
    ``widths: "32"`` is refused, not read as [3, 2]); errors name the setting model.FIELD."""
    if not isinstance(d, Mapping):
        raise schema.SettingError("model", d, f"a mapping with a type among {sorted(SPECS)}")
    d = dict(d)
    cls = SPECS[schema.choice(d.pop("type", "MLP"), "model.type", sorted(SPECS))]
    return cls(**_check_fields(schema.section(d, "model", [f.name for f in fields(cls)])))


@dataclass(frozen=True)
class Network:
    """A built spec as pure functions of pytrees.

    ``init(key) -> (params, state)``; ``apply(params, state, x, train=False, valid=None) ->
    (logits (N, C) float32, state)``. ``state`` holds BatchNorm's running averages ({} for
    every other spec): ``train=True`` normalizes with the statistics of the rows of ``x``
    that ``valid`` (N,) marks (all rows when None) and returns the updated averages;
    ``train=False`` uses the running averages. Parameters are float32; with a bfloat16
    ``compute_dtype`` they and ``x`` are cast for the convolutions and matmuls, while
    normalization statistics and the returned logits stay float32. With float32 nothing is
    cast, so float64 parameters and inputs (x64 theory) keep their precision.
    """

    init: Callable[[jax.Array], tuple[Params, State]]
    apply: Callable[..., tuple[jax.Array, State]]
    stateful: bool


def build_network(
    spec: Spec,
    input_shape: tuple[int, ...],
    num_classes: int,
    conv: str = "auto",
    compute_dtype: str = "float32",
) -> Network:
    """The spec's network; ``conv`` ("auto", "patches", "native") picks the convolution
    (memjax.models), which changes speed, not parameters."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ConfigError(f"unknown compute_dtype {compute_dtype!r}: use one of {COMPUTE_DTYPES}")
    module = spec.module(num_classes, native=native_conv(conv))
    moded = hasattr(spec, "norm")  # residual nets take (x, train, valid)
    stateful = moded and spec.norm == "batch"
    dtype = jnp.dtype(compute_dtype)
    mixed = dtype != jnp.float32  # float32 leaves dtypes alone, so float64 theory stays exact
    dummy = jnp.zeros((1, *input_shape), jnp.float32)

    def init(key: jax.Array) -> tuple[Params, State]:
        variables = module.init(key, dummy)
        return variables["params"], variables.get("batch_stats", {})

    def logits(out: jax.Array) -> jax.Array:
        return out.astype(jnp.float32) if mixed else out

    def apply(params, state, x, train: bool = False, valid: jax.Array | None = None):
        if mixed:
            params = jax.tree.map(lambda p: p.astype(dtype), params)
            x = x.astype(dtype)
        if not moded:
            return logits(module.apply({"params": params}, x)), state
        variables = {"params": params, "batch_stats": state} if stateful else {"params": params}
        if stateful and train:
            out, new = module.apply(variables, x, True, valid, mutable=["batch_stats"])
            return logits(out), new["batch_stats"]
        return logits(module.apply(variables, x, train, valid)), state

    return Network(init, apply, stateful)


def build(
    spec: Spec, input_shape: tuple[int, ...], num_classes: int
) -> tuple[Callable[[jax.Array], Params], ApplyFn]:
    """(init(key) -> params, apply(params, x) -> logits) as pure functions of pytrees, for
    specs without state (BatchNorm's running averages need ``build_network``)."""
    net = build_network(spec, input_shape, num_classes)
    if net.stateful:
        raise ConfigError(
            f"{type(spec).__name__}(norm='batch') carries BatchNorm running statistics: use "
            "models.build_network (init -> (params, state), apply(params, state, x, train))"
        )

    def init(key: jax.Array) -> Params:
        return net.init(key)[0]

    def apply(params: Params, x: jax.Array) -> jax.Array:
        return net.apply(params, {}, x)[0]

    return init, apply
