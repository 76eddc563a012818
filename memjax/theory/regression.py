"""Kernel regression: ridge predictions, closed-form leave-one-out, and MSE training dynamics.

Linearized training in memjax (derivation of ``gradient_descent``). With
``TrainConfig(loss="mse", optimizer="sgd", batch_size=None, learning_rate=lr)`` a replica with
subset S (n_S examples) minimizes ``L = 1/n_S sum_{i in S} 0.5 ||f(x_i) - y_i||**2`` by
``theta <- theta - lr * grad L``, one step per epoch. For the linearized network
``f(x) = f0(x) + J(x) (theta - theta0)`` one step changes every output by
``f(x) <- f(x) - eta * Theta(x, S) (f(S) - Y_S)``, ``eta = lr / n_S``, with Theta the empirical
NTK at init (C x C blocks per example pair). So the residual on S evolves as
``r_k = (I - eta Theta_SS)**k r_0`` with ``r_0 = f0(S) - Y_S``, and after k steps

    f_k(x) = f0(x) - Theta(x, S) g(Theta_SS) r_0,   g(lam) = (1 - (1 - eta lam)**k) / lam

(``g(0) = eta k``), evaluated through an eigendecomposition of Theta_SS. Gradient flow is the
limit eta -> 0 at fixed time ``t = eta k``: ``g(lam) = (1 - exp(-t lam)) / lam``. At infinite
width f0 is a centred Gaussian process, so the mean prediction drops f0 (``f0=None``); at
finite width passing the network's own f0 makes the prediction exact for the linearized
network. Kernels are (n, n) (the same kernel for every output, as in the infinite-width
limit) or (n, n, C, C) (e.g. the empirical NTK of a multi-output network).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from memjax.errors import DataError
from memjax.theory.analytic import float_dtype

__all__ = ["kernel_ridge", "krr_loo", "gradient_descent", "gradient_flow", "spectral_filter"]

Filter = Callable[[jax.Array], jax.Array]


def _as_matrix(K: np.ndarray, name: str) -> jax.Array:
    """(n, n) or (n, n, C, C) -> (n, n) or (n C, n C), in the working dtype."""
    K = jnp.asarray(K, float_dtype())
    if K.ndim == 4:
        if K.shape[2] != K.shape[3]:
            raise DataError(f"{name} must be (n, n', C, C), got {K.shape}")
        return K.transpose(0, 2, 1, 3).reshape(K.shape[0] * K.shape[2], -1)
    if K.ndim != 2:
        raise DataError(f"{name} must be (n, n') or (n, n', C, C), got shape {K.shape}")
    return K


def _prepare(
    K_train: np.ndarray, y: np.ndarray, K_cross: np.ndarray | None
) -> tuple[jax.Array, jax.Array, jax.Array, Callable[[jax.Array], np.ndarray]]:
    """Flatten kernels and targets consistently; return an unflatten for the predictions."""
    dtype = float_dtype()
    y = jnp.asarray(y, dtype)
    K_train = np.asarray(K_train)
    K_cross = K_train if K_cross is None else np.asarray(K_cross)
    n = K_train.shape[0]
    if K_cross.ndim != K_train.ndim or K_train.shape[:2] != (n, n) or K_cross.shape[1] != n:
        raise DataError(
            f"kernel shapes do not fit: train {K_train.shape}, cross {K_cross.shape} "
            "(need (n, n[, C, C]) and (m, n[, C, C]))"
        )
    if y.shape[0] != n or y.ndim > 2:
        raise DataError(f"targets must be (n,) or (n, C) with n = {n}, got {y.shape}")
    for name, a in (("K_train", K_train), ("K_cross", K_cross), ("targets", y)):
        if not np.isfinite(a).all():
            raise DataError(f"{name} contains NaN or inf")
    if K_train.ndim == 4:
        C = K_train.shape[2]
        if y.shape != (n, C):
            raise DataError(f"a (n, n, C, C) kernel needs targets (n, C) = {(n, C)}, got {y.shape}")
        m = K_cross.shape[0]
        return (
            _as_matrix(K_train, "K_train"),
            y.reshape(-1),
            _as_matrix(K_cross, "K_cross"),
            lambda f: np.asarray(f).reshape(m, C),
        )
    return _as_matrix(K_train, "K_train"), y, _as_matrix(K_cross, "K_cross"), np.asarray


def _check_ridge(ridge: float) -> None:
    if not ridge >= 0:
        raise DataError(f"ridge must be >= 0, got {ridge}")


def _solve_psd(K: jax.Array, b: jax.Array, ridge: float) -> jax.Array:
    """(K + ridge I)^{-1} b by Cholesky; a singular system fails with a clear message."""
    chol = jax.scipy.linalg.cho_factor(K + ridge * jnp.eye(len(K), dtype=K.dtype), lower=True)
    out = jax.scipy.linalg.cho_solve(chol, b)
    if not bool(jnp.all(jnp.isfinite(out))):
        raise np.linalg.LinAlgError(
            f"kernel system with ridge {ridge} is singular or not positive definite: use a "
            "larger ridge (or enable float64)"
        )
    return out


def kernel_ridge(
    K_train: np.ndarray, y: np.ndarray, K_cross: np.ndarray | None = None, ridge: float = 0.0
) -> np.ndarray:
    """``K_cross (K_train + ridge I)^{-1} y``: kernel ridge regression predictions (the
    NNGP posterior mean; the t -> infinity limit of gradient flow for ridge 0). ``K_cross``
    (m, n) defaults to ``K_train`` (predictions on the training points)."""
    _check_ridge(ridge)
    Kt, yv, Kc, unflatten = _prepare(K_train, y, K_cross)
    return unflatten(Kc @ _solve_psd(Kt, yv, ridge))


def krr_loo(K: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """Leave-one-out predictions of kernel ridge regression, without refitting.

    With ``A = (K + ridge I)^{-1}`` the hat matrix is ``H = K A = I - ridge A``, and the
    classic identity ``y_i - loo_i = (y_i - yhat_i) / (1 - H_ii)`` becomes
    ``loo_i = y_i - (A y)_i / A_ii`` (valid for ridge = 0 too when K is invertible).
    ``K`` is (n, n); ``y`` is (n,) or (n, C).
    """
    _check_ridge(ridge)
    K = np.asarray(K)
    if K.ndim != 2:
        raise DataError(f"krr_loo needs a (n, n) kernel, got shape {K.shape}")
    Kt, yv, _, _ = _prepare(K, y, None)
    A = _solve_psd(Kt, jnp.eye(len(Kt), dtype=Kt.dtype), ridge)
    Ay = A @ yv
    diag = jnp.diagonal(A)
    return np.asarray(yv - (Ay / diag if yv.ndim == 1 else Ay / diag[:, None]))


def spectral_filter(scale: float | jax.Array, steps: int | None = None) -> Filter:
    """g(lam) of the dynamics: ``steps`` GD steps of rate ``scale``, or (``steps=None``)
    gradient flow at time ``scale``.

    expm1/log1p keep small eigenvalues exact (g -> scale * steps, or t, as lam -> 0); for
    ``scale * lam > 1`` (oscillating but convergent GD) the power is taken directly.
    """

    def g(lam: jax.Array) -> jax.Array:
        if steps is None:
            decay = -jnp.expm1(-scale * lam)
            limit = scale
        else:
            x = scale * lam
            smooth = -jnp.expm1(steps * jnp.log1p(-jnp.minimum(x, 0.5)))
            decay = jnp.where(x < 0.5, smooth, 1 - jnp.power(1 - x, steps))
            limit = scale * steps
        zero = lam == 0
        return jnp.where(zero, limit, decay / jnp.where(zero, 1.0, lam))

    return g


def _spectral(
    K_train: np.ndarray,
    y: np.ndarray,
    K_cross: np.ndarray | None,
    g: Filter,
    f0_train: np.ndarray | None,
    f0_cross: np.ndarray | None,
) -> np.ndarray:
    if K_cross is None and f0_cross is not None:
        raise DataError("f0_cross was given without K_cross")
    if K_cross is not None and (f0_train is None) != (f0_cross is None):
        raise DataError("give both f0_train and f0_cross, or neither")
    Kt, yv, Kc, unflatten = _prepare(K_train, y, K_cross)
    dtype = Kt.dtype
    f0t = jnp.zeros_like(yv) if f0_train is None else jnp.asarray(f0_train, dtype).reshape(yv.shape)
    if K_cross is None:
        f0c = f0t
    elif f0_cross is None:
        f0c = jnp.zeros((Kc.shape[0], *yv.shape[1:]), dtype)
    else:
        f0c = jnp.asarray(f0_cross, dtype).reshape(Kc.shape[0], *yv.shape[1:])
    lam, V = jnp.linalg.eigh(Kt)
    coef = V @ (g(lam)[:, None] * (V.T @ (f0t - yv).reshape(len(Kt), -1)))
    return unflatten(f0c - (Kc @ coef).reshape(Kc.shape[0], *yv.shape[1:]))


def gradient_descent(
    K_train: np.ndarray,
    y: np.ndarray,
    eta: float,
    steps: int,
    K_cross: np.ndarray | None = None,
    f0_train: np.ndarray | None = None,
    f0_cross: np.ndarray | None = None,
) -> np.ndarray:
    """Outputs after ``steps`` full-batch GD steps of rate ``eta`` on the kernel (module doc).

    For memjax's MSE training use ``eta = learning_rate / n_S`` and ``steps = epochs``.
    ``f0_*`` are the outputs at initialization (None: the infinite-width mean, zero).
    """
    if not eta > 0 or steps < 0:
        raise DataError(f"need eta > 0 and steps >= 0, got {eta}, {steps}")
    return _spectral(K_train, y, K_cross, spectral_filter(eta, steps), f0_train, f0_cross)


def gradient_flow(
    K_train: np.ndarray,
    y: np.ndarray,
    t: float,
    K_cross: np.ndarray | None = None,
    f0_train: np.ndarray | None = None,
    f0_cross: np.ndarray | None = None,
) -> np.ndarray:
    """Outputs of gradient flow ``df/dt = -Theta(., S)(f(S) - Y)`` at time t (module doc);
    memjax's GD after k steps at learning rate lr corresponds to ``t = k lr / n_S``."""
    if not t >= 0:
        raise DataError(f"time must be >= 0, got {t}")
    return _spectral(K_train, y, K_cross, spectral_filter(t), f0_train, f0_cross)
