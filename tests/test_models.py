"""memjax.models: neural-tangents parameterization conventions, specs, shapes and FLOP counts.

The theory package computes the infinite-width kernel of a spec assuming neural-tangents'
``stax.Dense`` conventions, so the finite network must follow them exactly; these tests check
the conventions from the outside (initial distributions and a hand-written numpy forward pass).
"""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from memjax.models import (
    ACTIVATIONS,
    CNN1D,
    CNN2D,
    MLP,
    build,
    spec_from_dict,
    spec_to_dict,
)

NUMPY_ACTIVATIONS = {
    "relu": lambda x, s: np.maximum(x, 0.0),
    "erf": lambda x, s: special.erf(x),
    "gelu": lambda x, s: 0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0))),  # exact, not tanh
    "leaky_relu": lambda x, s: np.where(x > 0, x, s * x),
}


def _layers(params) -> list[dict]:
    """Dense layers in order of application (flax names them <Module>_<index>)."""
    names = sorted(params, key=lambda k: int(k.rsplit("_", 1)[1]))
    return [params[k] for k in names]


def numpy_mlp(spec: MLP, params, x: np.ndarray) -> np.ndarray:
    """The neural-tangents forward pass, written independently of flax."""
    act = NUMPY_ACTIVATIONS[spec.activation]
    h = x.reshape(len(x), -1).astype(np.float64)
    layers = _layers(params)
    for i, layer in enumerate(layers):
        w = np.asarray(layer["kernel"], np.float64)
        if spec.parameterization == "ntk":
            h_next = spec.W_std / math.sqrt(w.shape[0]) * h @ w
            if spec.b_std is not None:
                h_next = h_next + spec.b_std * np.asarray(layer["bias"], np.float64)
        else:
            h_next = h @ w
            if spec.b_std is not None:
                h_next = h_next + np.asarray(layer["bias"], np.float64)
        h = act(h_next, spec.negative_slope) if i < len(layers) - 1 else h_next
    return h


def _random_like(params, seed: int):
    """Replace every parameter by arbitrary values (so the test does not rely on the init)."""
    leaves, tree = jax.tree.flatten(params)
    rng = np.random.default_rng(seed)
    return jax.tree.unflatten(
        tree, [jnp.asarray(rng.standard_normal(leaf.shape), jnp.float32) for leaf in leaves]
    )


@pytest.mark.parametrize("parameterization", ["ntk", "standard"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("b_std", [0.3, None])
def test_mlp_forward_matches_neural_tangents_convention(parameterization, activation, b_std):
    spec = MLP(
        widths=(7, 5),
        activation=activation,
        parameterization=parameterization,
        W_std=1.7,
        b_std=b_std,
        negative_slope=0.2,
    )
    init, apply = build(spec, (2, 3), 4)  # non-flat inputs are flattened
    params = _random_like(init(jax.random.PRNGKey(0)), seed=1)
    x = np.random.default_rng(2).standard_normal((9, 2, 3)).astype(np.float32)
    got = np.asarray(apply(params, jnp.asarray(x)))
    assert got.shape == (9, 4)
    np.testing.assert_allclose(got, numpy_mlp(spec, params, x), rtol=2e-5, atol=2e-5)
    has_bias = {"bias" in layer for layer in _layers(params)}
    assert has_bias == {b_std is not None}
    assert len(_layers(params)) == 3


def _check_normal(samples: np.ndarray, std: float) -> None:
    """Mean 0 and the given std, and normally (not e.g. truncated-normally) distributed."""
    samples = np.asarray(samples, np.float64).ravel()
    assert stats.kstest(samples / std, "norm").pvalue > 1e-3, (samples.std(), std)


@pytest.mark.parametrize("b_std", [0.05, 2.0])
def test_initial_distributions(b_std):
    """ntk: every parameter N(0, 1). standard: W ~ N(0, W_std^2/fan_in), b ~ N(0, b_std^2)."""
    w_std, fan_in, width = 1.3, 48, 640
    key = jax.random.PRNGKey(3)
    ntk = build(MLP((width, width), W_std=w_std, b_std=b_std), (fan_in,), 10)[0](key)
    std = build(MLP((width, width), "relu", "standard", w_std, b_std), (fan_in,), 10)[0](key)
    for layer_ntk, layer_std, fan in zip(
        _layers(ntk), _layers(std), (fan_in, width, width), strict=True
    ):
        _check_normal(layer_ntk["kernel"], 1.0)
        _check_normal(layer_ntk["bias"], 1.0)
        _check_normal(layer_std["kernel"], w_std / math.sqrt(fan))
        _check_normal(layer_std["bias"], b_std)
    # the init is a function of the key: same key, same draw; another key, another draw
    again = build(MLP((width, width), W_std=w_std, b_std=b_std), (fan_in,), 10)[0](key)
    jax.tree.map(np.testing.assert_array_equal, again, ntk)
    other = build(MLP((width, width), W_std=w_std, b_std=b_std), (fan_in,), 10)[0](
        jax.random.PRNGKey(4)
    )
    assert not np.allclose(_layers(other)[0]["kernel"], _layers(ntk)[0]["kernel"])


@pytest.mark.parametrize(
    "spec",
    [
        MLP(),
        MLP((3, 4, 5), "erf", "standard", W_std=0.9, b_std=None, negative_slope=0.3),
        CNN1D(channels=(8, 16), kernel_size=7),
        CNN2D(channels=(4,), kernel_size=5, hidden=12, image_shape=(32, 32, 3)),
    ],
    ids=["mlp-default", "mlp-custom", "cnn1d", "cnn2d"],
)
def test_spec_dict_roundtrip(spec):
    d = spec_to_dict(spec)
    assert d["type"] == type(spec).__name__
    assert spec_from_dict(d) == spec
    assert spec_from_dict(json.loads(json.dumps(d))) == spec  # configs are stored as text
    assert hash(spec_from_dict(d)) == hash(spec)  # compiled programs are cached on specs


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"type": "Transformer"}, r"model\.type: got 'Transformer'; allowed: one of"),
        ({"type": "MLP", "depth": 3}, r"unknown setting model\.depth"),
        ({"type": "MLP", "activation": "tanh"}, r"model\.activation: got 'tanh'"),
        ({"type": "MLP", "parameterization": "mup"}, r"model\.parameterization: got 'mup'"),
        ({"type": "MLP", "widths": []}, r"model\.widths: got \[\]; allowed: a non-empty list"),
        ({"type": "MLP", "W_std": 0.0}, r"model\.W_std: got 0\.0; allowed: a finite number > 0"),
        ({"type": "MLP", "b_std": -1.0}, r"model\.b_std: got -1\.0; allowed: a finite number >= 0"),
    ],
)
def test_spec_errors(d, message):
    with pytest.raises(ValueError, match=message):
        spec_from_dict(d)


