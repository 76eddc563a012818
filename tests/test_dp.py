"""DP-SGD in the replica trainer (memjax.train (DP-SGD)) and its privacy budget (memjax.privacy).

Clipped gradients are checked against per-example gradients computed and clipped one by one
in a Python loop; the step against ordinary SGD; the Poisson batches against their rate; the
budget against dp-accounting and the closed form of composed Gaussian mechanisms.
"""

from __future__ import annotations

import json
import math
from functools import partial

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

import memjax as mj
from memjax.jsonio import json_text
from memjax.models import build
from memjax.outputs import FINAL_FIELDS, PRESENTATION_FIELDS, loss_from_logits
from memjax.train import _dp as dp


def one_device() -> list:
    return jax.local_devices()[:1]


def _losses(apply, params, x, y):
    return loss_from_logits(apply(params, x), y, "xent")


def _dp_gradient(apply, params, x, y, valid, clip, sampling="shuffle", expected=0.0, sigma=0.0):
    """memjax.train.private_gradient with the trainer's batch loss."""

    def batch_loss(p, weight, denom):
        logits = apply(p, x)
        losses = loss_from_logits(logits, y, "xent")
        return jnp.sum(losses * weight) / denom, jnp.argmax(logits, -1) == y

    def example_loss(p, xi, yi):
        return _losses(apply, p, xi[None], yi[None])[0]

    cfg = mj.DPConfig(clip_norm=clip, noise_multiplier=sigma, sampling=sampling)
    key = jax.random.PRNGKey(3)
    step = jax.jit(partial(dp.private_gradient, batch_loss, example_loss, dp=cfg))
    return step(params, x, y, valid, key, jnp.float32(expected))


def _brute_force(apply, params, x, y, valid, clip, denom):
    """Sum over valid examples of each one's gradient, clipped on its own, over ``denom``."""
    total = jax.tree.map(np.zeros_like, params)
    for i in np.flatnonzero(valid):
        g = jax.grad(lambda p, i=i: _losses(apply, p, x[i : i + 1], y[i : i + 1])[0])(params)
        norm_i = math.sqrt(
            sum(float(np.sum(np.asarray(v, np.float64) ** 2)) for v in jax.tree.leaves(g))
        )
        scale = min(1.0, clip / norm_i)
        total = jax.tree.map(lambda t, v, s=scale: t + s * np.asarray(v, np.float64), total, g)
    return jax.tree.map(lambda t: t / denom, total)


@pytest.mark.parametrize(
    "spec, shape",
    [
        (mj.models.MLP(widths=(16,)), (6,)),
        (mj.models.CNN1D(channels=(4, 4), kernel_size=3), (12, 1)),
        (mj.models.CNN2D(channels=(4,), hidden=8, image_shape=(6, 6, 1)), (36,)),
    ],
    ids=["mlp", "cnn1d", "cnn2d"],
)
@pytest.mark.slow
def test_clipped_gradient_equals_brute_force(spec, shape):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((10, *shape)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 3, 10))
    valid = jnp.asarray([1, 1, 1, 1, 1, 1, 1, 0, 1, 0], jnp.float32)  # two padding slots
    init, apply = build(spec, shape, 3)
    params = init(jax.random.PRNGKey(0))
    norms = [
        math.sqrt(
            sum(
                float(jnp.sum(v**2))
                for v in jax.tree.leaves(
                    jax.grad(lambda p, i=i: _losses(apply, p, x[i : i + 1], y[i : i + 1])[0])(
                        params
                    )
                )
            )
        )
        for i in range(10)
    ]
    clip = float(np.median(norms))  # about half the examples are clipped
    for sampling, denom in (("shuffle", 8.0), ("poisson", 5.0)):
        got, correct = _dp_gradient(apply, params, x, y, valid, clip, sampling, expected=5.0)
        want = _brute_force(
            apply, params, np.asarray(x), np.asarray(y), np.asarray(valid), clip, denom
        )
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(correct, np.argmax(apply(params, x), -1) == y)


