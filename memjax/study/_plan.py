"""`memjax plan`: what a study will cost on a device, before it is run.

Work: training FLOPs per replica-epoch = 3 x the forward matmul FLOPs (forward plus
backward) of every example a replica trains on in one epoch, by layer type (the layer
census of memjax.models.layer_census); plus the final evaluation (one forward pass over every
train and test example) and the recorded trajectories. Memory: one replica's working set
(memjax.train's memory model: parameters, gradients, optimizer state, activations at the batch
size), the data every device holds, and the group and chunk sizes that fit the device.
Padding: a chunk's call trains a multiple of group x devices replicas (the last chunk is
padded to the chunk size too), so time and memory count the padded replicas; the group is
planned no larger than a chunk's share of a device, and ``warnings`` says when a chunk size
wastes more than a quarter of the work.

Time: FLOPs / (peak x efficiency). Peaks: the local CPU's measured on the spot (a float32
or bfloat16 matmul probe); accelerators' from their data sheets (DEVICES; float32 matmuls
run at the reduced precision JAX uses by default there: TF32 on NVIDIA GPUs, one bfloat16
pass on TPUs). The efficiency is measured on the local backend (a short steady-state run of
the study's own model and batch, one group per device); for a device that is not local it
is ASSUMED_EFFICIENCY, and the output says so. ``measure=True`` also trains one group per
device of the study's first replicas for one epoch on the real data (after compiling) and
extrapolates that to the whole study by FLOPs: ``measured_s`` next to ``predicted_s``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from memjax import subsets
from memjax.data import Dataset
from memjax.errors import ConfigError
from memjax.models import layer_census
from memjax.study._runner import MAX_CHUNK, StudyConfig
from memjax.train import (
    TrainConfig,
    auto_group_size,
    choose_chunk_size,
    device_memory_bytes,
    output_bytes,
    replica_memory,
    steps_per_epoch,
    train_replicas,
)
from memjax.train.queries import num_views

__all__ = ["DevicePeak", "DEVICES", "ASSUMED_EFFICIENCY", "plan_study", "cpu_peak_flops"]

# Fraction of a data-sheet peak assumed for a device plan cannot measure: CIFAR-scale nets
# at a per-replica batch of 128 keep tensor cores far from full (small convolutions,
# normalization and elementwise work between them). Replace it by running `memjax plan
# --measure` on the device itself.
ASSUMED_EFFICIENCY = 0.2
PROBE_SIZE = 1024
CALIBRATION_STEPS = 8
TIMED_RUNS = 2
CALIBRATION_EPOCHS = 3
CALIBRATION_SECONDS = 1.0
MAX_CALIBRATION_EPOCHS = 256


@dataclass(frozen=True)
class DevicePeak:
    """One accelerator chip from its data sheet: dense matmul peaks (FLOP/s) at float32
    inputs (the default precision's path) and bfloat16, and its memory (bytes)."""

    name: str
    backend: str
    float32_flops: float
    bfloat16_flops: float
    memory_bytes: int
    float32_path: str


DEVICES = {
    "A100": DevicePeak("NVIDIA A100 SXM 80GB", "gpu", 156e12, 312e12, 80 * 10**9, "TF32"),
    "H100": DevicePeak("NVIDIA H100 SXM 80GB", "gpu", 494.7e12, 989.4e12, 80 * 10**9, "TF32"),
    "H200": DevicePeak("NVIDIA H200 SXM 141GB", "gpu", 494.7e12, 989.4e12, 141 * 10**9, "TF32"),
    "TPU-v4": DevicePeak("Google TPU v4 (one chip)", "tpu", 275e12, 275e12, 32 * 2**30, "bf16"),
    "TPU-v5e": DevicePeak("Google TPU v5e (one chip)", "tpu", 197e12, 197e12, 16 * 10**9, "bf16"),
}


def cpu_peak_flops(dtype: str = "float32", size: int = PROBE_SIZE, repeats: int = 5) -> float:
    """Achievable matmul FLOP/s of the local CPU: best of ``repeats`` timed (size x size)
    products after a warm-up call."""
    a = jnp.ones((size, size), dtype)
    f = jax.jit(jnp.dot, device=jax.local_devices(backend="cpu")[0])
    f(a, a).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def _examples_per_epoch(subset_size: float, cfg: TrainConfig, n: int) -> float:
    """Examples one replica trains on per epoch (drop_last drops the partial batch)."""
    if cfg.batch_size is None or not cfg.drop_last:
        return subset_size
    b = min(cfg.batch_size, n)
    return float(steps_per_epoch(int(subset_size), cfg, n) * b)


def _work(cfg: StudyConfig, ds: Dataset) -> dict[str, Any]:
    """FLOPs of the study: per replica-epoch by layer type, per replica's evaluations (of
    every train and test example, also under each augmented query view, and the recorded
    trajectories)."""
    census = layer_census(cfg.model, ds.input_shape, ds.num_classes)
    ids = np.arange(min(cfg.replicas, 8))
    masks = subsets.sample(ds.n_train, cfg.replicas, cfg.ratio, cfg.seed, cfg.design, ids)
    size = float(masks.sum(1).mean())
    examples = _examples_per_epoch(size, cfg.train, ds.n_train)
    by_kind = {k: 3 * f * examples for k, f in census.flops.items() if k != "norm"}
    t = cfg.train
    records = len(t.recorded_epochs())
    per_record = ds.n_train * census.forward_flops * (1 + 3 * int(t.record_grad_norm))
    views = 1 + num_views(t.queries, ds.input_shape)  # the identity and LiRA's queries
    evaluation = views * (ds.n_train + ds.n_test) * census.forward_flops + records * per_record
    per_epoch = sum(by_kind.values())
    return {
        "subset_size": size,
        "examples_per_replica_epoch": examples,
        "forward_flops_per_example": census.forward_flops,
        "flops_per_replica_epoch": per_epoch,
        "flops_per_replica_epoch_by_layer": by_kind,
        "eval_flops_per_replica": evaluation,
        "flops_per_replica": t.epochs * per_epoch + evaluation,
    }


def _short_run(
    spec, ds: Dataset, cfg: TrainConfig, masks: np.ndarray, seed: int, ids: np.ndarray
) -> float:
    """Seconds of a steady-state ``train_replicas`` call: the best of TIMED_RUNS after the
    first call (which compiles), so that a busy machine's pauses count less."""
    train_replicas(spec, ds, masks, cfg, seed=seed, replica_ids=ids)
    best = math.inf
    for _ in range(TIMED_RUNS):
        t0 = time.perf_counter()
        train_replicas(spec, ds, masks, cfg, seed=seed, replica_ids=ids)
        best = min(best, time.perf_counter() - t0)
    return best


def _timed_config(t: TrainConfig, epochs: int, group: int) -> TrainConfig:
    """The study's training for a timing run: ``epochs`` epochs, nothing recorded."""
    return dataclasses.replace(
        t, epochs=epochs, record_every=0, record_grad_norm=False, group_size=group
    )


def _calibrate(cfg: StudyConfig, ds: Dataset, group: int, forward: int) -> tuple[float, float]:
    """(FLOP/s, seconds of fixed cost per call) of the study's model and batch on the local
    devices: one group per device trains on the first CALIBRATION_STEPS batches of the data
    for 1 and for 1 + k epochs; the difference is the training rate, the rest of the shorter
    run (beyond its FLOPs at that rate) the cost every chunk pays once. k starts at
    CALIBRATION_EPOCHS and, if the difference is under CALIBRATION_SECONDS (timer noise and
    a busy machine's pauses would dominate it), is raised once to reach it."""
    t = cfg.train
    batch = ds.n_train if t.batch_size is None else min(t.batch_size, ds.n_train)
    m = min(ds.n_train, batch * CALIBRATION_STEPS)
    small = dataclasses.replace(
        ds,
        x_train=ds.x_train[:m],
        y_train=ds.y_train[:m],
        x_test=ds.x_test[:batch],
        y_test=ds.y_test[:batch],
        train_info={},
        test_info={},
    )
    r = group * len(jax.local_devices())
    masks = np.ones((r, m), bool)

    def point(epochs: int) -> tuple[float, float]:
        short = _timed_config(t, epochs, group)
        seconds = _short_run(cfg.model, small, short, masks, cfg.seed, np.arange(r))
        examples = _examples_per_epoch(m, short, m)
        return r * forward * (3 * epochs * examples + m + small.n_test), seconds

    (f1, t1), extra = point(1), CALIBRATION_EPOCHS
    f2, t2 = point(1 + extra)
    if t2 - t1 < CALIBRATION_SECONDS:
        wanted = extra * CALIBRATION_SECONDS / max(t2 - t1, 1e-3)
        extra = min(MAX_CALIBRATION_EPOCHS, math.ceil(wanted))
        f2, t2 = point(1 + extra)
    rate = (f2 - f1) / (t2 - t1) if t2 > t1 else f2 / t2
    return rate, max(t1 - f1 / rate, 0.0)


def _measure(
    cfg: StudyConfig,
    ds: Dataset,
    sizes: dict[str, Any],
    work: dict[str, Any],
    rate: float,
    overhead: float,
) -> float:
    """Seconds the whole study would take, extrapolated by FLOPs from one group per device
    of its first replicas trained on the real data and evaluated: for as many of the
    study's epochs as take CALIBRATION_SECONDS at the calibrated ``rate`` (at least one),
    less the calibrated per-call ``overhead``, which each chunk pays once."""
    group = sizes["group_size"]
    per_call = group * len(jax.local_devices())  # the call trains this many, padded
    ids = np.arange(min(cfg.replicas, per_call))
    masks = subsets.sample(ds.n_train, cfg.replicas, cfg.ratio, cfg.seed, cfg.design, ids)
    per_epoch = per_call * work["flops_per_replica_epoch"]
    epochs = min(cfg.train.epochs, max(1, math.ceil(CALIBRATION_SECONDS * rate / per_epoch)))
    run = _timed_config(cfg.train, epochs, group)
    seconds = _short_run(cfg.model, ds, run, masks, cfg.seed, ids)
    fwd = work["forward_flops_per_example"]
    flops = epochs * per_epoch + per_call * (ds.n_train + ds.n_test) * fwd
    busy = max(seconds - overhead, 0.5 * seconds)  # the overhead is itself an estimate
    compute = sizes["replicas_trained"] * work["flops_per_replica"] * busy / flops
    return compute + sizes["chunks"] * overhead


def _data_bytes(ds: Dataset) -> int:
    """The training and test examples and labels every device holds."""
    return sum(a.nbytes for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))


