"""Closed-form infinite-width NNGP and NTK of memjax's MLP spec.

The recursion follows neural-tangents' ``stax`` conventions exactly, so that
``kernel(MLP(widths, ...))`` equals the ``kernel_fn`` of
``stax.serial([Dense(w, W_std, b_std, parameterization=P), act] * depth,
Dense(1, W_std, b_std, parameterization=P))`` with the input kernel ``x.x' / d``.

Dense layer with fan-in ``n`` (nngp K, ntk T of its input; ``b2 = b_std**2`` or 0 if None):

* nngp:            ``K' = W_std**2 * K + b2``
* ntk, "ntk":      ``T' = K' + W_std**2 * T``
* ntk, "standard": ``T' = n * K + [1 if a bias exists] + W_std**2 * T`` (the weights'
  gradient is not scaled by 1/sqrt(n), so this NTK grows with the widths).

Activation on pre-activations (u, v) ~ N(0, [[q1, c], [c, q2]]): ``K = E[phi(u) phi(v)]`` and
``T <- T * E[phi'(u) phi'(v)]``. Closed forms (rho = c / sqrt(q1 q2), theta = arccos rho):

* (leaky) ReLU, phi(x) = a*min(x, 0) + max(x, 0) (arc-cosine kernel; a = 0 for relu):
  ``E[phi phi] = a c + (1-a)**2 / (2 pi) * (sqrt(q1 q2 - c**2) + (pi - theta) c)``,
  ``E[phi' phi'] = a + (1-a)**2 (pi - theta) / (2 pi)``.
* erf (Williams' arcsine kernel), with ``Q = (1 + 2 q1)(1 + 2 q2)``:
  ``E = 2/pi arcsin(2c / sqrt(Q))``, ``E' = 4 / (pi sqrt(Q - 4 c**2))``.
* GELU phi(x) = x Phi(x), with ``A = 1+q1, B = 1+q2, D = AB - c**2`` and
  ``P = 1/4 + arcsin(c / sqrt(AB)) / (2 pi)`` (= E[Phi(u) Phi(v)]):
  ``E = c P + (c**2 + q1 q2 D) / (2 pi A B sqrt(D))``,
  ``E' = P + c / (2 pi sqrt(D)) * (1 + 1/D + (1 - q1 q2) / (AB))``.
  Derivation: write Phi(u) = P(z1 <= u) with independent z1, z2 ~ N(0, 1), so
  E = E[u v 1{u - z1 >= 0} 1{v - z2 >= 0}]; Gaussian integration by parts in u leaves a
  quadrant probability and two one-dimensional Gaussian integrals. E' = dE/dc (Price's
  theorem).

The n1 x n2 matrices are computed over blocks of rows (a fixed number of matrix entries per
block), in float64 when the user has enabled ``jax_enable_x64`` and float32 otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from memjax.models import MLP

__all__ = ["kernel", "activation_dual", "float_dtype"]

BLOCK_ENTRIES = 2**22  # matrix entries per block: ~10 temporaries of this size stay < 0.5 GB

KernelFn = Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


def float_dtype() -> np.dtype:
    """float64 if the user enabled jax_enable_x64, else float32 (never switched on here)."""
    return np.dtype(np.float64 if jax.config.jax_enable_x64 else np.float32)


def activation_dual(
    activation: str, negative_slope: float, q1: jax.Array, c: jax.Array, q2: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(E[phi(u) phi(v)], E[phi'(u) phi'(v)]) for (u, v) ~ N(0, [[q1, c], [c, q2]]).

    Arguments broadcast against each other, so the same code gives matrices and diagonals.
    """
    pi = math.pi
    if activation in ("relu", "leaky_relu"):
        a = negative_slope if activation == "leaky_relu" else 0.0
        prod = q1 * q2
        s = jnp.sqrt(prod)
        cos = jnp.clip(c / jnp.where(s > 0, s, 1.0), -1.0, 1.0)
        theta = jnp.arccos(cos)
        sin_part = jnp.sqrt(jnp.maximum(prod - c**2, 0.0))
        k = a * c + (1 - a) ** 2 / (2 * pi) * (sin_part + (pi - theta) * c)
        kdot = a + (1 - a) ** 2 * (pi - theta) / (2 * pi)
        return k, kdot
    if activation == "erf":
        Q = (1 + 2 * q1) * (1 + 2 * q2)
        k = 2 / pi * jnp.arcsin(jnp.clip(2 * c / jnp.sqrt(Q), -1.0, 1.0))
        kdot = 4 / (pi * jnp.sqrt(Q - 4 * c**2))
        return k, kdot
    if activation == "gelu":
        AB = (1 + q1) * (1 + q2)
        D = AB - c**2
        sqrt_d = jnp.sqrt(D)
        P = 0.25 + jnp.arcsin(jnp.clip(c / jnp.sqrt(AB), -1.0, 1.0)) / (2 * pi)
        k = c * P + (c**2 + q1 * q2 * D) / (2 * pi * AB * sqrt_d)
        kdot = P + c / (2 * pi * sqrt_d) * (1 + 1 / D + (1 - q1 * q2) / AB)
        return k, kdot
    raise ValueError(f"no closed-form kernel for activation {activation!r}")


