"""Memory model of replica training: sizes chunks and groups before anything is compiled.

The estimate is analytic (parameter count from the spec's abstract init, activations from
the layer census of its forward pass at the batch size) so group and chunk sizes can be
chosen without compiling a program that might not fit. ``device_memory`` and ``backend``
let the planner (memjax.study.plan_study) size them for a device other than the local one.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp

from memjax.data import Dataset
from memjax.models import Spec, build_network, layer_census
from memjax.train._config import TrainConfig

__all__ = [
    "parameter_count",
    "replica_memory",
    "replica_bytes",
    "output_bytes",
    "auto_group_size",
    "replica_strategy",
    "device_memory_bytes",
    "available_memory_bytes",
    "choose_chunk_size",
]

# Working set per vectorized group that keeps parameters, gradients and optimizer state in
# a CPU's last-level cache (3.5 MiB keeps the groups the benchmarked small nets used); on
# accelerators larger groups only add parallelism, up to ACCELERATOR_GROUP replicas whose
# working sets fit in ACCELERATOR_GROUP_FRACTION of the device's memory.
CPU_GROUP_BYTES = int(3.5 * 2**20)
CPU_MAX_GROUP = 4
ACCELERATOR_GROUP = 128
ACCELERATOR_GROUP_FRACTION = 0.5
# Copies of each layer output the training step holds: the forward value, the value the
# backward pass keeps (pre-activation / normalized input) and its gradient.
ACTIVATION_COPIES = 3


@functools.lru_cache(maxsize=64)
def _counts(spec: Spec, input_shape: tuple[int, ...], num_classes: int) -> tuple[int, int]:
    net = build_network(spec, input_shape, num_classes)
    shapes = jax.eval_shape(net.init, jax.ShapeDtypeStruct((2,), jnp.uint32))
    return tuple(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree)) for tree in shapes)


def _variable_counts(spec: Spec, ds: Dataset) -> tuple[int, int]:
    """(parameters, state entries such as BatchNorm's running averages) of one replica."""
    return _counts(spec, ds.input_shape, ds.num_classes)


def parameter_count(spec: Spec, ds: Dataset) -> int:
    return _variable_counts(spec, ds)[0]


def replica_memory(spec: Spec, ds: Dataset, cfg: TrainConfig) -> dict[str, int]:
    """Training working set of one replica in bytes, by part: parameters, gradients (the
    gradient and the update), optimizer_state (its slots, the initial parameters of a
    linearized net, the parameter EMA), state (BatchNorm's running
    averages; float32) and activations (every layer output of the forward pass at the batch
    size, ACTIVATION_COPIES times, in the compute dtype)."""
    slots = {"sgd": 0, "momentum": 1, "adam": 2}[cfg.optimizer]
    slots += int(cfg.linearize) + int(cfg.ema_decay > 0)  # params0; the parameter EMA
    n_params, n_state = _variable_counts(spec, ds)
    act = jnp.dtype(cfg.compute_dtype).itemsize
    batch = ds.n_train if cfg.batch_size is None else min(cfg.batch_size, ds.n_train)
    census = layer_census(spec, ds.input_shape, ds.num_classes)
    return {
        "parameters": 4 * n_params,
        "gradients": 2 * 4 * n_params,
        "optimizer_state": slots * 4 * n_params,
        "state": 4 * n_state,
        "activations": ACTIVATION_COPIES * act * batch * census.activation_elements,
    }


def replica_bytes(spec: Spec, ds: Dataset, cfg: TrainConfig) -> int:
    """Training working set of one replica: the sum of ``replica_memory``'s parts."""
    return sum(replica_memory(spec, ds, cfg).values())


def output_bytes(ds: Dataset, cfg: TrainConfig) -> int:
    """Host/device bytes of one replica's outputs (final metrics, per-presentation counts and
    their one-bit state, trajectories)."""
    final = (ds.n_train + ds.n_test) * (1 + 4 + 4) + ds.n_train * (1 + 4 + 4)
    records = len(cfg.recorded_epochs())
    per_record = ds.n_train * (1 + 4 * (3 + int(cfg.record_grad_norm)))
    return final + records * per_record


def auto_group_size(
    spec: Spec,
    ds: Dataset,
    cfg: TrainConfig,
    backend: str | None = None,
    device_memory: int | None = None,
) -> int:
    """Replicas per vectorized group: cache-sized on CPU, wide on accelerators (a power of
    two up to ACCELERATOR_GROUP whose working sets fit in a fraction of the device memory,
    default the local device's total).

    It depends on the model, data and device only, never on how many replicas a call
    trains: XLA picks kernels by batch size, so a group size that followed the chunk would
    make a replica's floating-point result depend on its chunk.
    """
    backend = backend or jax.default_backend()
    per_replica = replica_bytes(spec, ds, cfg)
    if backend == "cpu":
        fit, cap = CPU_GROUP_BYTES // per_replica, CPU_MAX_GROUP
    else:
        memory = device_memory or device_memory_bytes()
        fit, cap = int(memory * ACCELERATOR_GROUP_FRACTION) // per_replica, ACCELERATOR_GROUP
    return int(min(cap, 2 ** int(math.log2(max(1, fit)))))


def replica_strategy(cfg: TrainConfig) -> str:
    """How a group's replicas are mapped: cfg.vectorize, or by backend when "auto"."""
    if cfg.vectorize != "auto":
        return cfg.vectorize
    return "unroll" if jax.default_backend() == "cpu" else "vmap"


def device_memory_bytes() -> int:
    """Total memory of the local device (its allocator's limit; physical RAM on CPU)."""
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def available_memory_bytes() -> int:
    """Memory one chunk may use: the device's limit on accelerators, free RAM on CPU."""
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def choose_chunk_size(
    spec: Spec,
    ds: Dataset,
    cfg: TrainConfig,
    replicas: int,
    budget_fraction: float = 0.25,
    device_memory: int | None = None,
    devices: int | None = None,
    backend: str | None = None,
) -> int:
    """Largest chunk (<= replicas, <= 1024) whose outputs and groups fit the memory budget
    (default: the local devices and their available memory); at least, and a multiple of,
    one group per device, since a smaller chunk's call is padded to that many replicas."""
    budget = (device_memory or available_memory_bytes()) * budget_fraction
    devices = devices or len(jax.local_devices())
    group = cfg.group_size or auto_group_size(spec, ds, cfg, backend, device_memory)
    fixed = group * devices * replica_bytes(spec, ds, cfg) + 4 * ds.x_train.nbytes
    per = output_bytes(ds, cfg) * 2  # device result + host copy
    fit = int(max(budget - fixed, per) // per)
    if fit < 1:
        raise MemoryError(f"one replica's outputs ({per} bytes) exceed the budget ({budget:.0f})")
    per_call = group * devices
    return max(1, min(replicas, 1024, max(fit // per_call, 1) * per_call))
