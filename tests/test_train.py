"""memjax.train_replicas: outputs, invariances (slicing, grouping, devices), and its semantics
checked against hand-written training loops. Fast: a tiny MLP on a 48-example problem.

Compiled programs are cached on (spec, cfg, shapes, group, steps), so tests share SPEC/CFG and
module fixtures to pay for each compilation once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import memjax as mj
from memjax.outputs import FINAL_FIELDS, PRESENTATION_FIELDS, per_example_metrics
from memjax.train import replica_init_keys, replica_keys

SPEC = mj.models.MLP(widths=(16,), parameterization="standard")
CFG = mj.TrainConfig(epochs=3, batch_size=8, optimizer="adam", learning_rate=1e-2)
R = 8
SEED = 5


def one_device() -> list:
    return jax.local_devices()[:1]


def assert_same_rows(
    a: mj.ReplicaOutputs, b: mj.ReplicaOutputs, rows_a, rows_b=None, exact: bool = True
) -> None:
    """Replica rows of two runs agree: bit for bit when each replica is its own chain of
    per-replica ops (vectorize "unroll", the CPU default), and to float32 roundoff when
    replicas are vmapped (the batch width may change XLA's reduction order); correctness and
    the per-presentation counts derived from it always bit for bit."""
    rows_b = slice(None) if rows_b is None else rows_b
    for name in (*FINAL_FIELDS, *PRESENTATION_FIELDS):
        x, y = getattr(a, name)[rows_a], getattr(b, name)[rows_b]
        if exact or x.dtype.kind in "bi":
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5, err_msg=name)


def unrolled(vectorize: str) -> bool:
    return vectorize == "unroll" or (vectorize == "auto" and jax.default_backend() == "cpu")


@pytest.fixture(scope="module")
def masks(tiny) -> np.ndarray:
    """Balanced half subsets of unequal sizes plus one full-data replica (the last): every
    other replica idles through padding steps while the full-data one trains."""
    m = mj.subsets.sample(tiny.n_train, R, 0.5, seed=1)
    m[-1] = True
    assert len(np.unique(m[:-1].sum(1))) > 1
    return m


def train(tiny, masks: np.ndarray, seed: int) -> mj.ReplicaOutputs:
    return mj.train_replicas(SPEC, tiny, masks, CFG, seed=seed, devices=one_device())


@pytest.fixture(scope="module")
def full_run(tiny, masks) -> mj.ReplicaOutputs:
    return train(tiny, masks, SEED)


def test_output_shapes_and_dtypes(tiny, full_run):
    out = full_run
    np.testing.assert_array_equal(out.replica_ids, np.arange(R))
    for split, n in (("train", tiny.n_train), ("test", tiny.n_test)):
        assert getattr(out, f"{split}_correct").shape == (R, n)
        assert getattr(out, f"{split}_correct").dtype == bool
        for kind in ("margin", "loss"):
            v = getattr(out, f"{split}_{kind}")
            assert v.shape == (R, n) and v.dtype == np.float32 and np.isfinite(v).all()
    assert out.traj_correct is None and out.record_epochs is None
    assert (out.train_loss >= 0).all()
    for name in PRESENTATION_FIELDS:
        assert getattr(out, name).shape == (R, tiny.n_train)
        assert getattr(out, name).dtype == np.int32


def test_examples_outside_the_subset_are_never_presented(masks, full_run):
    """OUT: 0 events and first_learned -1; IN (no drop_last): a presentation every epoch, so
    first_learned is an epoch index 0..E-1 or E (wrong at the last presentation)."""
    events, first = full_run.forgetting_events, full_run.first_learned
    assert (events[~masks] == 0).all() and (first[~masks] == -1).all()
    assert ((first[masks] >= 0) & (first[masks] <= CFG.epochs)).all()
    assert (events[masks] <= CFG.epochs // 2).all()  # a forgetting needs two presentations


def test_training_learns_and_prefers_seen_examples(tiny, masks, full_run):
    """Three epochs on separable blobs: well above chance (1/3) and a lower loss on IN than
    on OUT examples, as medians over 16 seeds (one run each, 0.1 s). Measured over 160 seeds:
    test accuracy 0.70 (sd 0.066, min 0.51), OUT-minus-IN loss 0.16 (sd 0.13, < 0 for 9% of
    seeds), so one seed is no evidence; over 10 disjoint groups of 16 seeds the medians were
    0.70 (sd 0.018) and 0.156 (sd 0.041): both bars sit ~4-5 of their sds below."""
    accuracy, loss_gap = [], []
    for seed in range(SEED, SEED + 16):
        out = full_run if seed == SEED else train(tiny, masks, seed)
        half = masks[:-1]
        accuracy.append(out.test_correct.mean())
        loss_gap.append(out.train_loss[:-1][~half].mean() - out.train_loss[:-1][half].mean())
    assert np.median(accuracy) > 0.6, accuracy
    assert np.median(loss_gap) > 0, loss_gap


def test_margin_and_xent_loss_are_consistent(full_run):
    """margin = log(p_y / (1 - p_y)) and loss = -log p_y, hence loss = log(1 + exp(-margin))."""
    for split in ("train", "test"):
        margin = getattr(full_run, f"{split}_margin").astype(np.float64)
        loss = getattr(full_run, f"{split}_loss").astype(np.float64)
        np.testing.assert_allclose(loss, np.logaddexp(0.0, -margin), rtol=1e-4, atol=1e-6)
        correct = getattr(full_run, f"{split}_correct")
        assert correct[margin > 0].all()  # p_y > 1/2 means y is the argmax


def test_margin_definition_against_numpy():
    """margin = z_y - logsumexp(z_other), finite even for logits far outside exp's range."""
    from scipy.special import logsumexp

    from memjax.outputs import loss_from_logits, margin_from_logits

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (50, 4))
    logits[0] = [800.0, -800.0, 0.0, 1.0]  # confident and right
    logits[1] = [-900.0, 900.0, 0.0, 0.0]  # confident and wrong
    labels = rng.integers(0, 4, 50)
    labels[:2] = 0
    others = np.where(np.eye(4, dtype=bool)[labels], -np.inf, logits)
    want = logits[np.arange(50), labels] - logsumexp(others, axis=1)
    got = np.asarray(margin_from_logits(jnp.asarray(logits, jnp.float32), jnp.asarray(labels)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    xent = -(logits[np.arange(50), labels] - logsumexp(logits, axis=1))
    got_loss = loss_from_logits(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), "xent")
    np.testing.assert_allclose(np.asarray(got_loss), xent, rtol=1e-5, atol=1e-4)
    onehot = np.eye(4)[labels]
    got_mse = loss_from_logits(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), "mse")
    np.testing.assert_allclose(
        np.asarray(got_mse), 0.5 * ((logits - onehot) ** 2).sum(1), rtol=1e-5
    )


