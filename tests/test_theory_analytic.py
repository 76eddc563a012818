"""Closed-form NNGP/NTK against numerical integration and wide random networks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy import integrate, special

from memjax import theory
from memjax.models import MLP, build
from memjax.theory import analytic
from memjax.theory.analytic import activation_dual

SLOPE = 0.2

# activation and its derivative, in numpy, written independently of memjax
PHI = {
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(float)),
    "leaky_relu": (
        lambda x: np.where(x > 0, x, SLOPE * x),
        lambda x: np.where(x > 0, 1.0, SLOPE),
    ),
    "erf": (special.erf, lambda x: 2 / math.sqrt(math.pi) * np.exp(-(x**2))),
    "gelu": (
        lambda x: x * special.ndtr(x),
        lambda x: special.ndtr(x) + x * np.exp(-(x**2) / 2) / math.sqrt(2 * math.pi),
    ),
}

COVARIANCES = [
    (q1, rho * math.sqrt(q1 * q2), q2)
    for q1, q2 in ((0.3, 1.7), (1.0, 1.0), (2.5, 0.6))
    for rho in (-0.95, -0.3, 0.0, 0.4, 0.999)
]


def gauss_hermite_2d(g, cov, points: int = 120) -> float:
    """E[g(u, v)] for smooth g by a tensor Gauss-Hermite rule on (u, v) = L z."""
    z, w = hermegauss(points)
    w = w / math.sqrt(2 * math.pi)
    L = np.linalg.cholesky(cov)
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    u = L[0, 0] * z1
    v = L[1, 0] * z1 + L[1, 1] * z2
    return float(np.sum(np.outer(w, w) * g(u, v)))


def polar(g, cov, degree: int) -> float:
    """E[g(u, v)] for g positively homogeneous of ``degree`` (0 or 2): the radial integral is
    closed-form, the angular one is split at the kinks (where u or v changes sign)."""
    L = np.linalg.cholesky(cov)
    kinks = sorted(
        (math.atan2(-row[0], row[1]) + k * math.pi) % (2 * math.pi) for row in L for k in (0, 1)
    )

    def angular(phi):
        u, v = L @ np.array([math.cos(phi), math.sin(phi)])
        return g(np.array(u), np.array(v))

    total, _ = integrate.quad(angular, 0, 2 * math.pi, points=kinks, limit=200, epsabs=1e-14)
    radial = {0: 1.0, 2: 2.0}[degree]  # int_0^inf r^(degree+1) exp(-r^2/2) dr
    return radial * total / (2 * math.pi)


def numeric_dual(activation: str, q1: float, c: float, q2: float) -> tuple[float, float]:
    cov = np.array([[q1, c], [c, q2]])
    if abs(c) >= math.sqrt(q1 * q2) * 0.9999:  # (nearly) singular: regularize by 1e-12
        cov = cov + np.diag([0.0, 1e-12])
    phi, dphi = PHI[activation]
    if activation in ("relu", "leaky_relu"):
        return (
            polar(lambda u, v: phi(u) * phi(v), cov, 2),
            polar(lambda u, v: dphi(u) * dphi(v), cov, 0),
        )
    return (
        gauss_hermite_2d(lambda u, v: phi(u) * phi(v), cov),
        gauss_hermite_2d(lambda u, v: dphi(u) * dphi(v), cov),
    )


@pytest.mark.parametrize("activation", sorted(PHI))
def test_activation_duals_equal_numerical_integration(activation):
    with jax.enable_x64(True):
        for q1, c, q2 in COVARIANCES:
            k, kdot = activation_dual(activation, SLOPE, jnp.array(q1), jnp.array(c), jnp.array(q2))
            k_num, kdot_num = numeric_dual(activation, q1, c, q2)
            assert float(k) == pytest.approx(k_num, rel=1e-7, abs=1e-9), (q1, c, q2)
            assert float(kdot) == pytest.approx(kdot_num, rel=1e-7, abs=1e-9), (q1, c, q2)


def _layers_by_hand(spec: MLP, x1: np.ndarray, x2: np.ndarray) -> tuple[float, float]:
    """The NNGP/NTK recursion for one pair of inputs with numerically integrated duals."""
    d = x1.size
    q1, c, q2 = x1 @ x1 / d, x1 @ x2 / d, x2 @ x2 / d
    theta = 0.0
    b2 = spec.b_std**2
    fan_in = d
    for width in spec.widths:
        pre = [spec.W_std**2 * v + b2 for v in (q1, c, q2)]
        theta = (
            pre[1] + spec.W_std**2 * theta
            if spec.parameterization == "ntk"
            else fan_in * c + 1.0 + spec.W_std**2 * theta
        )
        k11, _ = numeric_dual(spec.activation, pre[0], pre[0], pre[0])
        k12, kdot = numeric_dual(spec.activation, *pre)
        k22, _ = numeric_dual(spec.activation, pre[2], pre[2], pre[2])
        q1, c, q2 = k11, k12, k22
        theta *= kdot
        fan_in = width
    nngp = spec.W_std**2 * c + b2
    ntk = (
        nngp + spec.W_std**2 * theta
        if spec.parameterization == "ntk"
        else (fan_in * c + 1.0 + spec.W_std**2 * theta)
    )
    return nngp, ntk


@pytest.mark.parametrize(
    "spec",
    [
        MLP(widths=(5, 5), activation="gelu", W_std=1.3, b_std=0.2),
        MLP(
            widths=(7,), activation="leaky_relu", negative_slope=SLOPE, parameterization="standard"
        ),
        MLP(widths=(3, 4, 6), activation="erf", W_std=1.1, b_std=0.5, parameterization="standard"),
    ],
)
def test_kernel_equals_layerwise_recursion_with_integrated_duals(spec):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 6))
    with jax.enable_x64(True):
        nngp, ntk = theory.kernel(spec)(x)
    for i, j in ((0, 1), (2, 2), (1, 2)):
        n_ref, t_ref = _layers_by_hand(spec, x[i], x[j])
        assert nngp[i, j] == pytest.approx(n_ref, rel=1e-7)
        assert ntk[i, j] == pytest.approx(t_ref, rel=1e-7)


def test_blocks_symmetry_dtype_and_flattening(monkeypatch):
    spec = MLP(widths=(16, 16), activation="relu")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((23, 2, 3))
    with jax.enable_x64(True):
        full_n, full_t = theory.kernel(spec)(x)
        cross_n, cross_t = theory.kernel(spec)(x[:5], x)
        monkeypatch.setattr(analytic, "TILE_ENTRIES", 23 * 4)  # 4-row tiles, ragged last
        blk_n, blk_t = theory.kernel(spec)(x)
    assert full_n.dtype == np.float64 and full_n.shape == (23, 23)
    np.testing.assert_array_equal(full_n, full_n.T)
    np.testing.assert_allclose(blk_n, full_n, rtol=1e-13)
    np.testing.assert_allclose(blk_t, full_t, rtol=1e-13)
    # a cross kernel sees x_i twice only through round-off: arccos(1 - eps) ~ sqrt(eps)
    np.testing.assert_allclose(cross_n, full_n[:5], rtol=1e-8)
    np.testing.assert_allclose(cross_t, full_t[:5], rtol=1e-7)
    n32, t32 = theory.kernel(spec)(x)  # x64 is off outside the context: float32
    assert n32.dtype == np.float32
    np.testing.assert_allclose(t32, full_t, rtol=2e-5)


def test_bad_input_fails_early():
    k = theory.kernel(MLP(widths=(4,)))
    with pytest.raises(ValueError, match="differ in features"):
        k(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="NaN"):
        k(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="examples, features"):
        k(np.ones(3))
    from memjax.models import CNN1D

    with pytest.raises(TypeError, match="MLP specs only"):
        theory.kernel(CNN1D())


@pytest.mark.slow
@pytest.mark.parametrize(
    "spec",
    [
        MLP(widths=(512, 512), activation="relu", b_std=0.3),
        MLP(widths=(512,), activation="gelu", W_std=1.2, b_std=None, parameterization="standard"),
    ],
)
def test_nngp_is_the_output_covariance_of_wide_networks(spec):
    """Monte Carlo: the readout units of 32 random wide networks sample the NNGP."""
    x = np.random.default_rng(2).standard_normal((4, 10)).astype(np.float32)
    init, apply = build(spec, (10,), 256)
    keys = jax.random.split(jax.random.PRNGKey(0), 32)
    f = np.asarray(jax.jit(jax.vmap(lambda k: apply(init(k), x)))(keys), np.float64)
    empirical = np.einsum("sic,sjc->ij", f, f) / (f.shape[0] * f.shape[2])
    nngp, _ = theory.kernel(spec)(x)
    err = np.linalg.norm(empirical - nngp) / np.linalg.norm(nngp)
    assert err < 0.1, err  # observed 0.01-0.07 across seeds
