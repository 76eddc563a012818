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

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from memjax.errors import ConfigError
from memjax.models import ACTIVATIONS, MLP, PARAMETERIZATIONS

__all__ = ["kernel", "activation_dual", "float_dtype"]

TILE_ENTRIES = 2**22  # matrix entries per tile: ~10 temporaries of this size stay < 0.5 GB

KernelFn = Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


def float_dtype() -> np.dtype:
    """float64 if the user enabled jax_enable_x64, else float32 (never switched on here)."""
    return np.dtype(np.float64 if jax.config.jax_enable_x64 else np.float32)


def activation_dual(
    activation: str,
    negative_slope: float | jax.Array,
    q1: jax.Array,
    c: jax.Array,
    q2: jax.Array,
    same: jax.Array | bool = False,
) -> tuple[jax.Array, jax.Array]:
    """(E[phi(u) phi(v)], E[phi'(u) phi'(v)]) for (u, v) ~ N(0, [[q1, c], [c, q2]]).

    Arguments broadcast against each other, so the same code gives matrices and diagonals.
    ``same`` marks entries where u and v are one variable (a Gram matrix's diagonal): there
    the (leaky) ReLU angle is exactly 0 rather than sqrt(round-off), which would cost ~1e-4
    relative accuracy in float32.
    """
    return ACTIVATIONS[activation].dual(negative_slope, q1, c, q2, same)


class _Numbers(NamedTuple):
    """A spec's numbers, passed traced so that one compilation serves every spec of the same
    structure (activation, parameterization, depth)."""

    w2: jax.Array
    b2: jax.Array
    bias_grad: jax.Array  # 1 if the layers have a bias parameter (its gradient is 1), else 0
    slope: jax.Array
    fan_in: jax.Array  # (depth + 1,): fan-in of each Dense layer, input features first


def _structure(spec: MLP) -> tuple[str, str, int]:
    return spec.activation, spec.parameterization, len(spec.widths)


def _numbers(spec: MLP, d: int, dtype: np.dtype) -> _Numbers:
    b = spec.b_std
    return _Numbers(
        *(np.asarray(v, dtype) for v in (spec.W_std**2, 0 if b is None else b**2, b is not None)),
        np.asarray(spec.negative_slope, dtype),
        np.asarray((d, *spec.widths), dtype),
    )


def _dense(
    parameterization: str, h: _Numbers, layer: int, nngp: jax.Array, ntk: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """NNGP and NTK after Dense layer ``layer`` (see module docstring)."""
    out = h.w2 * nngp + h.b2
    rule = PARAMETERIZATIONS[parameterization].ntk
    return out, rule(out, nngp, ntk, h.w2, h.fan_in[layer], h.bias_grad)


@partial(jax.jit, static_argnums=0)
def _variances(structure: tuple[str, str, int], h: _Numbers, sq_norms: jax.Array) -> list:
    """Variance of each hidden layer's pre-activation for each input (length-n vectors)."""
    activation, _, depth = structure
    q = sq_norms / h.fan_in[0]
    out = []
    for _ in range(depth):
        q = h.w2 * q + h.b2
        out.append(q)
        q, _ = activation_dual(activation, h.slope, q, q, q, same=True)
    return out


@partial(jax.jit, static_argnums=(0, 1))
def _block(
    structure: tuple[str, str, int],
    symmetric: bool,
    h: _Numbers,
    x1: jax.Array,
    x2: jax.Array,
    q1: list[jax.Array],
    q2: list[jax.Array],
    row0: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Kernels of a block of rows of x1 (starting at row ``row0``) against all of x2.

    For a Gram matrix (``symmetric``) the diagonal entries are computed as variances (exact
    q and angle 0), not as covariances of two inputs that happen to coincide.
    """
    activation, parameterization, depth = structure
    nngp = x1 @ x2.T / h.fan_in[0]
    ntk = jnp.zeros_like(nngp)
    on_diag = (row0 + jnp.arange(x1.shape[0]))[:, None] == jnp.arange(x2.shape[0])[None, :]
    for layer in range(depth):
        nngp, ntk = _dense(parameterization, h, layer, nngp, ntk)
        if symmetric:
            nngp = jnp.where(on_diag, q1[layer][:, None], nngp)
        nngp, kdot = activation_dual(
            activation,
            h.slope,
            q1[layer][:, None],
            nngp,
            q2[layer][None, :],
            same=on_diag if symmetric else False,
        )
        ntk = ntk * kdot
    return _dense(parameterization, h, depth, nngp, ntk)


def _flat(x: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ConfigError(f"{name} must have shape (examples, features...), got {x.shape}")
    x = x.reshape(len(x), -1).astype(dtype)
    if not np.isfinite(x).all():
        raise ConfigError(f"{name} contains NaN or inf")
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
            raise ConfigError(f"x1 and x2 differ in features: {a.shape[1]} vs {b.shape[1]}")
        structure, h = _structure(spec), _numbers(spec, a.shape[1], dtype)
        qa = _variances(structure, h, np.sum(a**2, axis=1))
        qb = qa if x2 is None else _variances(structure, h, np.sum(b**2, axis=1))
        rows = max(1, min(len(a), TILE_ENTRIES // len(b)))
        nngp = np.empty((len(a), len(b)), dtype)
        ntk = np.empty((len(a), len(b)), dtype)
        for start in range(0, len(a), rows):
            stop = min(start + rows, len(a))
            pad = rows - (stop - start)  # pad the last block: one compilation for all blocks
            sl = slice(start, stop)
            xa = np.pad(a[sl], ((0, pad), (0, 0)))
            qa_blk = [jnp.pad(q[sl], (0, pad), constant_values=1.0) for q in qa]
            k, t = _block(structure, x2 is None, h, xa, b, qa_blk, qb, start)
            nngp[sl], ntk[sl] = np.asarray(k)[: stop - start], np.asarray(t)[: stop - start]
        return nngp, ntk

    return kernel_fn