def test_rerun_is_identical_and_seed_matters(tiny, masks, full_run):
    again = train(tiny, masks, SEED)
    for name in (*FINAL_FIELDS, *PRESENTATION_FIELDS):
        np.testing.assert_array_equal(getattr(again, name), getattr(full_run, name))
    other = train(tiny, masks, SEED + 1)
    assert not np.allclose(other.train_loss, full_run.train_loss)


@pytest.mark.parametrize(
    ("ids", "group_size", "vectorize"),
    [
        ([5, 2, 7], 0, "auto"),  # unsorted, non-contiguous, including the full-data replica
        ([R - 1], 1, "auto"),  # the full-data replica alone
        ([2], 1, "auto"),  # a half-data replica alone: fewer steps, no padding
        (list(range(R)), 3, "vmap"),  # another group size (with padding replicas), vmapped
    ],
    ids=["slice", "full-alone", "half-alone", "group3-vmap"],
)
def test_slice_and_group_size_invariance(tiny, masks, full_run, ids, group_size, vectorize):
    """Replica r's result depends on (seed, r, its mask) only: not on the other replicas of
    the call, how they are grouped and vectorized, or how many padding steps it idles."""
    ids = np.array(ids)
    cfg = mj.TrainConfig(**{**CFG.to_dict(), "group_size": group_size, "vectorize": vectorize})
    part = mj.train_replicas(
        SPEC, tiny, masks[ids], cfg, seed=SEED, replica_ids=ids, devices=one_device()
    )
    np.testing.assert_array_equal(part.replica_ids, ids)
    assert_same_rows(full_run, part, ids, exact=unrolled(vectorize))