@pytest.mark.parametrize(
    ("spec", "input_shape", "batch_shape"),
    [
        (CNN1D(), (40,), (5, 40)),
        (CNN1D(channels=(4,), kernel_size=3), (40, 2), (5, 40, 2)),
        (CNN2D(), (64,), (5, 64)),
        (CNN2D(), (8, 8, 1), (5, 8, 8, 1)),
        (CNN2D(channels=(4, 8), hidden=16, image_shape=(32, 32, 3)), (32, 32, 3), (5, 32, 32, 3)),
    ],
)
def test_cnn_output_shapes(spec, input_shape, batch_shape):
    """Shapes by abstract evaluation: compiling convolutions costs seconds on a busy CPU."""
    init, apply = build(spec, input_shape, 7)
    params = jax.eval_shape(init, jax.random.PRNGKey(0))
    out = jax.eval_shape(apply, params, jax.ShapeDtypeStruct(batch_shape, jnp.float32))
    assert out.shape == (5, 7) and out.dtype == jnp.float32


def test_matmul_flops():
    # 2 * (40*256 + 256*256 + 256*10) multiply-adds: the benchmark's reference workload
    assert MLP((256, 256)).matmul_flops((40,), 10) == 156672
    # counted with every kernel tap (padding included): 2 * L * k * c_in * c_out per conv
    assert CNN1D((32, 32, 32), 5).matmul_flops((40,), 10) == 2 * 40 * 5 * (32 + 32 * 32 * 2) + (
        2 * 40 * 32 * 10
    )
    # 8x8x1 -conv3x3-> 8x8x32 -pool-> 4x4 -conv-> 4x4x64 -pool-> 2x2x64 -dense 128-> 10
    assert CNN2D().matmul_flops((64,), 10) == 2 * (
        64 * 9 * 32 + 16 * 9 * 32 * 64 + 4 * 64 * 128 + 128 * 10
    )


@pytest.mark.parametrize(
    "shape, kernel", [((3, 40, 1), (5,)), ((2, 8, 9, 3), (3, 3)), ((2, 6, 5, 2), (3, 2))]
)
def test_patch_conv_is_flax_conv_same(shape, kernel):
    """The matmul convolution has nn.Conv's parameters (same init from the same key) and
    computes its output and gradients, odd and even kernels alike."""
    from flax import linen as nn

    from memjax.models import Conv

    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    ref, ours = nn.Conv(4, kernel, padding="SAME"), Conv(4, kernel)
    params = ref.init(jax.random.PRNGKey(1), x)
    assert jax.tree.all(jax.tree.map(np.array_equal, params, ours.init(jax.random.PRNGKey(1), x)))
    params = jax.tree.map(lambda p: p + 0.1, params)  # a nonzero bias too
    np.testing.assert_allclose(ours.apply(params, x), ref.apply(params, x), atol=1e-5)

    def grads(module):
        return jax.grad(lambda p: jnp.sum(jnp.sin(module.apply(p, x))))(params)

    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), grads(ours), grads(ref))
