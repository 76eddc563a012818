"""`memjax bench`: a standard replica-training workload, timed, as one JSON line.

Workloads (the same as the peers' scripts in the project's shared bench folder); in both,
each replica trains on its own 2000-example half of 4000 training examples with batch 128
and drop_last (15 steps per epoch), and FLOPs count training matmuls as 3x the forward pass
over the examples actually trained on:

* ``mlp`` (default): MNIST-1D, MLP 40-256-256-10 ReLU, SGD momentum 0.9, lr 0.05.
* ``resnet``: CIFAR-shaped synthetic images (``bench_images``: 4000 train / 1000 test
  uint8 32x32x3, class templates plus noise), ResNet-9 with widths 16-32-64-128 and
  BatchNorm, random crop (pad 4, reflect) and flip, per-channel standardization on device,
  SGD lr 0.05 with Nesterov momentum 0.9 and weight decay 5e-4.

``examples`` shrinks either workload (test examples: a quarter of it) for a quick check; its
figures then no longer compare with the peers'.
"""

from __future__ import annotations

import resource
import time
from dataclasses import replace
from typing import Any

import jax
import numpy as np

from memjax import data, models, subsets
from memjax.errors import ConfigError
from memjax.train._config import TrainConfig
from memjax.train._engine import train_replicas
from memjax.train._memory import auto_group_size, replica_strategy

__all__ = [
    "run_bench",
    "WORKLOADS",
    "STANDARD_SPEC",
    "RESNET_SPEC",
    "standard_config",
    "resnet_config",
    "bench_images",
]

STANDARD_SPEC = models.MLP(
    widths=(256, 256), activation="relu", parameterization="standard", W_std=1.0, b_std=0.1
)
RESNET_SPEC = models.ResNet9(widths=(16, 32, 64, 128), norm="batch")
IMAGE_CLASSES = 10


def bench_images(seed: int = 0, n_train: int = 4000, n_test: int = 1000) -> data.Dataset:
    """The image workload's data: uint8 (n, 32, 32, 3) images of 10 classes, each a class
    template (8x8x3 standard normal values, each repeated over a 4x4 pixel block) times
    1.5 plus unit normal pixel noise, mapped by 128 + 40 x and clipped to [0, 255]. One
    numpy generator seeded with ``seed`` draws the templates, then the training labels and
    noise, then the test labels and noise (the peer script's order, so the same images)."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 1, (IMAGE_CLASSES, 8, 8, 3))
    templates = np.kron(coarse, np.ones((4, 4, 1)))

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, IMAGE_CLASSES, n)
        x = 1.5 * templates[y] + rng.normal(0, 1.0, (n, 32, 32, 3))
        return np.clip(128 + 40 * x, 0, 255).astype(np.uint8), y

    x, y = draw(n_train)
    xt, yt = draw(n_test)
    return data.from_arrays(x, y, xt, yt, IMAGE_CLASSES, name="bench-images")


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


def resnet_config(epochs: int, group_size: int = 0, vectorize: str = "auto") -> TrainConfig:
    """The standard recipe plus the peer ResNet's: Nesterov, weight decay, crops and flips."""
    return replace(
        standard_config(epochs, group_size, vectorize),
        nesterov=True,
        weight_decay=5e-4,
        augment="crop_flip",
    )


PEER_EXAMPLES = 4000  # training examples of both peer workloads (and 1000 test examples)


def _mnist1d(n_train: int, n_test: int) -> data.Dataset:
    return data.load("mnist1d", n_train=n_train, n_test=n_test)


def _images(n_train: int, n_test: int) -> data.Dataset:
    return bench_images(n_train=n_train, n_test=n_test)


# workload name -> (spec, data of (n_train, n_test), config)
WORKLOADS = {
    "mlp": (STANDARD_SPEC, _mnist1d, standard_config),
    "resnet": (RESNET_SPEC, _images, resnet_config),
}


