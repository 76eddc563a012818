"""Residual image networks of the memorization and privacy literature, as frozen specs.

* ``ResNet9``: the small fast residual net of the fastest published CIFAR-10 trainers (the
  shape of the image benchmark's PyTorch peer): conv-BN-ReLU stem, two stages that
  max-pool after their conv, residual blocks at the second and last stage, global max pool.
* ``ResNet18``: the CIFAR variant (3x3 stem, no max pool) with basic blocks [2, 2, 2, 2] of
  widths ``width * (1, 2, 4, 8)``, 1x1 projection shortcuts, global average pool (Feldman &
  Zhang 2020).
* ``WideResNet``: pre-activation WRN-depth-k (Zagoruyko & Komodakis; LiRA trains WRN-16-4).

Inputs are channels-last images (N, H, W, C). Convolutions have no bias and He-normal
(fan-out) weights. ``norm`` is "batch" (BatchNorm, momentum 0.9, eps 1e-5: its running
averages are the network's state, see ``models.build_network``), "group" (GroupNorm with
gcd(32, channels) groups) or "none" (for comparisons with kernels). Under BatchNorm a
replica's batch statistics come from the rows of its own minibatch that ``valid`` marks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp

from memjax.errors import ConfigError
from memjax.models._patch_conv import Conv
from memjax.models._registry import SPECS

__all__ = ["ResNet9", "ResNet18", "WideResNet", "NORMS"]

NORMS = ("batch", "group", "none")
BN_MOMENTUM = 0.9
NORM_EPS = 1e-5
GROUPS = 32
HE_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv_flops(hw: tuple[int, int], k: int, cin: int, cout: int) -> int:
    """Multiply-add FLOPs of a k x k convolution with output resolution ``hw``."""
    return 2 * hw[0] * hw[1] * k * k * cin * cout


def _down(hw: tuple[int, int], stride: int) -> tuple[int, int]:
    """Output resolution of a padded convolution with this stride: ceil(n / stride)."""
    return (-(-hw[0] // stride), -(-hw[1] // stride))


def _check_norm(norm: str) -> None:
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}: use one of {NORMS}")


def _image(x: jax.Array, name: str) -> None:
    if x.ndim != 4:
        raise ConfigError(f"{name} needs channels-last images (N, H, W, C), got shape {x.shape}")


class _Norm(nn.Module):
    """The spec's normalization; ``valid`` (N,) marks the rows BatchNorm's statistics use."""

    kind: str

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, valid: jax.Array | None) -> jax.Array:
        if self.kind == "batch":
            mask = None if valid is None else (valid > 0).reshape(-1, *(1,) * (x.ndim - 1))
            bn = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=NORM_EPS)
            return bn(x, mask=mask)
        if self.kind == "group":
            return nn.GroupNorm(num_groups=math.gcd(GROUPS, x.shape[-1]), epsilon=NORM_EPS)(x)
        return x


class _Net(nn.Module):
    """Shared fields of the residual modules: the spec, the class count, the conv mode."""

    spec: ResNet9 | ResNet18 | WideResNet
    num_classes: int
    native: bool = False

    def conv(self, features: int, k: int = 3, stride: int = 1) -> Conv:
        return Conv(
            features, (k, k), stride, use_bias=False, native=self.native, kernel_init=HE_FAN_OUT
        )


class _ResNet9Module(_Net):
    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, valid: jax.Array | None = None):
        _image(x, "ResNet9")
        c1, c2, c3, c4 = self.spec.widths

        def conv_norm(h: jax.Array, c: int, pool: bool = False) -> jax.Array:
            h = self.conv(c)(h)
            if pool:
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
            return jax.nn.relu(_Norm(self.spec.norm)(h, train, valid))

        x = conv_norm(conv_norm(x, c1), c2, pool=True)
        x = x + conv_norm(conv_norm(x, c2), c2)
        x = conv_norm(conv_norm(x, c3, pool=True), c4, pool=True)
        x = x + conv_norm(conv_norm(x, c4), c4)
        return nn.Dense(self.num_classes)(jnp.max(x, axis=(1, 2)))


@SPECS.register("ResNet9")
@dataclass(frozen=True)
class ResNet9:
    """ResNet-9 (widths c1..c4 of its four conv stages; (64, 128, 256, 512) in the fast
    CIFAR-10 trainers, (16, 32, 64, 128) in memjax's image benchmark)."""

    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    norm: str = "batch"

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if len(self.widths) != 4 or min(self.widths) < 1:
            raise ConfigError(f"ResNet9 widths must be 4 positive ints, got {self.widths}")
        _check_norm(self.norm)

    def module(self, num_classes: int, native: bool = False) -> nn.Module:
        return _ResNet9Module(self, num_classes, native)

    def matmul_flops(self, input_shape: tuple[int, ...], num_classes: int) -> int:
        """Forward FLOPs of convolutions and the readout per example (2 per multiply-add)."""
        h, w, c = input_shape
        c1, c2, c3, c4 = self.widths
        r1, r2 = (h, w), (h // 2, w // 2)
        r3, r4 = (h // 4, w // 4), (h // 8, w // 8)
        return (
            _conv_flops(r1, 3, c, c1)
            + _conv_flops(r1, 3, c1, c2)  # then max pool
            + 2 * _conv_flops(r2, 3, c2, c2)
            + _conv_flops(r2, 3, c2, c3)  # then max pool
            + _conv_flops(r3, 3, c3, c4)  # then max pool
            + 2 * _conv_flops(r4, 3, c4, c4)
            + 2 * c4 * num_classes
        )


def _basic_blocks(widths: tuple[int, ...], blocks: int, cin: int):
    """(in channels, out channels, stride) of each block of a stage-wise residual net whose
    first stage keeps the resolution and each later one halves it."""
    for i, width in enumerate(widths):
        for b in range(blocks):
            yield cin, width, 2 if i > 0 and b == 0 else 1
            cin = width


def _residual_flops(input_shape: tuple[int, ...], stem: int, blocks) -> int:
    """FLOPs of a 3x3 stem of ``stem`` channels and basic blocks (two 3x3 convolutions, the
    first strided, plus a strided 1x1 projection where the shape changes)."""
    h, w, c = input_shape
    hw = (h, w)
    total = _conv_flops(hw, 3, c, stem)
    for cin, cout, stride in blocks:
        hw = _down(hw, stride)
        total += _conv_flops(hw, 3, cin, cout) + _conv_flops(hw, 3, cout, cout)
        if stride != 1 or cin != cout:
            total += _conv_flops(hw, 1, cin, cout)
    return total


class _ResNet18Module(_Net):
    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, valid: jax.Array | None = None):
        _image(x, "ResNet18")
        s = self.spec
        x = jax.nn.relu(_Norm(s.norm)(self.conv(s.width)(x), train, valid))
        for cin, cout, stride in _basic_blocks(s.stage_widths, s.BLOCKS, s.width):
            h = jax.nn.relu(_Norm(s.norm)(self.conv(cout, 3, stride)(x), train, valid))
            h = _Norm(s.norm)(self.conv(cout)(h), train, valid)
            if stride != 1 or cin != cout:
                x = _Norm(s.norm)(self.conv(cout, 1, stride)(x), train, valid)
            x = jax.nn.relu(x + h)
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


@SPECS.register("ResNet18")
@dataclass(frozen=True)
class ResNet18:
    """CIFAR ResNet-18: 3x3 stem, no max pool, basic blocks [2, 2, 2, 2] of widths
    ``width * (1, 2, 4, 8)`` (strides 1, 2, 2, 2), global average pool, linear readout."""

    width: int = 64
    norm: str = "batch"
    BLOCKS = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", int(self.width))
        if self.width < 1:
            raise ConfigError(f"ResNet18 width must be a positive int, got {self.width}")
        _check_norm(self.norm)

    @property
    def stage_widths(self) -> tuple[int, ...]:
        return tuple(self.width * m for m in (1, 2, 4, 8))

    def module(self, num_classes: int, native: bool = False) -> nn.Module:
        return _ResNet18Module(self, num_classes, native)

    def matmul_flops(self, input_shape: tuple[int, ...], num_classes: int) -> int:
        """Forward FLOPs of convolutions and the readout per example (2 per multiply-add)."""
        blocks = _basic_blocks(self.stage_widths, self.BLOCKS, self.width)
        return (
            _residual_flops(input_shape, self.width, blocks)
            + 2 * self.stage_widths[-1] * num_classes
        )


class _WideResNetModule(_Net):
    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, valid: jax.Array | None = None):
        _image(x, "WideResNet")
        s = self.spec
        x = self.conv(s.STEM)(x)
        for cin, cout, stride in _basic_blocks(s.stage_widths, s.blocks, s.STEM):
            o1 = jax.nn.relu(_Norm(s.norm)(x, train, valid))
            h = jax.nn.relu(_Norm(s.norm)(self.conv(cout, 3, stride)(o1), train, valid))
            h = self.conv(cout)(h)
            x = h + (self.conv(cout, 1, stride)(o1) if stride != 1 or cin != cout else x)
        x = jax.nn.relu(_Norm(s.norm)(x, train, valid))
        return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


@SPECS.register("WideResNet")
@dataclass(frozen=True)
class WideResNet:
    """Pre-activation wide residual net WRN-depth-k as in LiRA (Carlini et al. 2022): a 3x3
    stem of 16 channels, three stages of (depth - 4) / 6 blocks of widths 16k, 32k, 64k
    (strides 1, 2, 2), each block norm-ReLU-conv-norm-ReLU-conv with a 1x1 projection of the
    pre-activated input where the shape changes; final norm-ReLU, global average pool."""

    depth: int = 16
    width_factor: int = 4
    norm: str = "batch"
    STEM = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "depth", int(self.depth))
        object.__setattr__(self, "width_factor", int(self.width_factor))
        if self.depth < 10 or (self.depth - 4) % 6:
            raise ConfigError(f"WideResNet depth must be 6n + 4 with n >= 1, got {self.depth}")
        if self.width_factor < 1:
            raise ConfigError(f"WideResNet width_factor must be >= 1, got {self.width_factor}")
        _check_norm(self.norm)

    @property
    def blocks(self) -> int:
        return (self.depth - 4) // 6

    @property
    def stage_widths(self) -> tuple[int, ...]:
        return tuple(self.STEM * self.width_factor * m for m in (1, 2, 4))

    def module(self, num_classes: int, native: bool = False) -> nn.Module:
        return _WideResNetModule(self, num_classes, native)

    def matmul_flops(self, input_shape: tuple[int, ...], num_classes: int) -> int:
        """Forward FLOPs of convolutions and the readout per example (2 per multiply-add)."""
        blocks = _basic_blocks(self.stage_widths, self.blocks, self.STEM)
        return (
            _residual_flops(input_shape, self.STEM, blocks)
            + 2 * self.stage_widths[-1] * num_classes
        )
