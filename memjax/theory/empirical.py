"""Empirical (finite-width) NTK of given weights: Gram matrix of parameter Jacobians.

``Theta[i, j, c, d] = sum over parameters p of  df_c(x1_i)/dp * df_d(x2_j)/dp``, summed over
every leaf of the params pytree. Two exact ways to compute a block of it (Novak et al.,
"Fast finite width neural tangent kernel", 2022):

* ``"jacobian"``: per-example Jacobians of both blocks, then one contraction. Cost about
  ``b1 b2 C**2 P`` FLOPs (``b1 b2 C P`` for the trace) plus the Jacobians.
* ``"ntvp"`` (NTK-vector products): for each output of the second block, a vjp gives a
  parameter-space vector, and a jvp of the first block along it gives one column. Cost about
  ``3 b1 b2 C F`` with F the forward FLOPs per example.

``method="auto"`` takes the cheaper by these counts (F measured by XLA's cost analysis): for
dense layers (F ~ 2P) NTK-vector products win for the full C x C kernel, Jacobian
contraction for the trace; weight sharing (F >> P) favours Jacobians.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from memjax._deprecation import renamed_keyword
from memjax.errors import ConfigError
from memjax.theory.analytic import float_dtype

__all__ = ["empirical_ntk", "choose_method", "forward_flops"]

METHODS = ("auto", "jacobian", "ntvp")
TILE_ELEMENTS = 2**25  # parameter-space floats held per tile (b * C * P)

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def _outputs(apply_fn: ApplyFn, params: Any, x: jax.Array) -> jax.Array:
    out = apply_fn(params, x)
    return out[:, None] if out.ndim == 1 else out


def forward_flops(apply_fn: ApplyFn, params: Any, x: jax.Array) -> float | None:
    """XLA's FLOP count of the forward pass on one example (None if unavailable)."""
    try:
        cost = jax.jit(apply_fn).lower(params, x[:1]).cost_analysis()
    except Exception:  # cost analysis is best-effort; the caller falls back to dense counts
        return None
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def choose_method(n_params: int, n_outputs: int, forward_flops: float, trace: bool) -> str:
    """The cheaper exact method by the FLOP counts in the module docstring."""
    contraction = n_params * (1 if trace else n_outputs)
    return "jacobian" if contraction <= 3 * forward_flops else "ntvp"


def _jacobian_block(apply_fn: ApplyFn, params: Any, x1, x2, trace: bool) -> jax.Array:
    def per_example(x):
        return jax.jacrev(lambda p: _outputs(apply_fn, p, x[None])[0])(params)

    j1 = jax.vmap(per_example)(x1)
    j2 = jax.vmap(per_example)(x2)
    spec = "ic...,jc...->ij" if trace else "ic...,jd...->ijcd"
    leaves = zip(jax.tree.leaves(j1), jax.tree.leaves(j2), strict=True)
    return sum(jnp.einsum(spec, a, b) for a, b in leaves)


def _ntvp_block(apply_fn: ApplyFn, params: Any, x1, x2, trace: bool) -> jax.Array:
    out2, vjp2 = jax.vjp(lambda p: _outputs(apply_fn, p, x2), params)
    b2, C = out2.shape
    basis = jnp.eye(b2 * C, dtype=out2.dtype).reshape(b2 * C, b2, C)

    def column(cotangent):
        (vec,) = vjp2(cotangent)
        return jax.jvp(lambda p: _outputs(apply_fn, p, x1), (params,), (vec,))[1]

    cols = jax.vmap(column)(basis)  # [(j, d), i, c]
    theta = cols.reshape(b2, C, -1, C).transpose(2, 0, 3, 1)  # [i, j, c, d]
    return jnp.trace(theta, axis1=2, axis2=3) if trace else theta


@functools.lru_cache(maxsize=32)
def _compiled_block(apply_fn: ApplyFn, method: str, trace: bool) -> Callable:
    """One jitted block function per (apply_fn, method, trace), reused across calls."""
    block_fn = _jacobian_block if method == "jacobian" else _ntvp_block
    return jax.jit(lambda p, u, v: block_fn(apply_fn, p, u, v, trace))


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    pad = -len(x) % rows
    return np.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))


@renamed_keyword("block_size", "tile_size")
def empirical_ntk(
    apply_fn: ApplyFn,
    params: Any,
    x1: np.ndarray,
    x2: np.ndarray | None = None,
    trace: bool = False,
    tile_size: int | None = None,
    method: str = "auto",
) -> np.ndarray:
    """The NTK of ``apply_fn(params, x) -> (b, C)`` (or (b,)) at ``params``: (n1, n2, C, C),
    or (n1, n2) with ``trace`` (the sum over c of Theta[..., c, c]).

    Tiles of ``tile_size`` examples of x1 and of x2 are computed one pair at a time (default:
    as many as keep ``block * C * P`` under 32M floats); with ``x2=None`` only the upper
    triangle of blocks is computed and mirrored. Computed in float64 when x64 is enabled.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}: use one of {METHODS}")
    dtype = float_dtype()
    params = jax.tree.map(lambda p: jnp.asarray(p, dtype), params)
    a = np.asarray(x1, dtype)
    b = a if x2 is None else np.asarray(x2, dtype)
    if a.ndim < 2 or b.ndim < 2 or a.shape[1:] != b.shape[1:] or 0 in (len(a), len(b)):
        raise ConfigError(
            f"x1 and x2 must be non-empty (n, ...) with equal trailing shapes, got "
            f"{a.shape} and {b.shape}"
        )
    n_params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
    C = jax.eval_shape(lambda p, x: _outputs(apply_fn, p, x), params, a[:1]).shape[1]
    if tile_size is None:
        tile_size = max(1, min(256, TILE_ELEMENTS // (C * n_params)))
    if tile_size < 1:
        raise ConfigError(f"tile_size must be a positive integer, got {tile_size}")
    if method == "auto":
        flops = forward_flops(apply_fn, params, jnp.asarray(a)) or 2.0 * n_params
        method = choose_method(n_params, C, flops, trace)
    compute = _compiled_block(apply_fn, method, trace)

    ra, rb = min(tile_size, len(a)), min(tile_size, len(b))
    ap, bp = _pad_rows(a, ra), _pad_rows(b, rb)
    shape = (len(ap), len(bp)) if trace else (len(ap), len(bp), C, C)
    out = np.empty(shape, dtype)
    for i in range(0, len(ap), ra):
        for j in range(i if x2 is None else 0, len(bp), rb):
            blk = np.asarray(compute(params, ap[i : i + ra], bp[j : j + rb]))
            out[i : i + ra, j : j + rb] = blk
            if x2 is None and j != i:  # symmetric: mirror the block below the diagonal
                out[j : j + rb, i : i + ra] = blk.T if trace else blk.transpose(1, 0, 3, 2)
    return out[: len(a), : len(b)]
