"""Kernel replicas on subset masks, and kernel files, against per-replica direct solutions."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import memjax as mj
from memjax import theory
from memjax.models import MLP
from memjax.outputs import loss_from_logits, margin_from_logits

SPEC = MLP(widths=(32,), activation="erf", b_std=0.2)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="module")
def ds():
    rng = np.random.default_rng(0)
    x, xt = rng.standard_normal((24, 5)), rng.standard_normal((10, 5))
    return mj.data.from_arrays(x, rng.integers(0, 3, 24), xt, rng.integers(0, 3, 10), 3)


@pytest.fixture(scope="module")
def masks(ds):
    masks = mj.subsets.sample(ds.n_train, 6, 0.5, seed=1, design="bernoulli")
    assert len(set(masks.sum(axis=1))) > 1  # unequal subset sizes are part of the test
    return masks


def check_against_logits(out, row, ds, train_logits, test_logits):
    for split, logits, labels in (
        ("train", train_logits, ds.y_train),
        ("test", test_logits, ds.y_test),
    ):
        margin = np.asarray(margin_from_logits(logits, labels))
        loss = np.asarray(loss_from_logits(logits, labels, "mse"))
        np.testing.assert_allclose(
            getattr(out, f"{split}_margin")[row], margin, rtol=1e-8, atol=1e-9
        )
        np.testing.assert_allclose(getattr(out, f"{split}_loss")[row], loss, rtol=1e-8, atol=1e-9)
        np.testing.assert_array_equal(
            getattr(out, f"{split}_correct")[row], logits.argmax(1) == labels
        )


@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_ridge_replicas_equal_direct_solves(ds, masks, kind):
    km = theory.dataset_kernels(SPEC, ds)
    K, Kx = km.train_test(kind)
    out = theory.kernel_replicas(km, ds, masks, kind=kind, ridge=0.01)
    Y = np.eye(3)[ds.y_train]
    for r, m in enumerate(masks):
        alpha = np.linalg.solve(K[np.ix_(m, m)] + 0.01 * np.eye(m.sum()), Y[m])
        check_against_logits(out, r, ds, K[:, m] @ alpha, Kx[:, m] @ alpha)
    mem = mj.estimators.memorization(masks, out.train_correct)
    assert mem.value.shape == (ds.n_train,) and np.isfinite(mem.stderr).any()


def test_gradient_descent_replicas_with_init_outputs_equal_explicit_iteration(ds, masks):
    km = theory.dataset_kernels(SPEC, ds)
    rng = np.random.default_rng(2)
    f0 = rng.standard_normal((len(masks), ds.n_train, 3))
    f0t = rng.standard_normal((len(masks), ds.n_test, 3))
    lr, steps = 0.5, 40
    out = theory.kernel_replicas(
        SPEC, ds, masks, lr=lr, steps=steps, f0_train=f0, f0_test=f0t, replica_ids=np.arange(10, 16)
    )
    np.testing.assert_array_equal(out.replica_ids, np.arange(10, 16))
    K, Kx = km.ntk_train_train, km.ntk_test_train
    Y = np.eye(3)[ds.y_train]
    for r, m in enumerate(masks):
        f, ft = f0[r].copy(), f0t[r].copy()
        for _ in range(steps):  # memjax's mean MSE: rate lr / |S|
            resid = (f[m] - Y[m]) * lr / m.sum()
            f, ft = f - K[:, m] @ resid, ft - Kx[:, m] @ resid
        check_against_logits(out, r, ds, f, ft)


def test_kernel_file_round_trip_and_fingerprint_check(ds, masks, tmp_path):
    km = theory.dataset_kernels(SPEC, ds)
    path = tmp_path / "kernels.npz"
    theory.save_kernel_file(path, km)
    with np.load(path) as f:  # the agreed format, read without memjax
        assert f["ntk_test_train"].dtype == np.float64 and f["ntk_test_train"].shape == (10, 24)
        assert str(f["dataset_fingerprint"][()]) == ds.fingerprint
        assert json.loads(str(f["architecture"][()]))["widths"] == [32]
    loaded = theory.load_kernel_file(path, ds)
    a = theory.kernel_replicas(loaded, ds, masks, ridge=0.01)
    b = theory.kernel_replicas(SPEC, ds, masks, ridge=0.01)
    np.testing.assert_array_equal(a.test_margin, b.test_margin)
    other = mj.data.from_arrays(ds.x_train + 1, ds.y_train, ds.x_test, ds.y_test, 3)
    with pytest.raises(ValueError, match="fingerprint"):
        theory.load_kernel_file(path, other)
    with pytest.raises(ValueError, match="fingerprint"):
        theory.kernel_replicas(loaded, other, masks)


def test_malformed_kernel_files_are_rejected(ds, tmp_path):
    km = theory.dataset_kernels(SPEC, ds)
    arrays = {k: getattr(km, k) for k in theory.kernel_files.MATRICES}
    meta = {"dataset_fingerprint": np.array(ds.fingerprint), "architecture": np.array("{}")}
    np.savez(
        tmp_path / "missing.npz",
        **{k: v for k, v in arrays.items() if k != "ntk_test_train"},
        **meta,
    )
    with pytest.raises(KeyError, match="ntk_test_train"):
        theory.load_kernel_file(tmp_path / "missing.npz")
    np.savez(
        tmp_path / "shape.npz",
        **{**arrays, "ntk_test_train": arrays["ntk_test_train"][:, :5]},
        **meta,
    )
    with pytest.raises(ValueError, match=r"ntk_test_train has shape \(10, 5\)"):
        theory.load_kernel_file(tmp_path / "shape.npz")


def test_bad_arguments(ds, masks):
    with pytest.raises(ValueError, match="empty subset"):
        theory.kernel_replicas(SPEC, ds, np.vstack([masks, np.zeros(ds.n_train, bool)]))
    with pytest.raises(ValueError, match="masks must be boolean"):
        theory.kernel_replicas(SPEC, ds, masks[:, :5])
    with pytest.raises(ValueError, match="both lr and steps"):
        theory.kernel_replicas(SPEC, ds, masks, lr=0.1)
    with pytest.raises(ValueError, match="f0_train must have shape"):
        theory.kernel_replicas(SPEC, ds, masks, f0_train=np.zeros((6, ds.n_train, 2)))
    with pytest.raises(ValueError, match="'ntk' or 'nngp'"):
        theory.kernel_replicas(SPEC, ds, masks, kind="rbf")
