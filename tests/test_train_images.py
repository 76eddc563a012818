"""Training residual nets with BatchNorm and augmentation: per-replica invariances (group
size, vmap/unroll, devices, chunks, companions), augmentation determinism, uint8 pixels,
bfloat16, and a net that learns scikit-learn's digits (upsampled to 16x16x1 images).

Compiling a residual training program is the expensive part on CPU, so the invariance
tests share one tiny net, one config and module-scoped reference runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import memjax as mj
from memjax.outputs import FINAL_FIELDS, PRESENTATION_FIELDS

SPEC = mj.models.ResNet9(widths=(4, 8, 8, 8), norm="batch")
# drop_last=False with batch 24: short final batches, whose padding rows BatchNorm must skip
CFG = mj.TrainConfig(
    epochs=2, batch_size=24, optimizer="momentum", learning_rate=0.05, augment="crop_flip",
    cutout=4, group_size=1, vectorize="unroll",
)  # fmt: skip
SEED = 3


def _digit_images(scale: float, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits' 8x8 images upsampled 2x to (N, 16, 16, 1), times ``scale``, and their split."""
    digits = mj.data.load("digits")

    def up(x):
        return np.kron(x.reshape(-1, 8, 8), np.ones((2, 2)))[..., None] * scale

    xtr, xte = up(digits.x_train), up(digits.x_test)
    return xtr.astype(dtype), digits.y_train, xte.astype(dtype), digits.y_test


@pytest.fixture(scope="module")
def pixels() -> mj.data.Dataset:
    """160 train / 60 test digit images as uint8 pixels (0..240)."""
    xtr, ytr, xte, yte = _digit_images(15 * 16, np.uint8)
    return mj.data.from_arrays(xtr[:160], ytr[:160], xte[:60], yte[:60], 10, "digits16u8")


@pytest.fixture(scope="module")
def masks(pixels) -> np.ndarray:
    m = mj.subsets.sample(pixels.n_train, 4, 0.5, seed=2)
    assert len(np.unique(m.sum(1))) > 1  # unequal subsets: idle padding steps too
    return m


def one_device() -> list:
    return jax.local_devices()[:1]


@pytest.fixture(scope="module")
def reference(pixels, masks) -> mj.ReplicaOutputs:
    return mj.train_replicas(SPEC, pixels, masks, CFG, seed=SEED, devices=one_device())


def assert_same(a: mj.ReplicaOutputs, b: mj.ReplicaOutputs, rows_a, rows_b, exact: bool):
    """Bit for bit, or (``exact=False``: vmapped vs unrolled replicas, uint8 vs float inputs)
    the same training up to float32 reduction order, which BatchNorm on minibatches of a
    dozen images amplifies over the run (measured: margins differ by up to 0.04 on a scale
    of 30): margins within 5% of their scale and at least 95% of correctness bits equal.

    Why vmap vs unroll is not bit for bit: XLA:CPU computes a vmapped group's reductions
    (BatchNorm's statistics over N x H x W rows, and the gradients of every broadcast) and
    its batched dots in another summation order than one replica's; evaluation forward
    passes agree bit for bit, one training step's gradients differ by ~5e-5 (relative
    ~1e-6). Writing BatchNorm's sums as dots made its forward pass exact but not the
    backward pass, whose batched dots also sum differently."""
    for name in (*FINAL_FIELDS, *PRESENTATION_FIELDS):
        x, y = getattr(a, name)[rows_a], getattr(b, name)[rows_b]
        if exact:
            np.testing.assert_array_equal(x, y, err_msg=name)
        elif x.dtype.kind == "f":
            scale = max(1.0, float(np.abs(y).max()))
            np.testing.assert_allclose(x, y, rtol=0, atol=0.05 * scale, err_msg=name)
        elif x.dtype == bool:
            assert (x == y).mean() >= 0.95, name


@pytest.mark.slow
def test_chunks_and_reruns_reproduce_each_replica(pixels, masks, reference):
    """Replicas 2 and 3 trained alone (padded to the same program) and a rerun: bit for bit."""
    part = mj.train_replicas(
        SPEC, pixels, masks[2:], CFG, seed=SEED, replica_ids=np.array([2, 3]),
        devices=one_device(), pad_to=4, max_subset_size=int(masks.sum(1).max()),
    )  # fmt: skip
    assert_same(reference, part, slice(2, 4), slice(None), exact=True)
    again = mj.train_replicas(SPEC, pixels, masks, CFG, seed=SEED, devices=one_device())
    assert_same(reference, again, slice(None), slice(None), exact=True)


@pytest.mark.slow
def test_group_size_vmap_and_companions_do_not_change_a_replica(pixels, masks, reference):
    """Unrolled groups of 4 vs 1 (bit for bit, the CPU default), a group of 4 vmapped
    replicas vs one unrolled replica per group; then replica 0 with
    different companions in its vmapped group (the classic vmapped-BatchNorm leak)."""
    unrolled4 = mj.TrainConfig(**{**CFG.to_dict(), "group_size": 4})
    four = mj.train_replicas(SPEC, pixels, masks, unrolled4, seed=SEED, devices=one_device())
    assert_same(reference, four, slice(None), slice(None), exact=True)
    vm = mj.TrainConfig(**{**CFG.to_dict(), "group_size": 4, "vectorize": "vmap"})
    wide = mj.train_replicas(SPEC, pixels, masks, vm, seed=SEED, devices=one_device())
    assert_same(reference, wide, slice(None), slice(None), exact=False)
    # groups of 2 vs 4 vmapped replicas: measured 3 of 640 margins 1 ulp apart (9.5e-7),
    # XLA:CPU's batched kernels sum in an order that depends on the batch size
    vm2 = mj.TrainConfig(**{**vm.to_dict(), "group_size": 2})
    pairs = mj.train_replicas(SPEC, pixels, masks, vm2, seed=SEED, devices=one_device())
    assert_same(wide, pairs, slice(None), slice(None), exact=False)
    others = masks.copy()
    others[1:] = ~others[1:]
    mixed = mj.train_replicas(
        SPEC,
        pixels,
        others,
        vm,
        seed=SEED,
        devices=one_device(),
        replica_ids=np.array([0, 7, 8, 9]),
    )
    assert_same(wide, mixed, slice(0, 1), slice(0, 1), exact=True)