def test_noise_has_the_dp_sgd_scale():
    """Noise on the clipped sum has std sigma * C, so on the gradient sigma * C / B."""
    spec = mj.models.MLP(widths=(64,))
    init, apply = build(spec, (6,), 3)
    params = init(jax.random.PRNGKey(1))
    x = jnp.ones((4, 6))
    y = jnp.zeros(4, jnp.int32)
    valid = jnp.ones(4)
    clean, _ = _dp_gradient(apply, params, x, y, valid, 0.5, "poisson", expected=2.0)
    noisy, _ = _dp_gradient(apply, params, x, y, valid, 0.5, "poisson", expected=2.0, sigma=3.0)
    diff = np.concatenate(
        [
            np.ravel(a - b)
            for a, b in zip(jax.tree.leaves(noisy), jax.tree.leaves(clean), strict=True)
        ]
    )
    want = 3.0 * 0.5 / 2.0
    # ~1000 Gaussian entries: the sample std is within 10% of the truth at > 5 sigma
    assert abs(diff.std() / want - 1) < 0.1
    assert abs(diff.mean()) < 5 * want / math.sqrt(len(diff))


SPEC = mj.models.MLP(widths=(16,), parameterization="standard")
PLAIN = mj.TrainConfig(epochs=3, batch_size=8, optimizer="sgd", learning_rate=0.1)


def _train(tiny, masks, cfg, **kw):
    return mj.train_replicas(SPEC, tiny, masks, cfg, seed=5, devices=one_device(), **kw)


def _same(a, b, rows_a=slice(None), rows_b=slice(None)):
    for name in (*FINAL_FIELDS, *PRESENTATION_FIELDS):
        np.testing.assert_array_equal(
            getattr(a, name)[rows_a], getattr(b, name)[rows_b], err_msg=name
        )


@pytest.mark.slow
def test_unclipped_noiseless_dp_sgd_is_ordinary_sgd_bit_for_bit(tiny):
    masks = mj.subsets.sample(tiny.n_train, 4, 0.5, seed=1)
    huge = mj.DPConfig(clip_norm=1e9, noise_multiplier=0.0, sampling="shuffle")
    cfg = mj.TrainConfig(**{**PLAIN.to_dict(), "dp": huge, "vectorize": "unroll"})
    plain = mj.TrainConfig(**{**PLAIN.to_dict(), "vectorize": "unroll"})
    _same(_train(tiny, masks, cfg), _train(tiny, masks, plain))


def test_poisson_batches_have_the_sampling_rate():
    n, batch, epochs = 60, 6, 600
    mask = np.arange(n) % 3 != 0  # a subset of 40: rate 6/40, 7 steps per epoch
    draw = jax.jit(
        jax.vmap(lambda k: dp.poisson_batches(k, jnp.asarray(mask), 9, batch, False, False))
    )
    idx, valid = (np.asarray(a) for a in draw(jax.random.split(jax.random.PRNGKey(0), epochs)))
    assert idx.shape == (epochs, 9, dp.poisson_cap(batch, n))
    assert valid[:, 7:].sum() == 0  # past the replica's 7 steps: no-ops
    counts = np.zeros(n)
    np.add.at(counts, idx[valid > 0], 1)
    assert counts[~mask].sum() == 0
    trials = epochs * 7 * 40
    sd = math.sqrt(6 / 40 * (34 / 40) / trials)
    assert abs(counts[mask].sum() / trials - 6 / 40) < 4 * sd
    # each example alone: its rate within 4.5 binomial sds (40 examples)
    assert np.all(np.abs(counts[mask] / (epochs * 7) - 6 / 40) < 4.5 * sd * math.sqrt(40))
    # a batch holds distinct examples
    for row, v in zip(
        idx[:3].reshape(-1, idx.shape[2]), valid[:3].reshape(-1, idx.shape[2]), strict=True
    ):
        assert len(np.unique(row[v > 0])) == int(v.sum())


