"""`memjax bench`: the standard replica-training workload, timed, as one JSON line.

Workload (the same as the peers' scripts in the project's shared bench folder): MNIST-1D,
MLP 40-256-256-10 ReLU, SGD momentum 0.9, lr 0.05, batch 128 with drop_last (15 steps of
each replica's own 2000-example subset per epoch), ratio 0.5. FLOPs count training matmuls
as 3x the forward pass over the examples actually trained on.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import jax
import numpy as np

from memjax import data, models, subsets
from memjax.config import TrainConfig
from memjax.train import train_replicas
from memjax.train_memory import auto_group_size, replica_strategy

__all__ = ["run_bench", "STANDARD_SPEC", "standard_config"]

STANDARD_SPEC = models.MLP(
    widths=(256, 256), activation="relu", parameterization="standard", W_std=1.0, b_std=0.1
)


def standard_config(epochs: int, group_size: int = 0, vectorize: str = "auto") -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        batch_size=128,
        optimizer="momentum",
        learning_rate=0.05,
        momentum=0.9,
        drop_last=True,
        group_size=group_size,
        vectorize=vectorize,
    )


def _peak_memory_mb() -> float:
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_bench(
    replicas: int, epochs: int, group_size: int = 0, seed: int = 0, vectorize: str = "auto"
) -> dict[str, Any]:
    """Compile once, then time one steady-state run (training plus the final evaluation)."""
    ds = data.load("mnist1d")
    masks = subsets.sample(ds.n_train, replicas, 0.5, seed, design="fixed")
    cfg = standard_config(epochs, group_size, vectorize)
    t0 = time.perf_counter()
    first = train_replicas(STANDARD_SPEC, ds, masks, cfg, seed=seed)
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = train_replicas(STANDARD_SPEC, ds, masks, cfg, seed=seed)
    train_s = time.perf_counter() - t0
    steps = int(masks.sum(1).min()) // cfg.batch_size
    examples = steps * cfg.batch_size
    gflop = 3 * STANDARD_SPEC.matmul_flops(ds.input_shape, ds.num_classes) * examples / 1e9
    rate = replicas * epochs / train_s
    return {
        "replicas": replicas,
        "epochs": epochs,
        "replica_epochs_per_s": round(rate, 2),
        "gflops": round(rate * gflop, 1),
        "compile_s": round(max(first_s - train_s, 0.0), 2),
        "peak_memory_mb": round(_peak_memory_mb(), 1),
        "train_s": round(train_s, 3),
        "includes_final_eval": True,
        "gflop_per_replica_epoch": round(gflop, 4),
        "test_accuracy_mean": round(float(out.test_correct.mean()), 4),
        "deterministic": bool(np.array_equal(first.train_margin, out.train_margin)),
        "group_size": group_size or auto_group_size(STANDARD_SPEC, ds, cfg),
        "vectorize": replica_strategy(cfg),
        "devices": len(jax.local_devices()),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
    }
