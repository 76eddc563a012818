"""memjax.models' residual nets and build_network: architectures (parameter counts, FLOPs counted
from the traced program), the two convolution paths, per-replica BatchNorm statistics."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import memjax as mj
from memjax.models import ResNet9, ResNet18, WideResNet, build, build_network, spec_from_dict

SMALL = [ResNet9((4, 8, 8, 16)), ResNet18(4), WideResNet(10, 1), ResNet18(4, "group")]


def _n_params(spec, shape=(32, 32, 3)) -> int:
    params, _ = jax.eval_shape(build_network(spec, shape, 10).init, jax.random.PRNGKey(0))
    return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


def test_parameter_counts_match_the_published_architectures():
    # torchvision-style CIFAR ResNet-18 (kuangliu/pytorch-cifar): 11,173,962 parameters;
    # WRN-16-4 for CIFAR-10: 2.75M (Zagoruyko & Komodakis, table 1)
    assert _n_params(ResNet18(64)) == 11_173_962
    assert round(_n_params(WideResNet(16, 4)) / 1e6, 2) == 2.75
    c1, c2, c3, c4 = 16, 32, 64, 128  # the image benchmark's ResNet-9: convs, BN, readout
    convs = 9 * (3 * c1 + c1 * c2 + 2 * c2 * c2 + c2 * c3 + c3 * c4 + 2 * c4 * c4)
    assert _n_params(ResNet9((c1, c2, c3, c4))) == convs + 2 * (c1 + 3 * c2 + c3 + 3 * c4) + (
        c4 * 10 + 10
    )


def _traced_flops(spec, shape, classes) -> int:
    """2 x multiply-adds of every convolution and dot in the native-conv program's jaxpr."""
    net = build_network(spec, shape, classes, conv="native")
    params, state = net.init(jax.random.PRNGKey(0))
    jaxpr = jax.make_jaxpr(lambda p, x: net.apply(p, state, x)[0])(params, jnp.zeros((1, *shape)))
    total = 0

    def walk(jx):
        nonlocal total
        for eqn in jx.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                kernel = eqn.invars[1].aval.shape  # HWIO
                total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(kernel[:-1])
            elif eqn.primitive.name == "dot_general":
                (contract, _), _ = eqn.params["dimension_numbers"]
                k = math.prod(eqn.invars[0].aval.shape[d] for d in contract)
                total += 2 * math.prod(eqn.outvars[0].aval.shape) * k
            for v in eqn.params.values():
                if hasattr(v, "jaxpr"):
                    walk(v.jaxpr)

    walk(jaxpr.jaxpr)
    return total


@pytest.mark.parametrize(
    "spec, shape",
    [(ResNet9((16, 32, 64, 128)), (32, 32, 3)), (ResNet18(16), (32, 32, 3)),
     (WideResNet(16, 2), (32, 32, 3)), (ResNet18(8), (20, 18, 1))],
)  # fmt: skip
def test_matmul_flops_equal_the_traced_convolutions_and_dots(spec, shape):
    assert spec.matmul_flops(shape, 10) == _traced_flops(spec, shape, 10)


def test_resnet9_flops_are_the_benchmark_peers_formula():
    c1, c2, c3, c4 = 16, 32, 64, 128
    k = 9
    f = 2 * 32 * 32 * k * 3 * c1 + 2 * 32 * 32 * k * c1 * c2 + 2 * (2 * 16 * 16 * k * c2 * c2)
    f += 2 * 16 * 16 * k * c2 * c3 + 2 * 8 * 8 * k * c3 * c4 + 2 * (2 * 4 * 4 * k * c4 * c4)
    assert ResNet9((c1, c2, c3, c4)).matmul_flops((32, 32, 3), 10) == f + 2 * c4 * 10


@pytest.mark.parametrize("spec", [SMALL[0], *SMALL[2:]], ids=lambda s: repr(s))
@pytest.mark.slow
def test_native_and_patch_convolutions_compute_the_same_network(spec):
    """Same parameters, same logits, same gradients and BatchNorm updates on CPU, in float64
    so that a real difference is not hidden by float32 rounding through 8-17 layers."""
    nets = [build_network(spec, (12, 10, 3), 7, conv=c) for c in ("patches", "native")]
    params, state = jax.jit(nets[0].init)(jax.random.PRNGKey(0))
    p_native, _ = jax.jit(nets[1].init)(jax.random.PRNGKey(0))
    assert jax.tree.all(jax.tree.map(np.array_equal, params, p_native))
    with jax.enable_x64(True):
        _same_in_float64(nets, params, state)


def _same_in_float64(nets, params, state):
    params, state = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (params, state))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 12, 10, 3), jnp.float64)
    valid = jnp.array([1.0, 1, 0, 1, 1])

    @jax.jit
    def run(p):
        def loss(net, p):
            logits, new = net.apply(p, state, x, True, valid)
            return jnp.sum(jnp.sin(logits)), (logits, new)

        return [jax.value_and_grad(partial(loss, n), has_aux=True)(p) for n in nets]

    ((_, (la, sa)), ga), ((_, (lb, sb)), gb) = run(params)

    def close(a, b):  # float64 sums in another order: relative to the array's scale
        assert a.dtype == b.dtype == jnp.float64
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-9 * max(1.0, float(np.abs(b).max())))

    close(la, lb)
    jax.tree.map(close, ga, gb)
    jax.tree.map(close, sa, sb)