def test_step_inputs_keep_every_step_of_a_replica_live():
    """Past a replica's own steps its step is a no-op (expected batch 0); before, it is live
    even if its Poisson draw is empty, so its noise is always added."""
    masks = jnp.asarray(np.arange(60)[None] < np.array([[40], [13]]))  # subsets of 40 and 13
    keys, expected = dp.step_inputs(
        jax.random.split(jax.random.PRNGKey(0), 2), masks, 9, 6, False, False
    )
    assert keys.shape == (9, 2, 2) and len({tuple(k) for k in np.asarray(keys[:, 0])}) == 9
    np.testing.assert_array_equal(expected[:, 0], [6] * 7 + [0] * 2)
    np.testing.assert_array_equal(expected[:, 1], [6] * 3 + [0] * 6)


def test_poisson_cap_bounds_the_truncation_probability():
    from scipy.stats import binom

    for batch, n in ((8, 48), (128, 1797), (256, 60000)):
        cap = dp.poisson_cap(batch, n)
        assert batch < cap <= n
        assert cap == n or binom.sf(cap, n, batch / n) <= dp.TRUNCATION


@pytest.mark.slow
def test_dp_training_keeps_the_invariances(tiny):
    """Noise and Poisson batches depend on (seed, replica, epoch, step) only: a replica's run
    is the same trained alone, in another group size, or beside other replicas."""
    masks = mj.subsets.sample(tiny.n_train, 6, 0.5, seed=1)
    noisy = mj.DPConfig(clip_norm=1.0, noise_multiplier=1.0)
    cfg = mj.TrainConfig(**{**PLAIN.to_dict(), "dp": noisy, "vectorize": "unroll", "group_size": 2})
    whole = _train(tiny, masks, cfg)
    cfg3 = mj.TrainConfig(**{**cfg.to_dict(), "dp": noisy, "group_size": 3})
    part = _train(tiny, masks[[4, 1]], cfg3, replica_ids=np.array([4, 1]), max_subset_size=48)
    _same(whole, part, [4, 1])
    plain = _train(tiny, masks, mj.TrainConfig(**{**PLAIN.to_dict(), "vectorize": "unroll"}))
    assert not np.array_equal(whole.train_loss, plain.train_loss)


def test_dp_with_batchnorm_is_refused_by_name(tiny):
    """BatchNorm mixes a minibatch's examples: no per-example gradient, no DP guarantee."""
    images = mj.data.from_arrays(
        np.zeros((8, 8, 8, 1), np.float32), np.arange(8) % 2, np.zeros((2, 8, 8, 1)), [0, 1]
    )
    cfg = mj.TrainConfig(epochs=1, dp=mj.DPConfig(clip_norm=1.0, noise_multiplier=1.0))
    masks = np.ones((1, 8), bool)
    with pytest.raises(ValueError, match=r"dp with ResNet9\(norm='batch'\)"):
        mj.train_replicas(mj.models.ResNet9(widths=(4, 4, 4, 4), norm="batch"), images, masks, cfg)


def test_dp_config_is_checked_and_read_from_config_files():
    cfg = mj.TrainConfig.from_dict({"epochs": 2, "dp": {"clip_norm": 1, "noise_multiplier": 1.1}})
    assert cfg.dp == mj.DPConfig(1.0, 1.1)
    assert hash(cfg) == hash(mj.TrainConfig(epochs=2, dp=mj.DPConfig(1.0, 1.1)))
    assert cfg.result_dict()["dp"]["sampling"] == "poisson"
    assert "dp" not in mj.TrainConfig().result_dict()
    for section, setting in (
        ({"clip_norm": 0, "noise_multiplier": 1}, "train.dp.clip_norm"),
        ({"clip_norm": 1, "noise_multiplier": -1}, "train.dp.noise_multiplier"),
        ({"clip_norm": 1, "noise_multiplier": 1, "delta": 1}, "train.dp.delta"),
        ({"clip_norm": 1, "noise_multiplier": 1, "sampling": "x"}, "train.dp.sampling"),
        ({"clip_norm": 1}, "train.dp.noise_multiplier"),
        ({"clip_norm": 1, "noise_multiplier": 1, "sigma": 1}, "train.dp.sigma"),
    ):
        with pytest.raises(mj.schema.ConfigError) as err:
            mj.TrainConfig.from_dict({"dp": section})
        assert err.value.setting == setting
    with pytest.raises(mj.schema.ConfigError, match="DPConfig"):
        mj.TrainConfig(dp={"clip_norm": 1})


