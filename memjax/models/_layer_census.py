"""Layer census: per layer type, the forward FLOPs and activations of one example.

The counts come from the model's own forward pass, traced abstractly (``jax.eval_shape``,
nothing is computed), with every flax module call intercepted: a module that owns a
``kernel`` parameter is a convolution (kernel rank > 2) or a dense layer (rank 2) and costs
2 FLOPs per multiply-add, ``2 * prod(output.shape[1:]) * prod(kernel.shape[:-1])``; a module
that owns only vector parameters (a BatchNorm or GroupNorm, say) is a normalization layer
and costs no matmul FLOPs. Every such layer's output counts as one activation the backward
pass keeps. So the census holds for any spec, including ones added later, and is
independent of each spec's hand-written ``matmul_flops``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from memjax.models._specs import Spec

__all__ = ["LayerCensus", "layer_census", "KINDS"]

KINDS = ("conv", "dense", "norm")


@dataclass(frozen=True)
class LayerCensus:
    """Per example: forward matmul FLOPs by kind (conv, dense; norm is 0), output elements
    by kind, and the number of layers of each kind."""

    flops: dict[str, int]
    activations: dict[str, int]
    layers: dict[str, int]

    @property
    def forward_flops(self) -> int:
        return sum(self.flops.values())

    @property
    def activation_elements(self) -> int:
        return sum(self.activations.values())


def _own_arrays(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a module owns itself (not those of its submodules)."""
    return {k: v for k, v in params.items() if not isinstance(v, Mapping)}


@functools.lru_cache(maxsize=64)
def layer_census(spec: Spec, input_shape: tuple[int, ...], num_classes: int) -> LayerCensus:
    """Count ``spec``'s layers on one example of shape ``input_shape`` (no batch axis)."""
    flops = dict.fromkeys(KINDS, 0)
    acts = dict.fromkeys(KINDS, 0)
    layers = dict.fromkeys(KINDS, 0)

    def count(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__" or not isinstance(out, jax.Array):
            return out
        own = _own_arrays(context.module.variables.get("params", {}))
        if not own:
            return out
        kernel = own.get("kernel")
        kind = "norm" if kernel is None else "conv" if kernel.ndim > 2 else "dense"
        per_example = math.prod(out.shape[1:])
        if kernel is not None:
            flops[kind] += 2 * per_example * math.prod(kernel.shape[:-1])
        acts[kind] += per_example
        layers[kind] += 1
        return out

    module = spec.module(num_classes)
    dummy = jnp.zeros((1, *input_shape), jnp.float32)
    with nn.intercept_methods(count):
        jax.eval_shape(lambda key: module.init(key, dummy), jax.random.PRNGKey(0))
    return LayerCensus(flops, acts, layers)