_SUBPROCESS = textwrap.dedent(
    """
    import sys
    import jax
    import numpy as np
    import memjax as mj

    assert jax.device_count() == 4, jax.devices()
    d = np.load(sys.argv[1])
    ds = mj.data.from_arrays(d["xtr"], d["ytr"], d["xte"], d["yte"], int(d["c"]))
    spec = mj.models.spec_from_dict(__import__("json").loads(sys.argv[3]))
    cfg = mj.TrainConfig.from_dict(__import__("json").loads(sys.argv[4]))
    out = mj.train_replicas(spec, ds, d["masks"], cfg, seed=int(d["seed"]))
    np.savez(sys.argv[2], **out.arrays())
    """
)


@pytest.mark.slow
def test_device_count_invariance(tmp_path: Path, tiny, masks, full_run):
    """The same chunk sharded over 4 forced host devices (2 replicas each) in a subprocess."""
    inputs, result = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(
        inputs, xtr=tiny.x_train, ytr=tiny.y_train, xte=tiny.x_test, yte=tiny.y_test,
        c=tiny.num_classes, masks=masks, seed=SEED,
    )  # fmt: skip
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [
            sys.executable, "-c", _SUBPROCESS, str(inputs), str(result),
            json.dumps(mj.models.spec_to_dict(SPEC)), json.dumps(CFG.to_dict()),
        ],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(result) as arrays:
        sharded = mj.ReplicaOutputs(**{k: arrays[k] for k in arrays.files})
    np.testing.assert_array_equal(sharded.replica_ids, np.arange(R))
    assert_same_rows(full_run, sharded, slice(None), exact=unrolled(CFG.vectorize))


@pytest.mark.slow
def test_full_batch_sgd_mse_equals_hand_written_gradient_descent(tiny, masks):
    """batch_size=None + plain sgd + mse is gradient descent on the subset's mean loss, from
    the init that replica_keys prescribes for the replica id."""
    epochs, lr, ids = 6, 0.05, np.array([2, 3])
    cfg = mj.TrainConfig(
        epochs=epochs, batch_size=None, optimizer="sgd", learning_rate=lr, loss="mse"
    )
    out = mj.train_replicas(
        SPEC, tiny, masks[ids], cfg, seed=SEED, replica_ids=ids, devices=one_device()
    )
    init, apply = mj.models.build(SPEC, tiny.input_shape, tiny.num_classes)
    onehot = jax.nn.one_hot(tiny.y_train, tiny.num_classes)

    def per_example(params, x, t):
        return 0.5 * jnp.sum((apply(params, x) - t) ** 2, axis=-1)

    for row, r in enumerate(ids):
        key = jax.random.split(replica_keys(SEED, np.array([r]))[0])[0]
        np.testing.assert_array_equal(key, replica_init_keys(SEED, np.array([r]))[0])
        params = init(key)
        x, t = jnp.asarray(tiny.x_train[masks[r]]), onehot[masks[r]]
        grad = jax.jit(jax.grad(lambda p, x=x, t=t: per_example(p, x, t).mean()))
        for _ in range(epochs):
            params = jax.tree.map(lambda p, g: p - lr * g, params, grad(params))
        want = per_example(params, jnp.asarray(tiny.x_train), onehot)
        np.testing.assert_allclose(out.train_loss[row], want, rtol=1e-4, atol=1e-6)
        logits = apply(params, jnp.asarray(tiny.x_test))
        np.testing.assert_array_equal(
            out.test_correct[row], np.asarray(jnp.argmax(logits, -1)) == tiny.y_test
        )


@pytest.mark.slow
def test_recorded_trajectory_starts_at_init_and_ends_at_final_metrics(tiny, masks):
    cfg = mj.TrainConfig(**{**CFG.to_dict(), "epochs": 4, "record_every": 2})
    out = mj.train_replicas(SPEC, tiny, masks[:2], cfg, seed=SEED, devices=one_device())
    np.testing.assert_array_equal(out.record_epochs, [0, 2, 4])
    init, apply = mj.models.build(SPEC, tiny.input_shape, tiny.num_classes)
    x, y = jnp.asarray(tiny.x_train), jnp.asarray(tiny.y_train)
    at_init = [
        per_example_metrics(apply(init(k), x), y, "xent")
        for k in replica_init_keys(SEED, np.arange(2))
    ]
    for name in ("correct", "margin", "loss", "el2n"):
        traj = getattr(out, f"traj_{name}")
        assert traj.shape == (2, 3, tiny.n_train)
        want = np.stack([np.asarray(m[name]) for m in at_init])
        np.testing.assert_allclose(traj[:, 0], want, rtol=1e-5, atol=1e-6, err_msg=name)
        if name != "el2n":
            np.testing.assert_allclose(traj[:, -1], getattr(out, f"train_{name}"), rtol=1e-6)
    np.testing.assert_allclose(out.record_lr, [CFG.learning_rate] * 3, rtol=1e-6)
    assert (out.traj_el2n >= 0).all()