@pytest.mark.slow
def test_batchnorm_uses_only_valid_rows_and_only_its_own_replica():
    """The first BatchNorm's running averages after one training pass equal numpy's
    statistics of the stem convolution over the valid rows (momentum 0.9); the valid rows'
    logits do not see the padding rows; vmapped replicas equal replicas run one by one.
    In float64, so that float32 rounding cannot hide a leak of a few parts in 1e5."""
    spec = ResNet9((4, 8, 8, 8))
    net = build_network(spec, (8, 8, 2), 3, conv="patches")
    params, state = jax.jit(jax.vmap(net.init))(jax.random.split(jax.random.PRNGKey(0), 3))
    with jax.enable_x64(True):
        params, state = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), (params, state))
        x = jax.random.normal(jax.random.PRNGKey(2), (3, 6, 8, 8, 2), jnp.float64)  # 3 batches
        _check_batch_statistics(net, params, state, x)


def _check_batch_statistics(net, params, state, x):
    apply = jax.jit(net.apply, static_argnums=3)
    valid = jnp.array([1.0, 1, 1, 1, 0, 0])
    one = jax.tree.map(lambda a: a[0], (params, state))
    logits, new = apply(*one, x[0], True, valid)

    stem = nn.Conv(4, (3, 3), padding="SAME", use_bias=False)
    kernel = one[0]["Conv_0"]["kernel"]
    h = np.asarray(stem.apply({"params": {"kernel": kernel}}, x[0][:4]), np.float64)
    bn = new["_Norm_0"]["BatchNorm_0"]
    np.testing.assert_allclose(bn["mean"], 0.1 * h.mean(axis=(0, 1, 2)), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bn["var"], 0.9 + 0.1 * h.var(axis=(0, 1, 2)), rtol=1e-9)

    alone, new_alone = apply(*one, x[0][:4], True, None)
    np.testing.assert_allclose(logits[:4], alone, rtol=1e-9, atol=1e-12)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9), new, new_alone)

    batched = jax.jit(jax.vmap(lambda p, s, xb: net.apply(p, s, xb, True, valid)))(params, state, x)
    for r in range(3):
        single = apply(*jax.tree.map(lambda a, r=r: a[r], (params, state)), x[r], True, valid)
        np.testing.assert_allclose(batched[0][r], single[0], rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_evaluation_uses_running_averages():
    net = build_network(ResNet18(2), (8, 8, 1), 3, conv="patches")
    apply = jax.jit(net.apply, static_argnums=3)
    params, state = jax.jit(net.init)(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
    _, moved = apply(params, state, 3.0 + x, True)
    before, kept = apply(params, state, x, False)
    after, _ = apply(params, moved, x, False)
    jax.tree.map(np.testing.assert_array_equal, kept, state)
    assert np.abs(np.asarray(before - after)).max() > 1e-3
    # evaluation is per example: a row's logits do not depend on the rest of the batch
    np.testing.assert_allclose(
        apply(params, moved, x[:1], False)[0], after[:1], rtol=1e-5, atol=1e-6
    )


@pytest.mark.slow
def test_specs_round_trip_and_refuse_bad_settings(tiny):
    for spec in [*SMALL, WideResNet(16, 4, "none")]:
        assert spec_from_dict(mj.models.spec_to_dict(spec)) == spec
    with pytest.raises(mj.schema.ConfigError, match="model.norm"):
        spec_from_dict({"type": "ResNet18", "norm": "layer"})
    with pytest.raises(ValueError, match="6n \\+ 4"):
        WideResNet(depth=18)
    with pytest.raises(ValueError, match="4 positive ints"):
        ResNet9((8, 8, 8))
    with pytest.raises(ValueError, match="build_network"):
        build(ResNet9((4, 4, 4, 4)), (8, 8, 1), 2)
    init, apply = build(ResNet9((4, 4, 4, 4), "group"), (8, 8, 1), 2)  # stateless: pure
    assert apply(init(jax.random.PRNGKey(0)), jnp.zeros((3, 8, 8, 1))).shape == (3, 2)
    with pytest.raises(ValueError, match="channels-last images"):
        mj.train_replicas(ResNet18(2), tiny, np.ones((1, tiny.n_train), bool), mj.TrainConfig())
    images = mj.data.from_arrays(
        np.zeros((4, 8, 8, 1)), [0, 1, 0, 1], np.zeros((2, 8, 8, 1)), [0, 1]
    )
    with pytest.raises(ValueError, match="linearize"):
        mj.train_replicas(
            ResNet18(2), images, np.ones((1, 4), bool), mj.TrainConfig(linearize=True)
        )
