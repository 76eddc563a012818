"""Process set-up: on CPU, one JAX device per core, so replicas train side by side.

A replica's training step is a chain of small matmuls (one MLP layer on a batch of 128 is a
few MFLOP). Splitting each of them over all cores costs more in synchronization than it
gains; giving each core its own device lets the trainer's replica sharding run independent
replicas on separate cores instead (on the standard benchmark, 2 cores: ~1.6x the
throughput of one device). Results do not change: a replica's run does not depend on the
device count. Accelerators are unaffected: this only sizes the CPU backend.
"""

from __future__ import annotations

import os
import re

import jax

from memjax.errors import ConfigError

__all__ = ["use_cpu_cores", "usable_cores"]

_FORCED_COUNT = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # platforms without affinity masks
        return os.cpu_count() or 1


def use_cpu_cores(count: int | None = None) -> int:
    """Split the CPU backend into ``count`` devices (default: one per usable core).

    Call it right after ``import memjax``, before any JAX computation; the ``memjax``
    command does. A device count the user already chose (``jax_num_cpu_devices`` or
    ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS``) is kept. Returns the
    number of CPU devices the process will have, or 0 if JAX was already initialized and
    the layout could no longer change.
    """
    if count is not None and count < 1:
        raise ConfigError(f"CPU device count must be >= 1, got {count}")
    configured = jax.config.jax_num_cpu_devices
    if configured > 0:
        return configured
    forced = _FORCED_COUNT.search(os.environ.get("XLA_FLAGS", ""))
    if forced:
        return int(forced.group(1))
    try:
        jax.config.update("jax_num_cpu_devices", count or usable_cores())
    except RuntimeError:  # backends already initialized
        return 0
    return jax.config.jax_num_cpu_devices
