"""Dense-layer parameterizations, each registered once with what the network and its
infinite-width kernel need (neural-tangents' ``parameterization=`` switch of ``stax.Dense``):
the network's initialization and forward scales, and the kernel's NTK recursion.

Fan-in n, weights W (n, k) and bias b: y = w_scale * x @ W + b_scale * b with W ~ N(0,
w_init**2) and b ~ N(0, b_init**2).

* "ntk":      W, b ~ N(0, 1); y = W_std / sqrt(n) x @ W + b_std b (gradients scaled alike).
* "standard": W ~ N(0, W_std**2 / n), b ~ N(0, b_std**2); y = x @ W + b.

Both give the same NNGP; their NTKs differ (``ntk`` below).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

from memjax._registry import Registry


class Parameterization(NamedTuple):
    # (W_std, b_std, fan_in) -> (w_init, w_scale, b_init, b_scale)
    scales: Callable[[float, float, int], tuple[float, float, float, float]]
    # (nngp' = W_std**2 K + b2, nngp K, ntk T, W_std**2, fan_in, bias_grad) -> ntk T'
    ntk: Callable[..., Any]


PARAMETERIZATIONS: Registry[Parameterization] = Registry("parameterization")


PARAMETERIZATIONS.register("ntk")(
    Parameterization(
        scales=lambda w_std, b_std, n: (1.0, w_std / math.sqrt(n), 1.0, b_std),
        ntk=lambda out, nngp, ntk, w2, n, bias_grad: out + w2 * ntk,
    )
)
PARAMETERIZATIONS.register("standard")(
    Parameterization(
        scales=lambda w_std, b_std, n: (w_std / math.sqrt(n), 1.0, b_std, 1.0),
        # the weights' gradient is not scaled by 1/sqrt(n): this NTK grows with the widths
        ntk=lambda out, nngp, ntk, w2, n, bias_grad: n * nngp + bias_grad + w2 * ntk,
    )
)