def _analytic_gaussian_epsilon(mu: float, delta: float) -> float:
    """Exact epsilon of a Gaussian mechanism of sensitivity/std mu (Balle & Wang 2018):
    delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2), solved by bisection."""
    lo, hi = 0.0, 100.0
    for _ in range(200):
        eps = (lo + hi) / 2
        d = norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)
        lo, hi = (eps, hi) if d > delta else (lo, eps)
    return (lo + hi) / 2


def test_epsilon_is_dp_accountings_and_bounds_the_exact_one():
    for sigma, q, steps in ((1.1, 256 / 60000, 14000), (2.0, 0.1, 300), (0.8, 0.02, 50)):
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
        )
        rdp = dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(1e-5)
        assert mj.privacy.dp_epsilon(sigma, q, steps, 1e-5) == rdp
    # without subsampling T Gaussian steps are one Gaussian mechanism with mu = sqrt(T)/sigma
    for sigma, steps in ((2.0, 4), (5.0, 25)):
        exact = _analytic_gaussian_epsilon(math.sqrt(steps) / sigma, 1e-5)
        assert mj.privacy.dp_epsilon(sigma, 1.0, steps, 1e-5) >= exact
        assert mj.privacy.dp_epsilon_pld(sigma, 1.0, steps, 1e-5) == pytest.approx(exact, rel=2e-2)
    assert mj.privacy.dp_epsilon(0.0, 0.1, 10, 1e-5) == math.inf
    with pytest.raises(ValueError, match="sampling_rate"):
        mj.privacy.dp_epsilon(1.0, 0.0, 10, 1e-5)


def _digits_dp_study(*, epochs: int, dp: mj.DPConfig):
    """4 fixed-design replicas on halves of digits, batches of 100, under ``dp``."""
    from memjax.study import StudyConfig

    train = mj.TrainConfig(epochs=epochs, batch_size=100, dp=dp)
    return StudyConfig(
        dataset={"name": "digits"}, model=SPEC, replicas=4, ratio=0.5, design="fixed", train=train
    )


def test_dp_study_records_its_budget(tmp_path, tiny):
    from memjax.study import open_or_create

    cfg = _digits_dp_study(epochs=3, dp=mj.DPConfig(1.0, 1.5, delta=1e-4))
    digits = mj.data.load("digits")
    open_or_create(cfg, str(tmp_path / "s"), digits)
    meta = json.loads((tmp_path / "s" / "study.json").read_text())["dp"]
    m = round(0.5 * digits.n_train)
    assert meta["sampling_rate"] == 100 / m
    assert meta["steps"] == 3 * math.ceil(m / 100)
    assert meta["delta"] == 1e-4
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(100 / m, dp_accounting.GaussianDpEvent(1.5)),
        meta["steps"],
    )
    assert meta["epsilon"] == dp_accounting.rdp.RdpAccountant().compose(event).get_epsilon(1e-4)


def test_a_noiseless_dp_study_records_an_unbounded_epsilon_as_strict_json_null(tmp_path):
    """noise_multiplier 0 has no finite epsilon: study.json says null (no bare Infinity,
    which strict parsers refuse), and recorded_epsilon reads it back as inf."""
    from memjax.privacy import recorded_epsilon
    from memjax.study import open_or_create

    cfg = _digits_dp_study(epochs=1, dp=mj.DPConfig(1.0, 0.0))
    open_or_create(cfg, str(tmp_path / "s"), mj.data.load("digits"))

    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    meta = json.loads((tmp_path / "s" / "study.json").read_text(), parse_constant=refuse)
    assert meta["dp"]["epsilon"] is None and recorded_epsilon(meta["dp"]) == math.inf
    with pytest.raises(ValueError, match="Out of range float"):
        json_text({"epsilon": math.inf})