def _affine(spec: MLP, nngp: jax.Array) -> jax.Array:
    return spec.W_std**2 * nngp + (0.0 if spec.b_std is None else spec.b_std**2)


def _dense(spec: MLP, fan_in: int, nngp: jax.Array, ntk: jax.Array) -> tuple[jax.Array, jax.Array]:
    """NNGP and NTK after one NTDense layer (see module docstring)."""
    w2 = spec.W_std**2
    out = _affine(spec, nngp)
    if spec.parameterization == "ntk":
        return out, out + w2 * ntk
    bias_grad = 0.0 if spec.b_std is None else 1.0
    return out, fan_in * nngp + bias_grad + w2 * ntk


def _preactivation_variances(spec: MLP, sq_norms: jax.Array, d: int) -> list[jax.Array]:
    """Variance of each hidden layer's pre-activation for each input (length-n vectors)."""
    q = sq_norms / d
    out = []
    for _ in spec.widths:
        q = _affine(spec, q)
        out.append(q)
        q, _ = activation_dual(spec.activation, spec.negative_slope, q, q, q)
    return out


@partial(jax.jit, static_argnums=0)
def _block(
    spec: MLP, x1: jax.Array, x2: jax.Array, q1: list[jax.Array], q2: list[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    d = x1.shape[1]
    nngp = x1 @ x2.T / d
    ntk = jnp.zeros_like(nngp)
    fan_in = d
    for layer, width in enumerate(spec.widths):
        nngp, ntk = _dense(spec, fan_in, nngp, ntk)
        nngp, kdot = activation_dual(
            spec.activation, spec.negative_slope, q1[layer][:, None], nngp, q2[layer][None, :]
        )
        ntk = ntk * kdot
        fan_in = width
    return _dense(spec, fan_in, nngp, ntk)


def _flat(x: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (examples, features...), got {x.shape}")
    x = x.reshape(len(x), -1).astype(dtype)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def kernel(spec: MLP) -> KernelFn:
    """``f(x1, x2=None) -> (nngp, ntk)``: the infinite-width kernels of exactly this MLP spec.

    Inputs are flattened; the result is the scalar-output kernel (the readout's C outputs are
    independent with this kernel each). Returns numpy arrays (n1, n2) computed over blocks
    of rows, so tens of thousands of examples fit in memory.
    """
    if not isinstance(spec, MLP):
        raise TypeError(
            f"analytic kernels exist for MLP specs only, got {type(spec).__name__}; load "
            "precomputed matrices with memjax.theory.load_kernel_file instead"
        )

    def kernel_fn(x1: np.ndarray, x2: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        dtype = float_dtype()
        a = _flat(x1, dtype, "x1")
        b = a if x2 is None else _flat(x2, dtype, "x2")
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"x1 and x2 differ in features: {a.shape[1]} vs {b.shape[1]}")
        d = a.shape[1]
        qa = _preactivation_variances(spec, jnp.sum(jnp.asarray(a) ** 2, axis=1), d)
        qb = (
            qa if x2 is None else _preactivation_variances(spec, jnp.sum(jnp.asarray(b) ** 2, 1), d)
        )
        rows = max(1, min(len(a), BLOCK_ENTRIES // len(b)))
        nngp = np.empty((len(a), len(b)), dtype)
        ntk = np.empty((len(a), len(b)), dtype)
        for start in range(0, len(a), rows):
            stop = min(start + rows, len(a))
            pad = rows - (stop - start)  # pad the last block: one compilation for all blocks
            sl = slice(start, stop)
            xa = np.pad(a[sl], ((0, pad), (0, 0)))
            qa_blk = [jnp.pad(q[sl], (0, pad), constant_values=1.0) for q in qa]
            k, t = _block(spec, jnp.asarray(xa), jnp.asarray(b), qa_blk, qb)
            nngp[sl], ntk[sl] = np.asarray(k)[: stop - start], np.asarray(t)[: stop - start]
        return nngp, ntk

    return kernel_fn