_SUBPROCESS = textwrap.dedent(
    """
    import json, sys
    import jax
    import numpy as np
    import memjax as mj

    assert jax.device_count() == 2, jax.devices()
    d = np.load(sys.argv[1])
    ds = mj.data.from_arrays(d["xtr"], d["ytr"], d["xte"], d["yte"], 10)
    spec = mj.models.spec_from_dict(json.loads(sys.argv[3]))
    cfg = mj.TrainConfig.from_dict(json.loads(sys.argv[4]))
    out = mj.train_replicas(spec, ds, d["masks"], cfg, seed=int(d["seed"]))
    np.savez(sys.argv[2], **out.arrays())
    """
)


@pytest.mark.slow
def test_two_forced_devices_and_a_fresh_process_give_the_same_replicas(
    tmp_path: Path, pixels, masks, reference
):
    inputs, result = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(
        inputs, xtr=pixels.x_train, ytr=pixels.y_train, xte=pixels.x_test, yte=pixels.y_test,
        masks=masks, seed=SEED,
    )  # fmt: skip
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [
            sys.executable, "-c", _SUBPROCESS, str(inputs), str(result),
            json.dumps(mj.models.spec_to_dict(SPEC)), json.dumps(CFG.to_dict()),
        ],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(result) as arrays:
        sharded = mj.ReplicaOutputs(**{k: arrays[k] for k in arrays.files})
    assert_same(reference, sharded, slice(None), slice(None), exact=True)


@pytest.mark.slow
@pytest.mark.optimized  # the two inputs reach the same roundoff only when fused alike
def test_augmentation_changes_results_and_uint8_equals_standardized_floats(
    pixels, masks, reference
):
    """Without augmentation the same replicas end elsewhere; and the uint8 dataset trains
    exactly like float images standardized per channel by hand (numpy, float64 stats)."""
    plain = mj.TrainConfig(**{**CFG.to_dict(), "augment": "none", "cutout": 0})
    unaugmented = mj.train_replicas(SPEC, pixels, masks, plain, seed=SEED, devices=one_device())
    assert np.abs(unaugmented.train_margin - reference.train_margin).mean() > 1e-2
    pix = pixels.x_train.astype(np.float64)
    mean, std = pix.mean(axis=(0, 1, 2)), pix.std(axis=(0, 1, 2))
    np.testing.assert_allclose(pixels.channel_stats[0], mean, rtol=1e-6)

    def standardized(x):
        return (x.astype(np.float32) - mean.astype(np.float32)) / std.astype(np.float32)

    floats = mj.data.from_arrays(
        standardized(pixels.x_train), pixels.y_train, standardized(pixels.x_test),
        pixels.y_test, 10,
    )  # fmt: skip
    f32 = mj.train_replicas(SPEC, floats, masks, plain, seed=SEED, devices=one_device())
    assert_same(unaugmented, f32, slice(None), slice(None), exact=False)


@pytest.mark.slow
@pytest.mark.optimized
def test_resnet_with_batchnorm_and_augmentation_learns_digits_in_float32_and_bfloat16():
    """ResNet-9 (BatchNorm, random crops: flips would turn digits into other classes) on
    16x16 digits, 8 replicas on halves: >= 90% test accuracy, and bfloat16 compute within 2
    points of float32 on average (measured: 0.947 and 0.939, replicas 0.91-0.97, so the
    paired mean difference has a standard error of ~0.01)."""
    xtr, ytr, xte, yte = _digit_images(1.0, np.float32)
    ds = mj.data.from_arrays(xtr, ytr, xte, yte, 10, "digits16")
    masks = mj.subsets.sample(ds.n_train, 8, 0.5, seed=0)
    cfg = mj.TrainConfig(
        epochs=16, batch_size=64, optimizer="momentum", learning_rate=0.1,
        schedule="cosine", augment="crop", group_size=8, vectorize="vmap",
    )  # fmt: skip
    spec = mj.models.ResNet9(widths=(8, 16, 16, 32))
    acc = {}
    for dtype in ("float32", "bfloat16"):
        c = mj.TrainConfig(**{**cfg.to_dict(), "compute_dtype": dtype})
        out = mj.train_replicas(spec, ds, masks, c, seed=1)
        assert out.test_margin.dtype == np.float32
        acc[dtype] = out.test_correct.mean(axis=1)
    assert acc["float32"].mean() >= 0.92 and acc["float32"].min() >= 0.88, acc
    assert acc["bfloat16"].min() >= 0.88, acc
    assert abs(acc["bfloat16"].mean() - acc["float32"].mean()) <= 0.02, acc
