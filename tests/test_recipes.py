"""Training recipes (memjax.train.recipes): each against values computed independently.

The optimizer against a numpy loop of torch.optim.SGD's / AdamW's update rule, schedules
against their closed forms at sample points, label smoothing against the smoothed-target
cross-entropy, and one trainer run with every recipe at once against a hand-written
minibatch loop (its own data order, its own step count, its EMA). The trainer's
invariances (group size, vmap vs unroll) hold with the recipes on.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

import memjax as mj
from memjax import schema
from memjax.outputs import loss_from_logits
from memjax.study import load_config
from memjax.train import recipes, replica_keys

SPEC = mj.models.MLP(widths=(16,), parameterization="standard")
SEED = 5
R = 4
IDS = np.array([1, R - 1])  # a half subset (4 steps per epoch) and the full data (7 steps)
RECIPES = mj.TrainConfig(
    epochs=4,
    batch_size=7,
    optimizer="momentum",
    learning_rate=0.3,
    momentum=0.9,
    nesterov=True,
    weight_decay=0.02,
    decay_norm_and_bias=False,
    schedule="cosine",
    warmup_epochs=1.5,
    label_smoothing=0.2,
    ema_decay=0.8,
    record_every=2,
)


# ------------------------------------------------------------------------------ optimizer


def torch_sgd(params, grads, lrs, mu, wd, nesterov, decayed):
    """torch.optim.SGD(momentum=mu, nesterov, weight_decay=wd, dampening=0) step by step,
    weight decay only on the names in ``decayed``; returns every iterate."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    buf, out = {}, []
    for g_t, lr in zip(grads, lrs, strict=True):
        for k in p:
            g = g_t[k] + (wd * p[k] if k in decayed else 0.0)
            if mu:
                buf[k] = g if k not in buf else mu * buf[k] + g
                g = g + mu * buf[k] if nesterov else buf[k]
            p[k] = p[k] - lr * g
        out.append({k: v.copy() for k, v in p.items()})
    return out


