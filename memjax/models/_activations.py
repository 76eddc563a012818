"""Activations, each registered once with its function and its Gaussian dual (the
neural-tangents ``stax`` shape): the network (``models``) and its infinite-width kernel
(``theory``) read the same entry, so they cannot describe different nonlinearities.

``fn(x, negative_slope)`` is phi. ``dual(negative_slope, q1, c, q2, same)`` is
(E[phi(u) phi(v)], E[phi'(u) phi'(v)]) for (u, v) ~ N(0, [[q1, c], [c, q2]]); arguments
broadcast, so one formula gives matrices and diagonals, and ``same`` marks entries where u and
v are one variable (a Gram matrix's diagonal).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from memjax._registry import Registry

Dual = Callable[..., tuple[jax.Array, jax.Array]]


class Activation(NamedTuple):
    fn: Callable[[jax.Array, float], jax.Array]  # phi(x; negative_slope)
    dual: Dual  # (negative_slope, q1, c, q2, same) -> (k, kdot)


ACTIVATIONS: Registry[Activation] = Registry("activation")


def activation(name: str, fn: Callable[[jax.Array, float], jax.Array]) -> Callable[[Dual], Dual]:
    """Register ``name`` with its function ``fn``; the decorated function is its dual."""

    def add(dual: Dual) -> Dual:
        ACTIVATIONS.register(name)(Activation(fn, dual))
        return dual

    return add


def _rectifier(a, q1, c, q2, same):
    """Leaky ReLU's dual with slope ``a`` below 0 (ReLU: a = 0)."""
    pi = math.pi
    # theta = arccos(rho) as atan2(sqrt(q1 q2 - c^2), c): exact 0 when c**2 = q1 q2; on the
    # diagonal exactly 0 rather than sqrt(round-off), ~1e-4 relative accuracy in float32
    sin_part = jnp.sqrt(jnp.maximum(q1 * q2 - c**2, 0.0))
    theta = jnp.where(same, 0.0, jnp.arctan2(sin_part, c))
    sin_part = jnp.where(same, 0.0, sin_part)
    k = a * c + (1 - a) ** 2 / (2 * pi) * (sin_part + (pi - theta) * c)
    kdot = a + (1 - a) ** 2 * (pi - theta) / (2 * pi)
    return k, kdot


@activation("relu", lambda x, negative_slope: jax.nn.relu(x))
def _relu(negative_slope, q1, c, q2, same=False):
    return _rectifier(0.0, q1, c, q2, same)


@activation("erf", lambda x, negative_slope: jax.scipy.special.erf(x))
def _erf(negative_slope, q1, c, q2, same=False):
    pi = math.pi
    Q = (1 + 2 * q1) * (1 + 2 * q2)
    k = 2 / pi * jnp.arcsin(jnp.clip(2 * c / jnp.sqrt(Q), -1.0, 1.0))
    kdot = 4 / (pi * jnp.sqrt(Q - 4 * c**2))
    return k, kdot


@activation("gelu", lambda x, negative_slope: jax.nn.gelu(x, approximate=False))
def _gelu(negative_slope, q1, c, q2, same=False):
    pi = math.pi
    AB = (1 + q1) * (1 + q2)
    D = AB - c**2
    sqrt_d = jnp.sqrt(D)
    P = 0.25 + jnp.arcsin(jnp.clip(c / jnp.sqrt(AB), -1.0, 1.0)) / (2 * pi)
    k = c * P + (c**2 + q1 * q2 * D) / (2 * pi * AB * sqrt_d)
    kdot = P + c / (2 * pi * sqrt_d) * (1 + 1 / D + (1 - q1 * q2) / AB)
    return k, kdot


@activation("leaky_relu", lambda x, negative_slope: jax.nn.leaky_relu(x, negative_slope))
def _leaky_relu(negative_slope, q1, c, q2, same=False):
    return _rectifier(negative_slope, q1, c, q2, same)
