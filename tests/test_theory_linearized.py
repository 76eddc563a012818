"""Linearized networks trained by memjax's full-batch GD on MSE follow the kernel dynamics of
their empirical NTK at initialization (exactly in discrete time, up to O(lr) in flow)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import memjax as mj
from memjax import theory
from memjax.models import MLP, build
from memjax.outputs import loss_from_logits, margin_from_logits
from memjax.train import replica_init_keys

SEED, LR, EPOCHS = 3, 0.5, 60


pytestmark = pytest.mark.slow  # compiles the replica trainer


@pytest.fixture(scope="module")
def setting():
    """Tiny data, three replicas with unequal subsets, trained linearized; plus each
    replica's empirical NTK and outputs at its initialization."""
    rng = np.random.default_rng(0)
    ds = mj.data.from_arrays(
        rng.standard_normal((16, 4)),
        rng.integers(0, 3, 16),
        rng.standard_normal((8, 4)),
        rng.integers(0, 3, 8),
        3,
    )
    spec = MLP(widths=(24,), activation="gelu", b_std=0.1)
    masks = mj.subsets.sample(ds.n_train, 3, 0.5, seed=0, design="bernoulli")
    cfg = mj.TrainConfig(
        epochs=EPOCHS,
        batch_size=None,
        optimizer="sgd",
        learning_rate=LR,
        loss="mse",
        linearize=True,
    )
    out = mj.train_replicas(spec, ds, masks, cfg, seed=SEED)
    init, apply = build(spec, ds.input_shape, ds.num_classes)
    x = np.concatenate([ds.x_train, ds.x_test])
    at_init = []
    for r, mask in enumerate(masks):
        params0 = init(replica_init_keys(SEED, np.array([r]))[0])
        f0 = np.asarray(apply(params0, x), np.float64)  # float32 network, like the trainer's
        with jax.enable_x64(True):
            theta = theory.empirical_ntk(apply, params0, x, ds.x_train[mask])  # (n+m, |S|, C, C)
        at_init.append((theta, f0))
    return ds, masks, out, at_init


def kernel_prediction(ds, mask, theta, f0, flow: bool):
    """Logits on train and test predicted from the empirical NTK and outputs at init."""
    args = (theta[: ds.n_train][mask], np.eye(3)[ds.y_train[mask]])
    rest = dict(K_cross=theta, f0_train=f0[: ds.n_train][mask], f0_cross=f0)
    eta = LR / mask.sum()  # memjax averages the loss over the subset
    if flow:
        f = theory.gradient_flow(*args, eta * EPOCHS, **rest)
    else:
        f = theory.gradient_descent(*args, eta, EPOCHS, **rest)
    return f[: ds.n_train], f[ds.n_train :]


def relative_gap(out, row, ds, logits_train, logits_test) -> float:
    """Largest relative difference of trained margins/losses from the predicted ones."""
    gaps = []
    for split, logits, y in (("train", logits_train, ds.y_train), ("test", logits_test, ds.y_test)):
        for name, value in (
            ("margin", margin_from_logits(logits, y)),
            ("loss", loss_from_logits(logits, y, "mse")),
        ):
            actual = getattr(out, f"{split}_{name}")[row]
            gaps.append(np.max(np.abs(actual - value)) / np.max(np.abs(value)))
    return float(max(gaps))


def gaps(setting, flow: bool) -> list[float]:
    ds, masks, out, at_init = setting
    with jax.enable_x64(True):
        return [
            relative_gap(out, r, ds, *kernel_prediction(ds, m, *at_init[r], flow=flow))
            for r, m in enumerate(masks)
        ]


def test_linearized_training_equals_discrete_gd_closed_form(setting):
    ds, masks, out, at_init = setting
    assert max(gaps(setting, flow=False)) < 2e-4  # float32 training
    with jax.enable_x64(True):
        for r, mask in enumerate(masks):
            _, test = kernel_prediction(ds, mask, *at_init[r], flow=False)
            np.testing.assert_array_equal(out.test_correct[r], test.argmax(1) == ds.y_test)


def test_linearized_training_approaches_gradient_flow(setting):
    flow, exact = gaps(setting, flow=True), gaps(setting, flow=False)
    assert max(flow) < 0.1  # the step size is finite: close, not equal
    assert min(flow) > 10 * max(exact)