def forgetting_by_hand(correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forgetting events and first_learned of one example from its correctness at its
    presentations, in epochs 0..E-1 (one presentation per epoch), by a plain loop."""
    events, last, first = 0, False, -1
    for e, ok in enumerate(correct):
        events += int(last and not ok)
        first = (first if last else e) if ok else len(correct)
        last = ok
    return events, first


@pytest.mark.slow
def test_full_batch_forgetting_equals_transitions_of_the_recordings(tiny, masks):
    """Full-batch training recorded every epoch: the step of epoch e+1 sees the parameters
    recorded at epoch e, so the per-presentation counts are the correct -> incorrect
    transitions of [correctness at init, records of epochs 1..E-1]."""
    epochs, ids = 8, np.arange(4)
    cfg = mj.TrainConfig(
        epochs=epochs, batch_size=None, optimizer="sgd", learning_rate=0.5, record_every=1
    )
    out = mj.train_replicas(
        SPEC, tiny, masks[ids], cfg, seed=SEED, replica_ids=ids, devices=one_device()
    )
    np.testing.assert_array_equal(out.record_epochs, np.arange(epochs + 1))
    seen = out.traj_correct[:, :epochs]  # at init and after epochs 1..E-1
    for row, r in enumerate(ids):
        for i in range(tiny.n_train):
            events, first = forgetting_by_hand(seen[row, :, i]) if masks[r, i] else (0, -1)
            assert out.forgetting_events[row, i] == events, (r, i)
            assert out.first_learned[row, i] == first, (r, i)
    assert out.forgetting_events.sum() >= 5  # the bar is not met by an empty count
    transitions = (seen[:, :-1] & ~seen[:, 1:]).sum(1)
    np.testing.assert_array_equal(out.forgetting_events, np.where(masks[ids], transitions, 0))


def python_loop(ds, mask: np.ndarray, r: int, cfg: mj.TrainConfig) -> tuple[np.ndarray, ...]:
    """One replica by a plain loop over minibatches (sgd, constant rate): its data order from
    its key as the trainer documents it, forgetting counted per presentation in python."""
    init, apply = mj.models.build(SPEC, ds.input_shape, ds.num_classes)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    init_key, data_key = jax.random.split(replica_keys(SEED, np.array([r]))[0])
    params = init(init_key)

    @jax.jit
    def step(params, xb, yb):
        def loss(p):
            logits = apply(p, xb)
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(yb)), yb]), logits

        (_, logits), g = jax.value_and_grad(loss, has_aux=True)(params)
        new = jax.tree.map(lambda p, d: p - cfg.learning_rate * d, params, g)
        return new, jnp.argmax(logits, -1) == yb

    n, b = ds.n_train, cfg.batch_size
    events, first, last = np.zeros(n, int), np.full(n, -1), np.zeros(n, bool)
    for e, key in enumerate(jax.random.split(data_key, cfg.epochs)):
        order = np.argsort(np.where(mask, np.asarray(jax.random.uniform(key, (n,))), 2.0))
        order = order[: mask.sum() // b * b if cfg.drop_last else mask.sum()]
        for start in range(0, len(order), b):
            idx = order[start : start + b]
            params, correct = step(params, x[idx], y[idx])
            for i, ok in zip(idx, np.asarray(correct), strict=True):
                events[i] += int(last[i] and not ok)
                first[i] = (first[i] if last[i] else e) if ok else cfg.epochs
                last[i] = ok
    losses = -jax.nn.log_softmax(apply(params, x))[jnp.arange(n), y]
    return events, first, np.asarray(losses)


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.slow
def test_minibatch_forgetting_equals_a_python_loop(tiny, masks, drop_last):
    """Shuffled minibatches (the last one partial, or dropped): counts equal a plain loop's.
    With drop_last=True an IN example may miss an epoch (or every epoch: first_learned -1)."""
    ids = np.array([1, R - 1])  # a half subset and the full data
    cfg = mj.TrainConfig(
        epochs=5, batch_size=7, optimizer="sgd", learning_rate=1.0, drop_last=drop_last
    )
    out = mj.train_replicas(
        SPEC, tiny, masks[ids], cfg, seed=SEED, replica_ids=ids, devices=one_device()
    )
    for row, r in enumerate(ids):
        events, first, loss = python_loop(tiny, masks[r], r, cfg)
        np.testing.assert_allclose(out.train_loss[row], loss, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(out.forgetting_events[row], events)
        np.testing.assert_array_equal(out.first_learned[row], first)
    assert out.forgetting_events.sum() > 0


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda m: m[:, :-1], ValueError, r"masks must have shape \(replicas, 48\)"),
        (lambda m: m[0], ValueError, r"masks must have shape \(replicas, 48\)"),
        (lambda m: m.astype(np.int8), TypeError, r"masks must be boolean"),
        (lambda m: np.vstack([m[:2], np.zeros((1, 48), bool)]), ValueError, r"\[2\].*empty"),
    ],
    ids=["columns", "1-d", "int", "empty-subset"],
)
def test_mask_errors(tiny, masks, make, error, message):
    with pytest.raises(error, match=message):
        mj.train_replicas(SPEC, tiny, make(masks), CFG)


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([0, 1, 1], r"replica_ids must be distinct non-negative"),
        ([0, -1, 2], r"replica_ids must be distinct non-negative"),
        ([0, 1], r"one id per mask row \(3\)"),
    ],
)
def test_replica_id_errors(tiny, masks, ids, message):
    with pytest.raises(ValueError, match=message):
        mj.train_replicas(SPEC, tiny, masks[:3], CFG, replica_ids=np.array(ids))


# ------------------------------------------------------------------------------ training bars
# Ordinary settings: Adam at its usual 1e-2..1e-3 step sizes on a standard-parameterization
# network. (Under the ntk parameterization a parameter's effect is scaled by W_std/sqrt(fan_in),
# so the same Adam step moves the function ~10x less and these runs underfit.)

ADAM = {"optimizer": "adam", "learning_rate": 1e-2, "batch_size": 128}
NOISE_RATE = 0.1
# replicas per study: MNIST-1D's cost the most (64: 26 s, 128: 54 s, with the margin below)
NOISE_REPLICAS = {"mnist1d": 64, "digits": 128, "breast_cancer": 128}


def breast_cancer() -> mj.data.Dataset:
    """scikit-learn's breast-cancer data (569 x 30, 2 classes) through from_arrays: a
    stratified 75/25 split, features standardized with the training statistics."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    d = load_breast_cancer()
    xtr, xte, ytr, yte = train_test_split(
        d.data, d.target, test_size=0.25, stratify=d.target, random_state=0
    )
    mu, sd = xtr.mean(0), xtr.std(0)
    return mj.data.from_arrays((xtr - mu) / sd, ytr, (xte - mu) / sd, yte, name="breast_cancer")


@pytest.mark.slow
def test_mlp_reaches_62_percent_on_mnist1d(mnist1d):
    """Seeds 0-4 measured: the worse replica of the two at 0.661-0.686 (mean 0.678, sd
    0.011), i.e. the bar is 5 seed-to-seed sds below; the 10 replicas 0.683 (sd 0.010)."""
    spec = mj.models.MLP(widths=(256, 256), parameterization="standard")
    cfg = mj.TrainConfig(epochs=20, schedule="cosine", **ADAM)
    out = mj.train_replicas(spec, mnist1d, np.ones((2, mnist1d.n_train), bool), cfg, seed=0)
    accuracy = out.test_correct.mean(axis=1)
    print(f"MLP test accuracy per replica: {accuracy}")
    assert accuracy.min() >= 0.62


@pytest.mark.slow
@pytest.mark.optimized
def test_cnn1d_reaches_90_percent_on_mnist1d(mnist1d):
    """One replica. Measured on 10 (seeds 0-5, and replicas 1-2 of seeds 0-1): 0.911-0.925,
    mean 0.9175, sd 0.0048, so the bar is 3.6 seed-to-seed sds below (three replicas and
    their median would cost ~45 s more)."""
    cfg = mj.TrainConfig(epochs=30, optimizer="adam", learning_rate=3e-3, schedule="cosine")
    out = mj.train_replicas(
        mj.models.CNN1D(), mnist1d, np.ones((1, mnist1d.n_train), bool), cfg, seed=0
    )
    accuracy = out.test_correct.mean()
    print(f"CNN1D test accuracy: {accuracy:.3f}")  # 0.915 with seed 0; 20 epochs give 0.914
    assert accuracy >= 0.90


MLP1 = mj.models.MLP((256,), parameterization="standard")
MLP2 = mj.models.MLP((256, 256), parameterization="standard")
# name: (dataset, spec, train config, subset ratio, subset design). Measured with seed s for
# the label noise, the masks and the training, s = 0..4 (the test uses s = 0):
#   MNIST-1D, 64   AUC 0.922 0.915 0.913 0.926 0.918: mean 0.919, sd 0.0052 (replica test acc 0.54)
#   (MNIST-1D, 128 AUC 0.932 0.924 0.926 0.941 0.932: mean 0.931, sd 0.0067)
#   digits         AUC 0.995 0.996 0.996 0.996 0.995: mean 0.9955, sd 0.0007
#   breast cancer  AUC 0.984 0.989 0.988 0.996 0.970: mean 0.985, sd 0.0096
# so the 0.9 bar sits 3.6, >100 and 8.9 seed-to-seed sds below the means. A planted bug (the
# estimate given another replica's masks, rows shuffled) gives MNIST-1D AUC 0.531 (seed 0).
# The shallower MLP on 50% MNIST-1D subsets stays at AUC ~0.81-0.86 whatever the epochs.
NOISE_STUDIES = {
    # MNIST-1D is hard for an MLP (clean test accuracy ~65%): many clean examples are only
    # right when trained on, i.e. memorized too. A deeper MLP on 75% subsets generalizes
    # enough to rank the flipped labels first.
    "mnist1d": (lambda: mj.data.load("mnist1d"), MLP2,
                mj.TrainConfig(epochs=40, optimizer="adam", learning_rate=3e-3), 0.75, "fixed"),
    "digits": (lambda: mj.data.load("digits"), MLP1, mj.TrainConfig(epochs=50, **ADAM), 0.5,
               "balanced"),  # 100 epochs: AUC 0.997 at twice the cost
    "breast_cancer": (breast_cancer, MLP1, mj.TrainConfig(epochs=100, **ADAM), 0.5, "balanced"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.optimized
@pytest.mark.parametrize("name", list(NOISE_STUDIES))
def test_memorization_separates_flipped_labels(name):
    """Feldman-Zhang memorization of correctness ranks the 10% flipped examples above the
    clean ones (ROC AUC >= 0.9) with NOISE_REPLICAS replicas; one seed, the margin measured
    over five (see NOISE_STUDIES)."""
    from sklearn.metrics import roc_auc_score

    load, spec, cfg, ratio, design = NOISE_STUDIES[name]
    noisy, flipped = mj.data.with_label_noise(load(), NOISE_RATE, seed=0)
    masks = mj.subsets.sample(noisy.n_train, NOISE_REPLICAS[name], ratio, seed=0, design=design)
    out = mj.train_replicas(spec, noisy, masks, cfg, seed=0)
    mem = mj.estimators.memorization(masks, out.train_correct)
    auc = roc_auc_score(flipped, mem.value)
    fit = out.train_correct[masks].mean()
    print(f"{name}: AUC {auc:.3f}, IN accuracy {fit:.3f}, test {out.test_correct.mean():.3f}")
    assert auc >= 0.9


@pytest.mark.slow
def test_a_constant_uint8_channel_trains_to_finite_margins(tiny):
    """An alpha channel of 255 has std 0: it is standardized to zeros (std taken as 1), not
    divided by zero into NaN in every loss and margin."""
    pixels = np.round((tiny.x_train - tiny.x_train.min()) * 20).clip(0, 254)
    x = np.stack([pixels.astype(np.uint8), np.full_like(pixels, 255, np.uint8)], axis=-1)
    ds = mj.data.from_arrays(x, tiny.y_train, x[:20], tiny.y_train[:20], 3)
    assert ds.channel_stats[1][1] == 1.0
    assert not ds.model_inputs(ds.x_test)[..., 1].any()
    out = mj.train_replicas(SPEC, ds, np.ones((1, ds.n_train), bool), CFG, devices=one_device())
    for name in ("train_margin", "train_loss", "test_margin", "test_loss"):
        assert np.isfinite(getattr(out, name)).all(), name
    assert out.train_correct.mean() > 0.5
