"""Memory model of replica training: sizes chunks and groups before anything is compiled.

The estimate is analytic (parameter count from the spec's abstract init, activations from
the batch and layer widths) so a chunk size can be chosen without compiling a program that
might not fit.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp

from memjax.config import TrainConfig
from memjax.data import Dataset
from memjax.models import Spec, build_network

__all__ = [
    "parameter_count",
    "replica_bytes",
    "output_bytes",
    "auto_group_size",
    "replica_strategy",
    "available_memory_bytes",
    "choose_chunk_size",
]

# Working set per vectorized group that keeps parameters, gradients and optimizer state in
# a CPU's last-level cache; on accelerators larger groups only add parallelism.
CPU_GROUP_BYTES = 8 * 2**20
CPU_MAX_GROUP = 4
ACCELERATOR_GROUP = 128


def _variable_counts(spec: Spec, ds: Dataset) -> tuple[int, int]:
    """(parameters, state entries such as BatchNorm's running averages) of one replica."""
    net = build_network(spec, ds.input_shape, ds.num_classes)
    shapes = jax.eval_shape(net.init, jax.ShapeDtypeStruct((2,), jnp.uint32))
    return tuple(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree)) for tree in shapes)


def parameter_count(spec: Spec, ds: Dataset) -> int:
    return _variable_counts(spec, ds)[0]


def replica_bytes(spec: Spec, ds: Dataset, cfg: TrainConfig) -> int:
    """Training working set of one replica: params, grads, optimizer slots, state (float32)
    and activations (in the compute dtype)."""
    slots = {"sgd": 0, "momentum": 1, "adam": 2}[cfg.optimizer] + (1 if cfg.linearize else 0)
    n_params, n_state = _variable_counts(spec, ds)
    params = n_params * 4 * (3 + slots) + n_state * 4
    act = jnp.dtype(cfg.compute_dtype).itemsize
    batch = ds.n_train if cfg.batch_size is None else min(cfg.batch_size, ds.n_train)
    fwd = spec.matmul_flops(ds.input_shape, ds.num_classes)
    # activations scale like forward FLOPs per example over the mean fan-in; x3 for the
    # backward pass's copies
    width_sum = max(fwd // (2 * max(math.prod(ds.input_shape), 1)), ds.num_classes)
    return params + 3 * act * batch * width_sum


def output_bytes(ds: Dataset, cfg: TrainConfig) -> int:
    """Host/device bytes of one replica's outputs (final metrics, per-presentation counts and
    their one-bit state, trajectories)."""
    final = (ds.n_train + ds.n_test) * (1 + 4 + 4) + ds.n_train * (1 + 4 + 4)
    records = len(cfg.recorded_epochs())
    per_record = ds.n_train * (1 + 4 * (3 + int(cfg.record_grad_norm)))
    return final + records * per_record


def auto_group_size(spec: Spec, ds: Dataset, cfg: TrainConfig) -> int:
    """Replicas per vectorized group: cache-sized on CPU, wide on accelerators.

    It depends on the model and data only, never on how many replicas a call trains: XLA
    picks kernels by batch size, so a group size that followed the chunk would make a
    replica's floating-point result depend on its chunk.
    """
    if jax.default_backend() != "cpu":
        return ACCELERATOR_GROUP
    fit = max(1, CPU_GROUP_BYTES // replica_bytes(spec, ds, cfg))
    return int(min(CPU_MAX_GROUP, 2 ** int(math.log2(fit))))


def replica_strategy(cfg: TrainConfig) -> str:
    """How a group's replicas are mapped: cfg.vectorize, or by backend when "auto"."""
    if cfg.vectorize != "auto":
        return cfg.vectorize
    return "unroll" if jax.default_backend() == "cpu" else "vmap"


def available_memory_bytes() -> int:
    """Memory one chunk may use: the device's limit on accelerators, free RAM on CPU."""
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_chunk_size(
    spec: Spec, ds: Dataset, cfg: TrainConfig, replicas: int, budget_fraction: float = 0.25
) -> int:
    """Largest chunk (<= replicas, <= 1024) whose outputs and groups fit the memory budget."""
    budget = available_memory_bytes() * budget_fraction
    devices = len(jax.local_devices())
    group = cfg.group_size or auto_group_size(spec, ds, cfg)
    fixed = group * devices * replica_bytes(spec, ds, cfg) + 4 * ds.x_train.nbytes
    per = output_bytes(ds, cfg) * 2  # device result + host copy
    fit = int(max(budget - fixed, per) // per)
    if fit < 1:
        raise MemoryError(f"one replica's outputs ({per} bytes) exceed the budget ({budget:.0f})")
    return max(1, min(replicas, 1024, fit))