def _peak_memory_mb() -> float:
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if dev.platform != "cpu" else None
    if stats and "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _steady_seconds(spec, ds, masks, cfg: TrainConfig, seed: int, *, repeat_s: float = 1.0):
    """(both outputs, first call's seconds with compilation, the fastest later call's).

    Later calls repeat until they have taken ``repeat_s`` in all (at most 5, at least 1):
    other load on the machine only ever adds time, so the fastest call is the estimate
    (as ``timeit`` advises), and a sub-second call is not left to one noisy sample."""
    t0 = time.perf_counter()
    first = train_replicas(spec, ds, masks, cfg, seed=seed)
    first_s = time.perf_counter() - t0
    times: list[float] = []
    while not times or (sum(times) < repeat_s and len(times) < 5):
        t0 = time.perf_counter()
        out = train_replicas(spec, ds, masks, cfg, seed=seed)
        times.append(time.perf_counter() - t0)
    return (first, out), first_s, min(times)


def run_bench(
    replicas: int,
    epochs: int,
    group_size: int = 0,
    seed: int = 0,
    vectorize: str = "auto",
    workload: str = "mlp",
    *,
    examples: int = PEER_EXAMPLES,
) -> dict[str, Any]:
    """Time whole calls of E and of 2E epochs, each compiled first and timed by its fastest
    repeat; their difference is E epochs of training alone (initialization, final evaluation
    and per-call costs cancel), the quantity the peers' ``train_s`` measures. ``call_s`` is
    one whole E-epoch call. ``examples`` training examples (and a quarter as many test
    examples); each replica's half of them must hold at least one batch of 128."""
    if workload not in WORKLOADS:
        raise ConfigError(f"unknown workload {workload!r}: use one of {sorted(WORKLOADS)}")
    if not 256 <= examples <= PEER_EXAMPLES:
        raise ConfigError(
            f"examples={examples}: use 256 to {PEER_EXAMPLES} (a replica trains on half of"
            " them in batches of 128)"
        )
    spec, load, make_config = WORKLOADS[workload]
    ds = load(examples, examples // 4)
    masks = subsets.sample(ds.n_train, replicas, 0.5, seed, design="fixed")
    cfg = make_config(epochs, group_size, vectorize)
    (first, out), first_s, call_s = _steady_seconds(spec, ds, masks, cfg, seed)
    _, _, double_s = _steady_seconds(spec, ds, masks, replace(cfg, epochs=2 * epochs), seed)
    train_s = double_s - call_s
    if train_s <= 0:
        raise RuntimeError(
            f"{2 * epochs} epochs took {double_s:.2f} s, no longer than {epochs} ({call_s:.2f} s):"
            " the machine's load swamped the measurement; rerun with more epochs"
        )
    steps = int(masks.sum(1).min()) // cfg.batch_size
    trained = steps * cfg.batch_size  # examples per replica-epoch
    gflop = 3 * spec.matmul_flops(ds.input_shape, ds.num_classes) * trained / 1e9
    rate = replicas * epochs / train_s

    def sig(v: float) -> float:
        return float(f"{v:.4g}")  # significant figures: CPU rates < 1

    return {
        "workload": workload,
        "replicas": replicas,
        "epochs": epochs,
        "examples": examples,
        "replica_epochs_per_s": sig(rate),
        "gflops": sig(rate * gflop),
        "replica_epochs_per_s_e2e": sig(replicas * epochs / call_s),
        "compile_s": round(max(first_s - call_s, 0.0), 2),
        "peak_memory_mb": round(_peak_memory_mb(), 1),
        "train_s": round(train_s, 3),
        "call_s": round(call_s, 3),
        "eval_s": round(call_s - train_s, 3),  # negative: load noise exceeded it
        "gflop_per_replica_epoch": round(gflop, 4),
        "test_accuracy_mean": round(float(out.test_correct.mean()), 4),
        "deterministic": bool(np.array_equal(first.train_margin, out.train_margin)),
        "group_size": group_size or auto_group_size(spec, ds, cfg),
        "vectorize": replica_strategy(cfg),
        "devices": len(jax.local_devices()),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
    }