def _chunk_group(auto: int, chunk: int, devices: int) -> int:
    """The automatic group, at most the largest power of two within one chunk's share of a
    device: a larger group pads every chunk's call with replicas that are trained and
    thrown away."""
    share = -(-chunk // devices)
    return min(auto, 2 ** int(math.log2(share)))


def _sizes(
    cfg: StudyConfig, ds: Dataset, backend: str, memory: int, devices: int
) -> dict[str, Any]:
    """Group and chunk size on ``devices`` devices of ``memory`` bytes each, the replicas a
    chunk's call really trains (padded to a multiple of group x devices, the last chunk to
    the chunk size too), the bytes a device then holds (its group's working sets, the data
    and the padded chunk's outputs), and warnings about wasted work."""
    t = cfg.train
    chunk = cfg.chunk_size or min(
        MAX_CHUNK,
        choose_chunk_size(
            cfg.model, ds, t, cfg.replicas, device_memory=memory, devices=devices, backend=backend
        ),
    )
    auto = auto_group_size(cfg.model, ds, t, backend, memory)
    group = t.group_size or _chunk_group(auto, chunk, devices)
    per_call = group * devices
    padded = -(-chunk // per_call) * per_call
    chunks = -(-cfg.replicas // chunk)
    trained = chunks * padded
    per_replica = sum(replica_memory(cfg.model, ds, t).values())
    used = group * per_replica + _data_bytes(ds) + -(-padded // devices) * output_bytes(ds, t)
    warnings = []
    if not t.group_size and group < auto:
        warnings.append(
            f"chunk_size {chunk} is smaller than the automatic group ({auto} replicas x "
            f"{devices} devices), to which the run would pad every chunk: planned with "
            f"train.group_size={group}; set it so that the run uses it too"
        )
    if trained - cfg.replicas > trained / 4:
        warnings.append(
            f"chunk_size {chunk} wastes {1 - cfg.replicas / trained:.0%} of the work: "
            f"{trained} replicas are trained for {cfg.replicas} (each chunk padded to "
            f"{padded}, a multiple of group {group} x {devices} devices); use a chunk size "
            f"that divides the replicas into multiples of {per_call}"
        )
    return {
        "group_size": group,
        "chunk_size": chunk,
        "chunks": chunks,
        "padded_chunk_size": padded,
        "replicas_trained": trained,
        "memory_bytes": memory,
        "memory_used_bytes": used,
        "fits": used <= memory,
        "warnings": warnings,
    }


def _timing(
    flops_per_replica: float,
    sizes: dict[str, Any],
    peak: float,
    efficiency: float,
    overhead: float,
) -> dict[str, Any]:
    """Predicted seconds of the whole study and of one chunk (the unit a preempted job
    loses): the FLOPs of every replica trained, padding included, at ``efficiency`` x
    ``peak``, plus ``overhead`` seconds per chunk."""
    chunk_s = sizes["padded_chunk_size"] * flops_per_replica / (peak * efficiency) + overhead
    return {
        "peak_gflops": round(peak / 1e9, 1),
        "efficiency": round(efficiency, 4),
        "overhead_s_per_chunk": round(overhead, 3),
        "predicted_s": round(sizes["chunks"] * chunk_s, 3),
        "chunk_s": round(chunk_s, 3),
    }


def _device_plan(
    cfg: StudyConfig, ds: Dataset, name: str, flops_per_replica: float
) -> dict[str, Any]:
    """Plan on one data-sheet device (one chip), at ASSUMED_EFFICIENCY."""
    dev = DEVICES[name]
    sizes = _sizes(cfg, ds, dev.backend, dev.memory_bytes, 1)
    bf16 = cfg.train.compute_dtype == "bfloat16"
    peak = dev.bfloat16_flops if bf16 else dev.float32_flops
    out = {"device": dev.name, **sizes}
    out.update(_timing(flops_per_replica, sizes, peak, ASSUMED_EFFICIENCY, 0.0))
    out["peak_source"] = f"data sheet, {'bfloat16' if bf16 else dev.float32_path} dense"
    out["efficiency_source"] = "assumed (not measured on this device); no per-chunk overhead"
    return out


def _local_name() -> str | None:
    """The DEVICES entry of the local accelerator (None on CPU or an unknown chip)."""
    dev = jax.local_devices()[0]
    if dev.platform == "cpu":
        return None
    kind = dev.device_kind.lower().replace(" ", "")
    for name in DEVICES:
        if name.lower().replace("-", "") in kind:
            return name
    return None


def _local_plan(
    cfg: StudyConfig, ds: Dataset, work: dict[str, Any], measure: bool
) -> dict[str, Any]:
    """Plan on the local devices, with the efficiency measured here."""
    backend = jax.default_backend()
    devices = len(jax.local_devices())
    sizes = _sizes(cfg, ds, backend, device_memory_bytes(), devices)
    name = _local_name()
    dtype = cfg.train.compute_dtype
    if name is None and backend == "cpu":
        peak, label = cpu_peak_flops(dtype), f"measured ({dtype} {PROBE_SIZE}^2 matmul)"
        device = f"cpu ({devices} JAX devices)"
    elif name is None:
        raise ConfigError(
            f"no data-sheet peak for the local {jax.local_devices()[0].device_kind}: "
            f"pass --device with one of {sorted(DEVICES)}"
        )
    else:
        dev = DEVICES[name]
        peak = devices * (dev.bfloat16_flops if dtype == "bfloat16" else dev.float32_flops)
        label, device = "data sheet", f"{devices} x {dev.name}"
    rate, overhead = _calibrate(cfg, ds, sizes["group_size"], work["forward_flops_per_example"])
    out = {"device": device, **sizes}
    out.update(_timing(work["flops_per_replica"], sizes, peak, rate / peak, overhead))
    out["peak_source"] = label
    out["efficiency_source"] = (
        "measured here: two short runs of this model and batch (rate and per-chunk overhead)"
    )
    if measure:
        out["measured_s"] = round(_measure(cfg, ds, sizes, work, rate, overhead), 3)
    return out


def plan_study(
    cfg: StudyConfig, ds: Dataset, device: str | None = None, measure: bool = False
) -> dict[str, Any]:
    """The plan of ``cfg`` on ``device`` (a DEVICES name; None: the local backend, whose
    efficiency is measured), with the data-sheet devices' plans under ``per_device``."""
    if device is not None and device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}: use one of {sorted(DEVICES)}")
    if measure and device is not None:
        raise ConfigError("--measure runs on the local backend: leave out --device")
    work = _work(cfg, ds)
    total = cfg.replicas * work["flops_per_replica"]
    mem = replica_memory(cfg.model, ds, cfg.train)
    per_replica = work["flops_per_replica"]
    per_device = {name: _device_plan(cfg, ds, name, per_replica) for name in DEVICES}
    chosen = per_device[device] if device else _local_plan(cfg, ds, work, measure)
    gflop = {k: round(v / 1e9, 4) for k, v in work["flops_per_replica_epoch_by_layer"].items()}
    return {
        "study": cfg.name,
        "replicas": cfg.replicas,
        "epochs": cfg.train.epochs,
        "compute_dtype": cfg.train.compute_dtype,
        "subset_size": work["subset_size"],
        "examples_per_replica_epoch": work["examples_per_replica_epoch"],
        "gflop_per_replica_epoch": round(work["flops_per_replica_epoch"] / 1e9, 4),
        "gflop_per_replica_epoch_by_layer": gflop,
        "gflop_eval_per_replica": round(work["eval_flops_per_replica"] / 1e9, 4),
        "gflop_total": round(total / 1e9, 1),
        "bytes_per_replica": {**mem, "total": sum(mem.values())},
        "data_bytes_per_device": _data_bytes(ds),
        **chosen,
        "per_device": per_device,
    }
