"""Proxies: hand-computed values on hand-written trajectories, and recorded gradient norms
against gradients recomputed one example at a time from independently reproduced training."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj
from memjax.analysis import proxies
from memjax.estimators import masked_mean
from memjax.models import build
from memjax.outputs import ReplicaOutputs
from memjax.train import replica_init_keys

# recordings at initialization and after epochs 2, 4, 6, 8; three replicas, four examples
EPOCHS = np.array([0, 2, 4, 6, 8])
CORRECT = np.array(
    [
        # replica 0: examples 0..3 (columns are examples, rows recordings, transposed below)
        [[0, 1, 1, 1, 1], [1, 0, 1, 0, 1], [1, 1, 1, 1, 0], [0, 0, 0, 0, 0]],
        [[1, 1, 1, 1, 1], [0, 1, 0, 1, 1], [1, 0, 0, 1, 1], [1, 0, 1, 0, 0]],
        [[1, 0, 0, 0, 1], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 0, 1, 0]],
    ],
    bool,
).transpose(0, 2, 1)  # (R=3, T=5, n=4)
# by hand: first recorded epoch from which the example stays correct (10 = never learned)
LEARN = np.array([[2, 8, 10, 10], [0, 6, 6, 10], [8, 0, 4, 10]], float)
FORGET = np.array([[0, 2, 1, 0], [0, 1, 1, 2], [1, 0, 0, 2]], float)
MASKS = np.array([[1, 0, 1, 1], [1, 1, 0, 1], [0, 1, 1, 0]], bool)


def hand_outputs(**traj) -> ReplicaOutputs:
    zeros = np.zeros((3, 4))
    return ReplicaOutputs(
        np.arange(3), zeros > 0, zeros, zeros, zeros > 0, zeros, zeros, record_epochs=EPOCHS, **traj
    )


def test_learning_epochs_and_forgetting_counts_by_hand():
    np.testing.assert_array_equal(proxies.learning_epochs(CORRECT, EPOCHS), LEARN)
    np.testing.assert_array_equal(proxies.forgetting_counts(CORRECT), FORGET)


def test_trajectory_proxies_average_over_in_replicas_only():
    out = hand_outputs(traj_correct=CORRECT)
    lt = proxies.learning_time_recorded(MASKS, out)
    fe = proxies.forgetting_events_recorded(MASKS, out)
    # example 0 is IN for replicas 0, 1; example 1 for 1, 2; example 2 for 0, 2; example 3 for 0, 1
    np.testing.assert_allclose(lt.value, [1.0, 3.0, 7.0, 10.0])
    np.testing.assert_allclose(fe.value, [0.0, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(fe.stderr, [0.0, 0.5, 0.5, 1.0])  # s / sqrt(2) with s = |a-b|/sqrt2
    np.testing.assert_array_equal(fe.n_in, [2, 2, 2, 2])


# per-presentation counts as the trainer leaves them (10 epochs): -1 = never presented, 10 =
# wrong at the last presentation. Replica 1 is IN on example 1 but never presented it (as
# can happen with drop_last), so only replica 2 counts there.
EVENTS = np.array([[1, 0, 3, 0], [2, 0, 0, 4], [0, 5, 1, 0]], np.int32)
FIRST = np.array([[4, -1, 10, 0], [6, -1, -1, 9], [-1, 2, 7, -1]], np.int32)


def test_presentation_proxies_average_over_replicas_that_presented_the_example():
    out = hand_outputs(forgetting_events=EVENTS, first_learned=FIRST, traj_correct=CORRECT)
    lt = proxies.learning_time(MASKS, out)
    fe = proxies.forgetting_events(MASKS, out)
    np.testing.assert_allclose(lt.value, [5.0, 2.0, 8.5, 4.5])
    np.testing.assert_allclose(fe.value, [1.5, 5.0, 2.0, 2.0])
    np.testing.assert_array_equal(fe.n_in, [2, 1, 2, 2])
    np.testing.assert_allclose(fe.stderr, [0.5, np.nan, 1.0, 2.0])
    assert list(proxies.all_proxies(MASKS, out)) == [
        "loss", "confidence", "margin", "learning_time", "forgetting_events",
        "learning_time_recorded", "forgetting_events_recorded",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="first_learned must be"):
        proxies.learning_time(MASKS, hand_outputs(first_learned=FIRST[:, :3]))


def test_masked_mean_against_a_loop():
    rng = np.random.default_rng(2)
    masks = rng.random((9, 30)) < 0.4
    values = rng.normal(size=(9, 30))
    est = masked_mean(masks, values)
    for i in range(30):
        v = values[masks[:, i], i]
        if len(v) == 0:
            assert np.isnan(est.value[i]) and np.isnan(est.stderr[i])
            continue
        assert est.value[i] == pytest.approx(v.mean())
        if len(v) > 1:
            assert est.stderr[i] == pytest.approx(v.std(ddof=1) / np.sqrt(len(v)))
    np.testing.assert_array_equal(est.n_in + est.n_out, 9)


def test_final_proxies_and_confidence_from_margin():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(3, 4))
    out = ReplicaOutputs(np.arange(3), m > 0, m, np.log1p(np.exp(-m)), m > 0, m, m)
    conf = proxies.confidence(MASKS, out).value
    expected = [np.mean(1 / (1 + np.exp(-m[MASKS[:, i], i]))) for i in range(4)]
    np.testing.assert_allclose(conf, expected)
    assert set(proxies.all_proxies(MASKS, out)) == {"loss", "confidence", "margin"}
    with pytest.raises(ValueError, match="counted by memjax.train_replicas"):
        proxies.forgetting_events(MASKS, out)


def test_early_epoch_choice():
    assert proxies.early_epoch_index(np.arange(0, 201, 10)) == 2  # epoch 20 of 200
    assert proxies.early_epoch_index(np.arange(10, 201, 10)) == 1  # stores without epoch 0
    assert proxies.early_epoch_index(np.array([0, 1, 2, 3])) == 1  # never the initialization
    assert proxies.early_epoch_index(np.array([0])) == 0  # ... unless it is all there is
    assert proxies.early_epoch_index(EPOCHS, 0) == 0  # at initialization on request
    assert proxies.early_epoch_index(EPOCHS, 6) == 3
    with pytest.raises(ValueError, match="not recorded"):
        proxies.early_epoch_index(EPOCHS, 5)


def test_self_influence_sums_the_checkpoints_after_initialization():
    grad_sq = np.arange(1, 61, dtype=float).reshape(3, 5, 4)
    lr = np.array([9.0, 0.5, 0.4, 0.3, 0.2])  # the rate at epoch 0 must not count
    out = hand_outputs(traj_correct=CORRECT, traj_grad_sq=grad_sq, record_lr=lr)
    per_replica = np.einsum("t,rtn->rn", lr[1:], grad_sq[:, 1:])
    expected = [per_replica[MASKS[:, i], i].mean() for i in range(4)]
    np.testing.assert_allclose(proxies.self_influence(MASKS, out).value, expected)


def test_missing_trajectories_fail_with_the_setting_to_use():
    out = hand_outputs(traj_correct=CORRECT)
    with pytest.raises(ValueError, match="record_grad_norm"):
        proxies.grand(MASKS, out)
    with pytest.raises(ValueError, match="record_every"):
        proxies.el2n(MASKS, out)
    no_lr = hand_outputs(traj_correct=CORRECT, traj_grad_sq=np.ones((3, 5, 4)))
    with pytest.raises(ValueError, match="record_lr"):
        proxies.self_influence(MASKS, no_lr)
    assert "self_influence" not in proxies.all_proxies(MASKS, no_lr)
    assert "grand" in proxies.all_proxies(MASKS, no_lr)


@pytest.fixture(scope="module")
def tiny_run():
    """Full-batch SGD (no shuffling to reproduce) of a small MLP, recorded after each epoch.
    (A little weight decay: the trainer's plain SGD chain is empty, which optax rejects.)"""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 5)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    ds = mj.data.from_arrays(x, y, x[:4], y[:4], num_classes=3)
    spec = mj.models.MLP(widths=(8,), activation="erf")
    masks = mj.subsets.sample(24, 3, 0.5, seed=1)
    cfg = mj.TrainConfig(
        epochs=3,
        batch_size=None,
        learning_rate=0.5,
        weight_decay=1e-3,
        record_every=1,
        record_grad_norm=True,
    )
    out = mj.train_replicas(spec, ds, masks, cfg, seed=7)
    return ds, spec, masks, cfg, out


def reproduce(ds, spec, masks, cfg, seed):
    """Per replica and recording (initialization, then each epoch): params by gradient
    descent (with L2 added to the gradient) from the replica's init, then each example's
    loss gradient computed on its own."""
    init, apply = build(spec, ds.input_shape, ds.num_classes)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)

    def example_loss(p, i):
        return -jax.nn.log_softmax(apply(p, x[i][None])[0])[y[i]]

    @jax.jit
    def example_grad_sq(p, i):
        g = jax.grad(example_loss)(p, i)
        return sum(jnp.sum(v**2) for v in jax.tree.leaves(g)), example_loss(p, i)

    @jax.jit
    def gd_step(p, weights):  # weights: 1/|S| on the replica's subset, 0 elsewhere
        def batch_loss(q):
            losses = -jnp.take_along_axis(jax.nn.log_softmax(apply(q, x)), y[:, None], 1)[:, 0]
            return jnp.sum(weights * losses)

        g = jax.grad(batch_loss)(p)
        return jax.tree.map(lambda a, d: a - cfg.learning_rate * (d + cfg.weight_decay * a), p, g)

    grad_sq, loss = [], []
    for r, key in enumerate(replica_init_keys(seed, np.arange(len(masks)))):
        params = jax.jit(init)(key)
        weights = jnp.asarray(masks[r] / masks[r].sum(), jnp.float32)
        rows = [[example_grad_sq(params, i) for i in range(ds.n_train)]]
        for _ in range(cfg.epochs):
            params = gd_step(params, weights)
            rows.append([example_grad_sq(params, i) for i in range(ds.n_train)])
        rows = np.array(rows, np.float64)  # (T, n, 2)
        grad_sq.append(rows[..., 0])
        loss.append(rows[..., 1])
    return np.array(grad_sq), np.array(loss)


@pytest.mark.slow
def test_grad_norms_equal_single_example_gradients(tiny_run):
    ds, spec, masks, cfg, out = tiny_run
    grad_sq, loss = reproduce(ds, spec, masks, cfg, seed=7)
    np.testing.assert_allclose(out.traj_loss, loss, rtol=1e-4, atol=1e-6)  # same parameters
    np.testing.assert_allclose(out.traj_grad_sq, grad_sq, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(out.record_epochs, [0, 1, 2, 3])
    for epoch in (0, 2):  # at initialization and after two epochs
        gr = proxies.grand(masks, out, epoch=epoch).value
        expected = [np.sqrt(grad_sq[masks[:, i], epoch, i]).mean() for i in range(ds.n_train)]
        np.testing.assert_allclose(gr, expected, rtol=1e-4)
    si = proxies.self_influence(masks, out).value
    lr = cfg.learning_rate
    expected = [(lr * grad_sq[masks[:, i], 1:, i].sum(1)).mean() for i in range(ds.n_train)]
    np.testing.assert_allclose(si, expected, rtol=1e-4)
