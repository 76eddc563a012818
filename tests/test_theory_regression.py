"""Kernel regression against independent computations: refits, explicit iterations, expm."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from scipy.linalg import expm

from memjax import theory


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def rbf(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * ((a[:, None] - b[None]) ** 2).sum(-1))


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    x, xt = rng.standard_normal((30, 3)), rng.standard_normal((7, 3))
    y = rng.standard_normal((30, 4))
    return rbf(x, x), rbf(xt, x), y


def multi_output_kernel(n: int, m: int, C: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A PSD (n+m, n+m, C, C) kernel with coupled outputs, e.g. like an empirical NTK."""
    rng = np.random.default_rng(seed)
    J = rng.standard_normal(((n + m) * C, 3 * (n + m) * C)) / 10
    K = (J @ J.T).reshape(n + m, C, n + m, C).transpose(0, 2, 1, 3)
    return K[:n, :n], K[n:, :n]


def flat(K: np.ndarray) -> np.ndarray:
    return K.transpose(0, 2, 1, 3).reshape(K.shape[0] * K.shape[2], -1)


@pytest.mark.parametrize("ridge", [1e-3, 0.3])
@pytest.mark.parametrize("vector_targets", [False, True])
def test_krr_loo_equals_explicit_refits(problem, ridge, vector_targets):
    K, _, y = problem
    y = y[:, 0] if vector_targets else y
    loo = theory.krr_loo(K, y, ridge)
    n = len(K)
    for i in range(n):
        keep = np.arange(n) != i
        alpha = np.linalg.solve(K[np.ix_(keep, keep)] + ridge * np.eye(n - 1), y[keep])
        refit = K[i, keep] @ alpha
        np.testing.assert_allclose(loo[i], refit, rtol=1e-8, atol=1e-10)


def test_kernel_ridge_matches_direct_solve_for_scalar_and_multi_output_kernels(problem):
    K, Kx, y = problem
    expected = Kx @ np.linalg.solve(K + 0.1 * np.eye(len(K)), y)
    np.testing.assert_allclose(theory.kernel_ridge(K, y, Kx, 0.1), expected, rtol=1e-10)
    Kc, Kxc = multi_output_kernel(6, 3, 2, seed=1)
    yc = np.random.default_rng(2).standard_normal((6, 2))
    f = theory.kernel_ridge(Kc, yc, Kxc, 0.05)
    expected = flat(Kxc) @ np.linalg.solve(flat(Kc) + 0.05 * np.eye(12), yc.reshape(-1))
    np.testing.assert_allclose(f, expected.reshape(3, 2), rtol=1e-10)


def explicit_gd(K, Kx, y, f0, f0x, eta, steps):
    """Iterate f <- f - eta K(., S)(f(S) - Y) on train and cross points."""
    f, fx = f0.copy(), f0x.copy()
    for _ in range(steps):
        resid = f - y
        f, fx = f - eta * K @ resid, fx - eta * Kx @ resid
    return f, fx


@pytest.mark.parametrize("rate", [0.3, 1.7])  # eta * lambda_max below 1, and in (1, 2)
def test_gradient_descent_equals_explicit_iteration(problem, rate):
    K, Kx, y = problem
    rng = np.random.default_rng(3)
    f0, f0x = rng.standard_normal(y.shape), rng.standard_normal((len(Kx), y.shape[1]))
    eta = rate / np.linalg.eigvalsh(K).max()
    f_ref, fx_ref = explicit_gd(K, Kx, y, f0, f0x, eta, 200)
    fx = theory.gradient_descent(K, y, eta, 200, Kx, f0, f0x)
    f = theory.gradient_descent(K, y, eta, 200, None, f0)
    np.testing.assert_allclose(fx, fx_ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(f, f_ref, rtol=1e-9, atol=1e-10)


def test_gradient_descent_with_multi_output_kernel_and_zero_init():
    K, Kx = multi_output_kernel(8, 4, 3, seed=4)
    y = np.eye(3)[np.arange(8) % 3]
    eta = 1.0 / np.linalg.eigvalsh(flat(K)).max()
    f_ref, fx_ref = explicit_gd(
        flat(K), flat(Kx), y.reshape(-1), 0 * y.ravel(), np.zeros(12), eta, 50
    )
    fx = theory.gradient_descent(K, y, eta, 50, Kx)
    np.testing.assert_allclose(fx, fx_ref.reshape(4, 3), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        theory.gradient_descent(K, y, eta, 50), f_ref.reshape(8, 3), rtol=1e-9
    )


def test_gradient_flow_equals_matrix_exponential_and_is_the_small_step_limit(problem):
    K, Kx, y = problem
    rng = np.random.default_rng(5)
    f0, f0x = rng.standard_normal(y.shape), rng.standard_normal((len(Kx), y.shape[1]))
    t = 3.0
    decay = expm(-t * K)
    train_ref = y + decay @ (f0 - y)
    # K_xS K^-1 (I - e^{-tK}) as K_xS * integral_0^t e^{-sK} ds, by quadrature
    s, w = np.polynomial.legendre.leggauss(60)
    integral = sum(wi * t / 2 * expm(-(si + 1) * t / 2 * K) for si, wi in zip(s, w, strict=True))
    cross_ref = f0x - Kx @ integral @ (f0 - y)
    np.testing.assert_allclose(
        theory.gradient_flow(K, y, t, None, f0), train_ref, rtol=1e-9, atol=1e-11
    )
    np.testing.assert_allclose(
        theory.gradient_flow(K, y, t, Kx, f0, f0x), cross_ref, rtol=1e-8, atol=1e-10
    )
    errors = [
        np.abs(theory.gradient_descent(K, y, t / k, k, Kx, f0, f0x) - cross_ref).max()
        for k in (50, 500)
    ]
    assert errors[1] < errors[0] / 8  # first order in the step size


def test_bad_input(problem):
    K, Kx, y = problem
    with pytest.raises(ValueError, match="ridge must be >= 0"):
        theory.krr_loo(K, y, -1.0)
    with pytest.raises(ValueError, match="kernel shapes"):
        theory.kernel_ridge(K, y, Kx[:, :5], 0.1)
    with pytest.raises(ValueError, match="targets"):
        theory.kernel_ridge(K, y[:5], None, 0.1)
    with pytest.raises(ValueError, match="both f0_train and f0_cross"):
        theory.gradient_flow(K, y, 1.0, Kx, f0_train=y)
    with pytest.raises(ValueError, match="K_cross contains NaN"):
        theory.kernel_ridge(K, y, np.where(Kx > 0.5, np.nan, Kx), 0.1)
    rank_one = np.outer(np.ones(30), np.ones(30))
    with pytest.raises(np.linalg.LinAlgError, match="larger ridge"):
        theory.kernel_ridge(rank_one, y, None, 0.0)