def torch_adamw(params, grads, lrs, wd, decayed, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.AdamW's rule (decoupled decay p <- p - lr wd p), decay on ``decayed``."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    m = {k: 0.0 for k in p}
    v = {k: 0.0 for k in p}
    out = []
    for t, (g_t, lr) in enumerate(zip(grads, lrs, strict=True), start=1):
        for k in p:
            g = g_t[k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g**2
            step = (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
            p[k] = p[k] - lr * (step + (wd * p[k] if k in decayed else 0.0))
        out.append({k: x.copy() for k, x in p.items()})
    return out


def run_optimizer(cfg, params, grads, lrs):
    """memjax's update (ReplicaOptimizer) over the same steps: (iterates, evaluated)."""
    opt = recipes.ReplicaOptimizer(cfg)
    p = {k: jnp.asarray(v) for k, v in params.items()}
    state = opt.init(p)
    iterates, evaluated = [], []
    for g, lr in zip(grads, lrs, strict=True):
        p, state = opt.update({k: jnp.asarray(v) for k, v in g.items()}, state, p, lr)
        iterates.append({k: np.asarray(v) for k, v in p.items()})
        evaluated.append({k: np.asarray(v) for k, v in opt.evaluated(p, state).items()})
    return iterates, evaluated


def random_problem(steps=6, seed=0):
    rng = np.random.default_rng(seed)
    params = {
        "kernel": rng.standard_normal((3, 4)).astype(np.float32),
        "bias": rng.standard_normal(4).astype(np.float32),
        "scale": rng.standard_normal(4).astype(np.float32) + 1.0,  # a norm's scale: 1-D
    }
    grads = [
        {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        for _ in range(steps)
    ]
    lrs = np.linspace(0.3, 0.05, steps)  # the rate changes every step, as with a schedule
    return params, grads, lrs


def assert_iterates_close(got, want, tol=2e-5):
    for g, w in zip(got, want, strict=True):
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=tol, atol=tol / 10, err_msg=k)


@pytest.mark.parametrize(
    ("optimizer", "nesterov", "all_decayed"),
    [("momentum", True, False), ("momentum", True, True), ("momentum", False, False)]
    + [("sgd", False, False), ("adam", False, False), ("adam", False, True)],
)
def test_update_equals_torch_rule(optimizer, nesterov, all_decayed):
    """Momentum (Nesterov or not) with L2 decay in the gradient before the momentum, plain
    sgd, and AdamW's decoupled decay, each with and without sparing 1-D parameters."""
    params, grads, lrs = random_problem()
    wd, mu = 0.1, 0.9
    cfg = mj.TrainConfig(
        optimizer=optimizer,
        momentum=mu,
        nesterov=nesterov,
        weight_decay=wd,
        decay_norm_and_bias=all_decayed,
    )
    decayed = set(params) if all_decayed else {"kernel"}
    if optimizer == "adam":
        want = torch_adamw(params, grads, lrs, wd, decayed)
    else:
        want = torch_sgd(params, grads, lrs, mu if optimizer == "momentum" else 0.0, wd,
                         nesterov, decayed)  # fmt: skip
    got, evaluated = run_optimizer(cfg, params, grads, lrs)
    # optax's Adam forms its bias correction 1 - 0.999^t in float32 (relative error ~1e-4)
    assert_iterates_close(got, want, tol=2e-4 if optimizer == "adam" else 2e-5)
    assert_iterates_close(evaluated, got)  # no EMA: evaluation uses the parameters
    # the test tells the rules apart: Nesterov moves the iterates away from heavy-ball's
    other = torch_sgd(params, grads, lrs, mu, wd, not nesterov, decayed)
    assert optimizer != "momentum" or not np.allclose(other[-1]["kernel"], want[-1]["kernel"])


def test_decay_spares_one_dimensional_parameters():
    """With zero gradients only the decay acts: kernels shrink by (1 - lr wd) per step,
    biases and norm scales stay exactly as they were (and all shrink when not spared)."""
    params, _, lrs = random_problem()
    zeros = [{k: np.zeros_like(v) for k, v in params.items()} for _ in lrs]
    wd = 0.5
    for spared in (True, False):
        cfg = mj.TrainConfig(optimizer="sgd", weight_decay=wd, decay_norm_and_bias=not spared)
        final = run_optimizer(cfg, params, zeros, lrs)[0][-1]
        shrink = np.prod(1 - lrs * wd)
        np.testing.assert_allclose(final["kernel"], params["kernel"] * shrink, rtol=1e-5)
        for k in ("bias", "scale"):
            want = params[k] if spared else params[k] * shrink
            np.testing.assert_allclose(final[k], want, rtol=1e-5)
            assert spared == np.array_equal(final[k], params[k])


def test_ema_equals_its_recurrence():
    """ema_0 = the initial parameters, ema_t = d ema_{t-1} + (1 - d) p_t; the optimizer's
    own iterates are unchanged by it."""
    params, grads, lrs = random_problem(steps=8, seed=1)
    d = 0.7
    cfg = mj.TrainConfig(optimizer="momentum", nesterov=True, ema_decay=d)
    got, evaluated = run_optimizer(cfg, params, grads, lrs)
    assert_iterates_close(got, torch_sgd(params, grads, lrs, 0.9, 0.0, True, set()))
    ema = {k: v.astype(np.float64) for k, v in params.items()}
    for p_t, e_t in zip(got, evaluated, strict=True):
        ema = {k: d * ema[k] + (1 - d) * p_t[k] for k in ema}
        for k in ema:
            np.testing.assert_allclose(e_t[k], ema[k], rtol=1e-5, atol=1e-6)
    assert not np.allclose(evaluated[-1]["kernel"], got[-1]["kernel"], atol=1e-2)


# ------------------------------------------------------------------------------ schedules

LR = 0.4
# (settings, {fraction of training: multiplier}) from each schedule's closed form
SCHEDULE_CASES = {
    "constant": ({"schedule": "constant"}, {0.0: 1.0, 0.45: 1.0, 1.0: 1.0}),
    "constant-warmup": (
        {"schedule": "constant", "warmup_epochs": 2.5},
        {0.0: 0.0, 0.1: 0.4, 0.25: 1.0, 0.9: 1.0},
    ),
    "cosine": ({"schedule": "cosine"}, {0.0: 1.0, 0.25: (1 + 0.5**0.5) / 2, 0.5: 0.5, 1: 0}),
    "cosine-warmup": (
        {"schedule": "cosine", "warmup_epochs": 2},
        {0.0: 0.0, 0.1: 0.5, 0.2: 1.0, 0.4: (1 + 0.5**0.5) / 2, 0.6: 0.5, 1.0: 0.0},
    ),
    "linear-warmup": (
        {"schedule": "linear", "warmup_epochs": 2},
        {0.0: 0.0, 0.15: 0.75, 0.2: 1.0, 0.6: 0.5, 0.8: 0.25, 1.0: 0.0},
    ),
    # torch OneCycleLR: 1/25 -> 1 (cosine) over pct_start = 0.3, then -> 1/25/1e4
    "one_cycle": (
        {"schedule": "one_cycle", "warmup_epochs": 3},
        {0.0: 0.04, 0.15: 0.52, 0.3: 1.0, 0.65: (1 + 4e-6) / 2, 1.0: 4e-6},
    ),
    # a triangle as in the fast CIFAR-10 trainers, constant past its last knot
    "piecewise_linear": (
        {"schedule": "piecewise_linear", "knot_epochs": [0, 2, 8], "knot_multipliers": [0.1, 1, 0]},
        {0.0: 0.1, 0.1: 0.55, 0.2: 1.0, 0.5: 0.5, 0.8: 0.0, 1.0: 0.0},
    ),
}


@pytest.mark.parametrize("case", list(SCHEDULE_CASES))
def test_schedule_closed_forms_over_each_replicas_own_steps(case):
    """At fraction f of a replica's training the rate is the closed form's, whatever the
    replica's step count (20 or 40 steps: subsets of different sizes); the recorded rates at
    the ends of epochs are the rates the trainer uses at those steps."""
    settings, points = SCHEDULE_CASES[case]
    cfg = mj.TrainConfig(epochs=10, learning_rate=LR, record_every=1, **settings)
    for total in (20, 40):
        steps = jnp.asarray([round(f * total) for f in points], jnp.int32)
        got = recipes.learning_rate(cfg, steps, jnp.full_like(steps, total))
        np.testing.assert_allclose(got, LR * np.array(list(points.values())), atol=1e-6)
    per_epoch = 4
    at_ends = recipes.learning_rate(cfg, jnp.arange(11) * per_epoch, 10 * per_epoch)
    np.testing.assert_allclose(cfg.recorded_learning_rates(), at_ends, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------ label smoothing


def test_label_smoothing_is_cross_entropy_against_smoothed_targets():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 5)) * 3
    labels = rng.integers(0, 5, 6)
    onehot = np.eye(5)[labels]
    for a in (0.0, 0.1, 0.5):
        q = (1 - a) * onehot + a / 5
        want = -(q * log_softmax(logits, axis=-1)).sum(-1)
        got = loss_from_logits(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), "xent", a)
        np.testing.assert_allclose(got, want, rtol=1e-5)


# ------------------------------------------------------------------------------ in the trainer


@pytest.fixture(scope="module")
def masks(tiny) -> np.ndarray:
    m = mj.subsets.sample(tiny.n_train, R, 0.5, seed=1)
    m[-1] = True
    return m


def train(tiny, masks, ids, group_size: int, vectorize: str) -> mj.ReplicaOutputs:
    cfg = mj.TrainConfig(**{**RECIPES.to_dict(), "group_size": group_size, "vectorize": vectorize})
    ids = np.asarray(ids)
    return mj.train_replicas(
        SPEC, tiny, masks[ids], cfg, seed=SEED, replica_ids=ids, devices=jax.devices()[:1]
    )


@pytest.fixture(scope="module")
def recipes_run(tiny, masks) -> mj.ReplicaOutputs:
    """Both replicas vmapped in one group (each unrolled chain costs a compilation)."""
    return train(tiny, masks, IDS, 2, "vmap")


def hand_loops(ds, masks: np.ndarray, ids, cfg: mj.TrainConfig) -> list[list]:
    """Each replica of ``ids`` by a plain loop: its data order from its key as the trainer
    documents it, the smoothed loss's gradient, torch's Nesterov+L2 rule in numpy (kernels
    decayed), the warmup + cosine rate over its own steps, and the EMA recurrence. Per
    replica, per epoch: the unsmoothed losses of every training example under the EMA
    parameters and under the raw parameters."""
    init, apply = mj.models.build(SPEC, ds.input_shape, ds.num_classes)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    a, k = cfg.label_smoothing, ds.num_classes
    mu, wd, d = cfg.momentum, cfg.weight_decay, cfg.ema_decay
    b, epochs = cfg.batch_size, cfg.epochs
    w = cfg.warmup_epochs / epochs

    @jax.jit
    def grad(p, idx):
        """Gradient of the mean smoothed loss over the batch ``idx`` (-1: padding)."""

        def loss(p):
            q = (1 - a) * jax.nn.one_hot(y[idx], k) + a / k
            per_example = -jnp.sum(q * jax.nn.log_softmax(apply(p, x[idx])), -1)
            return jnp.sum(jnp.where(idx >= 0, per_example, 0.0)) / jnp.sum(idx >= 0)

        return jax.tree.leaves(jax.grad(loss)(p))

    @jax.jit
    def xent(p):
        return -jax.nn.log_softmax(apply(p, x))[jnp.arange(len(y)), y]

    def one(mask, r):
        init_key, data_key = jax.random.split(replica_keys(SEED, np.array([r]))[0])
        leaves, tree = jax.tree.flatten(init(init_key))

        def as_params(values):
            return jax.tree.unflatten(tree, [jnp.asarray(v, jnp.float32) for v in values])

        size = int(mask.sum())
        total = epochs * -(-size // b)
        p = [np.asarray(v, np.float64) for v in leaves]
        buf = [np.zeros_like(v) for v in p]
        ema = [v.copy() for v in p]
        out, s = [], 0
        for key in jax.random.split(data_key, epochs):
            u = np.asarray(jax.random.uniform(key, (ds.n_train,)))
            order = np.argsort(np.where(mask, u, 2.0))[:size]
            for start in range(0, size, b):
                idx = np.pad(order[start : start + b], (0, b), constant_values=-1)[:b]
                f = s / total
                lr = f / w if f < w else 0.5 * (1 + np.cos(np.pi * (f - w) / (1 - w)))
                lr *= cfg.learning_rate
                for i, gi in enumerate(grad(as_params(p), idx)):
                    gi = np.asarray(gi, np.float64) + (wd * p[i] if p[i].ndim > 1 else 0.0)
                    buf[i] = mu * buf[i] + gi
                    p[i] = p[i] - lr * (gi + mu * buf[i])
                    ema[i] = d * ema[i] + (1 - d) * p[i]
                s += 1
            out.append((np.asarray(xent(as_params(ema))), np.asarray(xent(as_params(p)))))
        return out

    return [one(masks[r], r) for r in ids]


def test_every_recipe_at_once_equals_a_hand_written_loop(tiny, masks, recipes_run):
    """Final (and recorded) metrics are unsmoothed losses of the EMA parameters of the loop
    above; the half-data replica's schedule runs over its own 16 steps, not the full-data
    replica's 28. The raw parameters' losses differ, so the EMA is what is evaluated."""
    out = recipes_run
    for row, per_epoch in enumerate(hand_loops(tiny, masks, IDS, RECIPES)):
        ema_loss, raw_loss = per_epoch[-1]
        np.testing.assert_allclose(out.train_loss[row], ema_loss, rtol=2e-4, atol=2e-5)
        np.testing.assert_allclose(out.traj_loss[row, 1], per_epoch[1][0], rtol=2e-4, atol=2e-5)
        assert np.abs(raw_loss - ema_loss).max() > 1e-2
    # epochs 0, 2, 4 of 4 with a warmup of 1.5 epochs: f = 0 (warmup), p = 0.2, p = 1
    want_lr = RECIPES.learning_rate * np.array([0.0, 0.5 * (1 + np.cos(np.pi * 0.2)), 0.0])
    np.testing.assert_allclose(out.record_lr, want_lr, rtol=1e-5, atol=1e-7)


def test_grouping_and_strategy_invariance_with_recipes(tiny, masks, recipes_run):
    """With EMA, Nesterov, smoothing and a warmup schedule, a replica's result still depends
    on (seed, r, its mask) only: alone and unrolled it equals its run vmapped in a group of
    two (to float32 roundoff: the batch width may change XLA's reduction order)."""
    alone = train(tiny, masks, [R - 1], 1, "unroll")
    for name in ("train_loss", "test_margin", "traj_margin", "forgetting_events"):
        got, want = getattr(alone, name), getattr(recipes_run, name)[1:]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


# ------------------------------------------------------------------------------ config


def test_config_round_trip_and_result_dict():
    """to_dict -> JSON -> from_dict gives the same (hashable) config; result_dict holds the
    recipe settings only where they differ from their defaults, so a study stored before
    they existed keeps matching its config."""
    cfg = mj.TrainConfig(
        schedule="piecewise_linear", knot_epochs=[0, 5, 24], knot_multipliers=[0, 0.4, 0],
        epochs=24, optimizer="momentum", nesterov=True, label_smoothing=0.1,
    )  # fmt: skip
    again = mj.TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and hash(again) == hash(cfg)
    assert cfg.knot_epochs == (0.0, 5.0, 24.0)
    d = cfg.result_dict()
    assert d["knot_epochs"] == [0.0, 5.0, 24.0] and d["nesterov"] is True
    assert "ema_decay" not in d and "warmup_epochs" not in d and "group_size" not in d
    before = {
        "epochs", "batch_size", "optimizer", "learning_rate", "momentum", "schedule",
        "weight_decay", "loss", "drop_last", "linearize", "record_every", "record_grad_norm",
    }  # fmt: skip
    assert set(mj.TrainConfig().result_dict()) == before


def test_study_config_files_take_the_recipe_settings(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(
        "dataset: digits\nmodel: {type: MLP, widths: [32]}\nsubsets: {replicas: 4}\n"
        "train: {epochs: 10, optimizer: momentum, nesterov: true, schedule: one_cycle,\n"
        "        warmup_epochs: 3, weight_decay: 5e-4, decay_norm_and_bias: false,\n"
        "        label_smoothing: 0.1, ema_decay: 0.99}\n"
    )
    t = load_config(str(path)).train
    assert (t.nesterov, t.schedule, t.warmup_epochs, t.ema_decay) == (True, "one_cycle", 3.0, 0.99)
    sets = ("train.schedule=piecewise_linear", "train.warmup_epochs=0",
            "train.knot_epochs=[0, 2, 10]", "train.knot_multipliers=[0, 1, 0]")  # fmt: skip
    assert load_config(str(path), sets=sets).train.knot_multipliers == (0.0, 1.0, 0.0)
    with pytest.raises(schema.ConfigError, match=r"setting train\.warmup_epochs: got 0"):
        load_config(str(path), sets=("train.warmup_epochs=0",))


@pytest.mark.parametrize(
    ("settings", "setting", "allowed"),
    [
        ({"label_smoothing": 1.0}, "label_smoothing", "< 1"),
        ({"label_smoothing": 0.1, "loss": "mse"}, "label_smoothing", "unless loss is 'xent'"),
        ({"nesterov": True}, "nesterov", "unless optimizer is 'momentum'"),
        ({"nesterov": "yes", "optimizer": "momentum"}, "nesterov", "true or false"),
        ({"decay_norm_and_bias": 0}, "decay_norm_and_bias", "true or false"),
        ({"schedule": "step"}, "schedule", "one of"),
        ({"warmup_epochs": 30}, "warmup_epochs", "< 30"),
        ({"warmup_epochs": -1}, "warmup_epochs", ">= 0"),
        ({"schedule": "one_cycle"}, "warmup_epochs", "> 0 for schedule one_cycle"),
        (
            {
                "schedule": "piecewise_linear",
                "knot_epochs": [0, 5],
                "knot_multipliers": [0, 1],
                "warmup_epochs": 1,
            },
            "warmup_epochs",
            "use its knots",
        ),  # fmt: skip
        ({"schedule": "piecewise_linear"}, "knot_epochs", "at least 2 increasing"),
        (
            {
                "schedule": "piecewise_linear",
                "knot_epochs": [0, 5, 5],
                "knot_multipliers": [0, 1, 0],
            },
            "knot_epochs",
            "at least 2 increasing",
        ),  # fmt: skip
        (
            {"schedule": "piecewise_linear", "knot_epochs": [0, 5], "knot_multipliers": [1]},
            "knot_multipliers",
            "2 numbers >= 0",
        ),  # fmt: skip
        (
            {"schedule": "piecewise_linear", "knot_epochs": [0, 5], "knot_multipliers": [1, -1]},
            "knot_multipliers[1]",
            ">= 0",
        ),  # fmt: skip
        (
            {"schedule": "piecewise_linear", "knot_epochs": [0, 5], "knot_multipliers": [0, 0]},
            "knot_multipliers",
            "not all 0",
        ),  # fmt: skip
        (
            {"schedule": "piecewise_linear", "knot_epochs": "0,5", "knot_multipliers": [0, 1]},
            "knot_epochs",
            "a list of numbers",
        ),  # fmt: skip
        ({"knot_epochs": [0, 5]}, "knot_epochs", "empty unless schedule is 'piecewise_linear'"),
        ({"ema_decay": 1.0}, "ema_decay", "< 1"),
        ({"ema_decay": "0.9"}, "ema_decay", "a finite number"),
    ],
)
def test_recipe_settings_are_checked_naming_the_setting(settings, setting, allowed):
    with pytest.raises(schema.ConfigError) as info:
        mj.TrainConfig.from_dict({"epochs": 30, **settings})
    assert info.value.setting == f"train.{setting}"
    assert allowed in info.value.allowed
