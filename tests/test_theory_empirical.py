"""Empirical NTK: equals a brute-force flattened-Jacobian product; approaches the analytic NTK."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from memjax import theory
from memjax.models import CNN1D, MLP, build
from memjax.theory.empirical import choose_method, forward_flops


def brute_force(apply_fn, params, x1, x2):
    """Theta[i, j, c, d] = J1[i, c] . J2[j, d] over the flattened parameter vector."""
    flat, unravel = ravel_pytree(params)
    jacobian = jax.jit(jax.jacobian(lambda f, x: apply_fn(unravel(f), x)))

    def jac(x):
        return np.asarray(jacobian(flat, x)).reshape(len(x), -1, flat.size)

    return np.einsum("icp,jdp->ijcd", jac(x1), jac(x2))


@pytest.mark.slow
def test_flax_mlp_equals_brute_force_for_both_methods_and_blocks():
    init, apply = build(MLP(widths=(12, 9), activation="gelu", b_std=0.2), (5,), 3)
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((7, 5)), rng.standard_normal((4, 5))
    with jax.enable_x64(True):
        params = init(jax.random.PRNGKey(1))
        ref = brute_force(apply, params, x1, x2)
        ref_sym = brute_force(apply, params, x1, x1)

        def check(actual, expected):
            np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)

        check(theory.empirical_ntk(apply, params, x1, x2, method="jacobian", tile_size=3), ref)
        check(theory.empirical_ntk(apply, params, x1, method="ntvp"), ref_sym)
        trace = np.einsum("ijcc->ij", ref)
        check(theory.empirical_ntk(apply, params, x1, x2, trace=True, method="jacobian"), trace)
        trace_sym = np.einsum("ijcc->ij", ref_sym)
        check(
            theory.empirical_ntk(apply, params, x1, trace=True, method="ntvp", tile_size=3),
            trace_sym,
        )


def test_any_pytree_and_scalar_output():
    """A hand-written model: nested dict params, 1-D output (treated as C = 1)."""

    def apply(p, x):
        h = jnp.tanh(x @ p["layer"]["w"] + p["layer"]["b"])
        return h @ p["out"][0] * p["out"][1]

    rng = np.random.default_rng(3)
    params = {
        "layer": {"w": rng.standard_normal((4, 6)), "b": rng.standard_normal(6)},
        "out": (rng.standard_normal(6), np.array(0.7)),
    }
    x1, x2 = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    with jax.enable_x64(True):
        theta = theory.empirical_ntk(apply, params, x1, x2)
        ref = brute_force(lambda p, x: apply(p, x)[:, None], params, x1, x2)
    np.testing.assert_allclose(theta, ref, rtol=1e-10)


def test_weight_shared_cnn_equals_brute_force_and_auto_picks_jacobian():
    spec = CNN1D(channels=(4, 4), kernel_size=3)
    init, apply = build(spec, (10,), 2)
    x = np.random.default_rng(4).standard_normal((5, 10))
    with jax.enable_x64(True):
        params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), init(jax.random.PRNGKey(0)))
        n_params = sum(p.size for p in jax.tree.leaves(params))
        flops = forward_flops(apply, params, jnp.asarray(x))
        assert flops > 5 * n_params  # a conv reuses each weight at every position
        assert choose_method(n_params, 2, flops, trace=False) == "jacobian"
        np.testing.assert_allclose(
            theory.empirical_ntk(apply, params, x, tile_size=2),
            brute_force(apply, params, x, x),
            rtol=1e-10,
            atol=1e-12,
        )


def test_method_choice_follows_flop_counts():
    # dense layers: forward ~ 2 P FLOPs, so C x C needs ntvp and the trace Jacobians
    assert choose_method(10_000, 10, 20_000, trace=False) == "ntvp"
    assert choose_method(10_000, 10, 20_000, trace=True) == "jacobian"
    # weight sharing: forward FLOPs far above the parameter count
    assert choose_method(10_000, 10, 2_000_000, trace=False) == "jacobian"


def test_bad_arguments():
    init, apply = build(MLP(widths=(4,)), (3,), 2)
    params = init(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="unknown method"):
        theory.empirical_ntk(apply, params, np.ones((2, 3)), method="fast")
    with pytest.raises(ValueError, match="equal trailing shapes"):
        theory.empirical_ntk(apply, params, np.ones((2, 3)), np.ones((2, 4)))


def _relative_errors(spec: MLP, x: np.ndarray, seeds: int) -> tuple[float, float]:
    """Mean over inits of ||Theta_emp - Theta|| / ||Theta||, and the error of their mean."""
    init, apply = build(spec, x.shape[1:], 1)
    _, ntk = theory.kernel(spec)(x)
    init = jax.jit(init)
    thetas = [
        theory.empirical_ntk(apply, init(jax.random.PRNGKey(s)), x, trace=True)
        for s in range(seeds)
    ]
    errs = [np.linalg.norm(t - ntk) / np.linalg.norm(ntk) for t in thetas]
    return float(np.mean(errs)), float(
        np.linalg.norm(np.mean(thetas, 0) - ntk) / np.linalg.norm(ntk)
    )


@pytest.mark.slow
def test_empirical_ntk_converges_like_inverse_sqrt_width():
    x = np.random.default_rng(5).standard_normal((6, 8)).astype(np.float32)
    widths = np.array([64, 128, 256, 512, 1024, 2048])
    results = [
        _relative_errors(MLP(widths=(int(w), int(w)), activation="relu", b_std=0.1), x, 6)
        for w in widths
    ]
    errs = np.array([r[0] for r in results])
    slope = np.polyfit(np.log(widths), np.log(errs), 1)[0]
    assert -0.7 < slope < -0.3, (slope, errs)
    assert errs[-1] < 0.1
    # averaging over initializations removes the fluctuation: the mean is closer still
    assert results[-1][1] < errs[-1]


@pytest.mark.slow
@pytest.mark.parametrize("b_std", [None, 0.0])
def test_standard_parameterization_ntk_matches_wide_networks(b_std):
    """Pins the width-dependent standard-parameterization NTK (incl. the bias term) without
    neural-tangents: with b_std=0.0 a bias exists (zero init) and contributes its gradient."""
    x = np.random.default_rng(6).standard_normal((5, 8)).astype(np.float32)
    spec = MLP(widths=(1024,), activation="erf", parameterization="standard", b_std=b_std)
    _, err_of_mean = _relative_errors(spec, x, 4)
    assert err_of_mean < 0.03
