"""Convolution with two interchangeable implementations: gathered patches or XLA's own.

XLA:CPU runs a convolution inside a loop body (the trainer's ``lax.scan`` over steps) about
20x slower than the same convolution outside a loop, while its matmuls keep their speed
(measured on the 1-D CNN's training step: 131 ms in a scan vs 6 ms unrolled). Writing
the convolution as shifted (strided) slices concatenated along the channels times the
reshaped kernel is a plain dot everywhere: the CPU path. On GPUs and TPUs XLA's native
convolution (cuDNN, the MXU) is faster: ``native=True``. Both read the same parameters,
with ``nn.Conv``'s names, shapes and initializers, so a spec's parameters are one pytree
whichever runs, and they compute the same function.

Padding is ``((k - 1) // 2, k - 1 - (k - 1) // 2)`` per spatial axis: "SAME" at stride 1,
and PyTorch's ``padding=k // 2`` for odd kernels at stride 2 (output size ceil(n / s)).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from memjax.errors import ConfigError

__all__ = ["Conv", "CONV_MODES", "native_conv"]

CONV_MODES = ("auto", "patches", "native")


def native_conv(mode: str) -> bool:
    """Whether ``mode`` ("auto", "patches", "native") runs XLA's convolution: "auto" does on
    accelerators and keeps the patches matmul on CPU."""
    if mode not in CONV_MODES:
        raise ConfigError(f"unknown conv mode {mode!r}: use one of {CONV_MODES}")
    if mode == "auto":
        return jax.default_backend() != "cpu"
    return mode == "native"


class Conv(nn.Module):
    """``nn.Conv(features, kernel_size, strides)`` on channels-last inputs (N, *spatial, C),
    padded as in the module doc; the kernel is (*kernel_size, C, features)."""

    features: int
    kernel_size: tuple[int, ...]
    strides: int = 1
    use_bias: bool = True
    native: bool = False
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        spatial = x.shape[1:-1]
        if len(spatial) != len(self.kernel_size):
            raise ConfigError(f"{len(self.kernel_size)}-d kernel on input of shape {x.shape}")
        cin = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (*self.kernel_size, cin, self.features))
        x = x.astype(kernel.dtype)  # the parameters' dtype is the compute dtype
        pads = [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in self.kernel_size]
        s = self.strides
        if self.native:
            letters = "HWD"[: len(spatial)]
            y = lax.conv_general_dilated(
                x,
                kernel,
                (s,) * len(spatial),
                pads,
                dimension_numbers=(f"N{letters}C", f"{letters}IO", f"N{letters}C"),
            )
        else:
            out = [(n - 1) // s + 1 for n in spatial]
            padded = jnp.pad(x, [(0, 0), *pads, (0, 0)])

            def shifted(offset: tuple[int, ...]) -> jax.Array:
                window = (
                    slice(o, o + s * (m - 1) + 1, s) for o, m in zip(offset, out, strict=True)
                )
                return padded[(slice(None), *window)]

            # kernel offsets in row-major order, matching the kernel's reshape below
            offsets = itertools.product(*(range(k) for k in self.kernel_size))
            patches = jnp.concatenate([shifted(o) for o in offsets], axis=-1)
            y = patches @ kernel.reshape(math.prod(self.kernel_size) * cin, self.features)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return y
