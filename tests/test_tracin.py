"""TracIn train -> test attributions (memjax.analysis.tracin) from replicas' checkpoints."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from memjax import data
from memjax.analysis.tracin import tracin
from memjax.models import MLP, ResNet9, build_network
from memjax.outputs import loss_from_logits, margin_from_logits
from memjax.train import TrainConfig, train_checkpoints, train_replicas

SPEC = MLP(widths=(8,))
CFG = TrainConfig(
    epochs=6,
    batch_size=16,
    optimizer="adam",
    learning_rate=0.02,
    record_every=2,
    label_smoothing=0.1,
    vectorize="vmap",
)


def _digits(n: int, m: int, test_is_train: bool = False) -> data.Dataset:
    d = data.load("digits")
    xt, yt = (d.x_train[:n], d.y_train[:n]) if test_is_train else (d.x_test[:m], d.y_test[:m])
    return data.from_arrays(d.x_train[:n], d.y_train[:n], xt, yt, num_classes=10)


def _masks(r: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((r, n)) < 0.5


def _slopes(fn, flat: jax.Array, eps: float = 1e-6) -> np.ndarray:
    """(P, k) central differences of fn (P,) -> (k,), one coordinate at a time."""
    steps = jnp.eye(flat.size) * eps
    return np.asarray((jax.vmap(fn)(flat + steps) - jax.vmap(fn)(flat - steps)) / (2 * eps))


def _checkpoint_term(spec, ds, params, state, output: str, smoothing: float) -> np.ndarray:
    """g_i . h_j (n, m) at one checkpoint, both gradients by central differences of the
    network's evaluation-mode forward pass with the checkpoint's state (float64)."""
    net = build_network(spec, ds.input_shape, ds.num_classes)
    x, y, xt, yt = (jnp.asarray(v) for v in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
    flat, unravel = ravel_pytree(params)

    def train_loss(f):
        return loss_from_logits(net.apply(unravel(f), state, x)[0], y, "xent", smoothing)

    def test_output(f):
        logits = net.apply(unravel(f), state, xt)[0]
        if output == "test_loss":
            return loss_from_logits(logits, yt, "xent")
        return margin_from_logits(logits, yt)

    return _slopes(train_loss, flat).T @ _slopes(test_output, flat)


def _central_differences(spec, ds, ckpt, replica: int, output: str, smoothing: float):
    """-sum_{t >= 1} eta_t g_i . h_j of one replica."""
    terms = [
        ckpt.learning_rates[t]
        * _checkpoint_term(
            spec,
            ds,
            _at(ckpt.params, replica, t),
            _at(ckpt.state, replica, t),
            output,
            smoothing,
        )
        for t in range(1, len(ckpt.epochs))
    ]
    return -np.sum(terms, axis=0)


def _at(params, r: int, t: int):
    return jax.tree.map(lambda v: v[r, t], params)


@pytest.mark.parametrize("seed", [0, 1])
def test_tracin_equals_central_differences(seed):
    with jax.enable_x64(True):
        ds = _digits(40, 6)
        masks = _masks(2, 40, seed)
        ckpt = train_checkpoints(SPEC, ds, masks, CFG, seed=seed, replica_ids=np.array([3, 7]))
        np.testing.assert_array_equal(ckpt.epochs, [0, 2, 4, 6])
        for output in ("test_margin", "test_loss"):
            got = tracin(SPEC, ds, CFG, ckpt, output, block=16)
            assert got.shape == (2, 40, 6)
            for r in range(2):
                ref = _central_differences(SPEC, ds, ckpt, r, output, 0.1)
                assert np.abs(got[r] - ref).max() < 1e-7 * np.abs(ref).max()


@pytest.mark.slow
def test_tracin_with_batchnorm_uses_each_checkpoints_running_averages():
    """A residual net with BatchNorm: gradients in evaluation mode, with the running
    averages of the same checkpoint (a stale state would give other gradients)."""
    spec = ResNet9(widths=(2, 2, 2, 2), norm="batch")
    cfg = TrainConfig(
        epochs=2, batch_size=6, optimizer="momentum", learning_rate=0.05, record_every=1
    )
    d = data.load("digits")
    images = d.x_train.reshape(-1, 8, 8, 1)
    ds = data.from_arrays(images[:12], d.y_train[:12], images[12:15], d.y_train[12:15], 10)
    ckpt = train_checkpoints(spec, ds, _masks(1, 12, 5) | True, cfg, seed=2)
    with jax.enable_x64(True):  # float32 training, float64 gradients of its checkpoints
        wide = partial(jax.tree.map, lambda v: np.asarray(v, np.float64))
        ckpt = replace(ckpt, params=wide(ckpt.params), state=wide(ckpt.state))
        got = tracin(spec, ds, cfg, ckpt, "test_margin")[0]
        ref = _central_differences(spec, ds, ckpt, 0, "test_margin", 0.0)
        assert np.abs(got - ref).max() < 1e-6 * np.abs(ref).max()
        stats = jax.tree.leaves(ckpt.state)
        assert all(np.any(v[0, 1] != v[0, 2]) for v in stats)  # the averages moved


@pytest.mark.slow
def test_checkpoints_are_the_replicas_own_runs():
    ds = _digits(60, 10)
    masks = _masks(3, 60, 2)
    ids = np.array([5, 0, 9])
    ckpt = train_checkpoints(SPEC, ds, masks, CFG, seed=4, replica_ids=ids)
    plain = train_replicas(SPEC, ds, masks, CFG, seed=4, replica_ids=ids)
    np.testing.assert_allclose(ckpt.outputs.test_margin, plain.test_margin, atol=1e-5)
    # the last checkpoint's parameters give the runs' final margins
    net = build_network(SPEC, ds.input_shape, ds.num_classes)
    for r in range(3):
        last = _at(ckpt.params, r, -1)
        logits = net.apply(last, {}, jnp.asarray(ds.x_train))[0]
        margins = margin_from_logits(logits, jnp.asarray(ds.y_train))
        np.testing.assert_allclose(margins, plain.train_margin[r], atol=1e-5)
    first = jax.tree.map(lambda v: v[:, 0], ckpt.params)
    assert all(np.any(a[0] != a[1]) for a in jax.tree.leaves(first))  # own initializations


@pytest.mark.slow
def test_diagonal_is_minus_self_influence():
    """With the training set as test set, the test loss as output and no label smoothing,
    TracIn's diagonal is -(learning rate x squared gradient norm) summed over checkpoints:
    the recorded gradient norms of the trainer (memjax.analysis.proxies.self_influence's input)."""
    ds = _digits(30, 0, test_is_train=True)
    cfg = replace(CFG, label_smoothing=0.0, record_grad_norm=True)
    ckpt = train_checkpoints(SPEC, ds, _masks(2, 30, 3), cfg, seed=1)
    got = tracin(SPEC, ds, cfg, ckpt, "test_loss")
    lr = np.where(ckpt.epochs > 0, ckpt.learning_rates, 0.0)
    self_inf = np.einsum("t,rtn->rn", lr, ckpt.outputs.traj_grad_sq)
    diag = np.diagonal(got, axis1=1, axis2=2)
    np.testing.assert_allclose(-diag, self_inf, rtol=1e-4)


@pytest.mark.slow
def test_bad_requests_are_refused():
    ds = _digits(20, 4)
    with pytest.raises(ValueError, match="record_every"):
        train_checkpoints(SPEC, ds, _masks(1, 20, 0), replace(CFG, record_every=0))
    ckpt = train_checkpoints(SPEC, ds, _masks(1, 20, 0), CFG)
    with pytest.raises(ValueError, match="unknown output"):
        tracin(SPEC, ds, CFG, ckpt, "train_margin")
