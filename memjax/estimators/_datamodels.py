"""Datamodels (Ilyas et al. 2022): per test example, a linear model of its output on the
subset indicator, fitted on the replicas a study already trained.

For test example j, ``values[:, j]`` (R,) is regressed on X = ``masks`` as float (R, n) with
an unpenalized intercept:

* ridge minimizes ||y - X w - b||^2 + lam ||w||^2;
* lasso minimizes ||y - X w - b||^2 + lam ||w||_1 (scikit-learn's ``Lasso(alpha)`` is the
  same problem with lam = 2 R alpha: it scales the squared error by 1/(2R)).

Both are solved for all test examples at once in JAX on centred data (the intercept is then
mean(y) - mean(X) w): ridge through one SVD of the centred X shared by every test example and
every lam; lasso by FISTA with adaptive restart, vectorized over test examples, each with
its own lam, to a duality gap of LASSO_TOL x ||y||^2. Test
examples are processed in tiles of ``tile_size`` columns to bound memory.

lam=None chooses lam per test example by K-fold cross-validation over replicas (whole
blocks when ``blocks`` are given: the replicas of a balanced block are dependent) on a
log-spaced grid; the held-out mean squared error and R^2 at the chosen lam are returned as
fit diagnostics either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from memjax._deprecation import renamed_keyword
from memjax.errors import DataError
from memjax.estimators._core import check_masks

__all__ = ["Datamodels", "datamodels", "cv_folds", "METHODS"]

METHODS = ("ridge", "lasso")
GRID_SIZE = 13
# lasso: FISTA stops at a duality gap of this times ||y||^2 per column (float32 iterates
# stall near 2e-6 of it)
LASSO_TOL = {"float32": 1e-5, "float64": 1e-12}
LASSO_MAX_ITER = 20_000


@dataclass(frozen=True)
class Datamodels:
    """Fitted datamodels: ``weights`` (n_train, n_test), ``bias`` (n_test,), ``lam``
    (n_test,) the regularization used per test example, and the cross-validated fit:
    ``heldout_mse`` and ``heldout_r2`` (n_test,) (R^2 against the held-out fold's own mean;
    NaN where a test example's output does not vary)."""

    weights: np.ndarray
    bias: np.ndarray
    lam: np.ndarray
    heldout_mse: np.ndarray
    heldout_r2: np.ndarray
    method: str
    folds: int

    def predict(self, masks: np.ndarray) -> np.ndarray:
        """Predicted outputs (M, n_test) of subsets ``masks`` (M, n_train)."""
        return np.asarray(masks, np.float64) @ self.weights + self.bias


def cv_folds(replicas: int, folds: int, blocks: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """Fold id (R,) of each replica: whole blocks (or replicas) dealt at random into ``folds``."""
    units = np.arange(replicas) if blocks is None else np.unique(blocks, return_inverse=True)[1]
    n_units = int(units.max()) + 1
    if n_units < folds:
        raise DataError(
            f"cross-validation with {folds} folds needs at least {folds} "
            f"{'blocks' if blocks is not None else 'replicas'}, got {n_units}"
        )
    perm = np.random.default_rng(seed).permutation(n_units)
    fold_of_unit = np.empty(n_units, np.int64)
    fold_of_unit[perm] = np.arange(n_units) % folds
    return fold_of_unit[units]


# ---------------------------------------------------------------------------- ridge


@jax.jit
def _ridge_factor(x):
    """Centred design's SVD: mean (n,), u (R, k), s (k,), vt (k, n)."""
    mean = x.mean(axis=0)
    u, s, vt = jnp.linalg.svd(x - mean, full_matrices=False)
    return mean, u, s, vt


@jax.jit
def _ridge_solve(u, s, vt, yc, lam):
    """Weights (n, mb) for centred targets yc (R, mb) and per-column lam (mb,)."""
    uty = u.T @ yc  # (k, mb)
    shrink = s[:, None] / (s[:, None] ** 2 + lam[None, :])
    return vt.T @ (shrink * uty)


@jax.jit
def _ridge_path_error(u, s, vt, mean, yc, y_mean, x_held, y_held, lams):
    """Held-out squared error summed over rows, (L, mb), for every lam of ``lams`` (L,)."""
    uty = u.T @ yc
    proj = (x_held - mean) @ vt.T  # (H, k)

    def one(lam):
        pred = proj @ ((s[:, None] / (s[:, None] ** 2 + lam)) * uty) + y_mean
        return ((y_held - pred) ** 2).sum(axis=0)

    return jax.lax.map(one, lams)


# ---------------------------------------------------------------------------- lasso


def _soft(z, t):
    return jnp.sign(z) * jnp.maximum(jnp.abs(z) - t, 0.0)


def _duality_gap(xc, yc, w, lam):
    """Per column (mb,): primal ||r||^2 + lam |w|_1 minus the dual value at the feasible
    point nu = 2 s r, s <= 1 the largest scale with ||xc^T nu||_inf <= lam (r = yc - xc w).
    It bounds how far the objective is from its minimum. Written as
    (1 - s)^2 ||r||^2 + lam |w|_1 - 2 s (xc^T r) . w, which does not cancel terms of size
    ||yc||^2 (float32 could not resolve a gap below ~1e-6 of it otherwise)."""
    r = yc - xc @ w
    xtr = xc.T @ r
    s = jnp.minimum(1.0, lam / jnp.maximum(2.0 * jnp.abs(xtr).max(axis=0), 1e-30))
    fit = (1.0 - s) ** 2 * (r**2).sum(axis=0)
    return fit + lam * jnp.abs(w).sum(axis=0) - 2.0 * s * (xtr * w).sum(axis=0)


@jax.jit
def _lasso_solve(xc, yc, lam, w0):
    """FISTA with adaptive restart (O'Donoghue & Candes 2015) for
    min ||yc - xc w||^2 + lam ||w||_1 per column; lam (mb,), w0 (n, mb). Stops when every
    column's duality gap is at most LASSO_TOL[dtype] x ||yc||^2 (scikit-learn's criterion)."""
    lipschitz = 2.0 * jnp.linalg.norm(xc, ord=2) ** 2
    step = 1.0 / jnp.maximum(lipschitz, 1e-30)
    tol = LASSO_TOL[jnp.dtype(xc.dtype).name] * jnp.maximum((yc**2).sum(axis=0), 1e-30)

    def cond(state):
        it, _, _, _, gap = state
        return (it < LASSO_MAX_ITER) & jnp.any(gap > tol)

    def body(state):
        it, w, z, t, _ = state
        grad = 2.0 * xc.T @ (xc @ z - yc)
        w_new = _soft(z - step * grad, step * lam[None, :])
        restart = ((z - w_new) * (w_new - w)).sum(axis=0) > 0  # momentum points uphill
        t = jnp.where(restart, 1.0, t)
        t_new = (1.0 + jnp.sqrt(1.0 + 4.0 * t * t)) / 2.0
        z_new = w_new + ((t - 1.0) / t_new)[None, :] * (w_new - w)
        return it + 1, w_new, z_new, t_new, _duality_gap(xc, yc, w_new, lam)

    ones = jnp.ones(yc.shape[1], xc.dtype)
    state = (0, w0, w0, ones, jnp.full(yc.shape[1], jnp.inf, xc.dtype))
    return jax.lax.while_loop(cond, body, state)[1]


# ---------------------------------------------------------------------------- fitting


def _lam_grid(method: str, x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """Default grid (L, m): ridge relative to the design's largest squared singular value;
    lasso from each test example's smallest lam with all weights zero down 10^3."""
    xc = x - x.mean(axis=0)
    if method == "ridge":
        top = max(float(np.linalg.norm(xc, 2)) ** 2, 1e-12)
        grid = top * np.logspace(-5, 1, size)
        return np.repeat(grid[:, None], y.shape[1], axis=1)
    lam_max = np.maximum(2 * np.abs(xc.T @ (y - y.mean(axis=0))).max(axis=0), 1e-12)
    return lam_max[None, :] * np.logspace(-3, 0, size)[::-1, None]


def _fit(method: str, x, y, lam, dtype, w0=None):
    """(weights (n, m), bias (m,)) for per-column lam (m,); lasso starts from ``w0``."""
    xj, yj = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
    y_mean = yj.mean(axis=0)
    lam = jnp.asarray(lam, dtype)
    if method == "ridge":
        mean, u, s, vt = _ridge_factor(xj)
        w = _ridge_solve(u, s, vt, yj - y_mean, lam)
    else:
        mean = xj.mean(axis=0)
        w0 = jnp.zeros((x.shape[1], y.shape[1]), dtype) if w0 is None else jnp.asarray(w0, dtype)
        w = _lasso_solve(xj - mean, yj - y_mean, lam, w0)
    return np.asarray(w), np.asarray(y_mean - mean @ w)


def _path_errors(method, x_tr, y_tr, x_he, y_he, grid, dtype) -> np.ndarray:
    """Held-out squared error (L, m) of each lam of ``grid`` (L, m) fitted on one fold."""
    if method == "ridge" and np.all(grid == grid[:, :1]):  # one grid shared by every column
        xj, yj = jnp.asarray(x_tr, dtype), jnp.asarray(y_tr, dtype)
        mean, u, s, vt = _ridge_factor(xj)
        y_mean = yj.mean(axis=0)
        held = jnp.asarray(x_he, dtype), jnp.asarray(y_he, dtype)
        lams = jnp.asarray(grid[:, 0], dtype)
        return np.asarray(_ridge_path_error(u, s, vt, mean, yj - y_mean, y_mean, *held, lams))
    errors = []
    w = None
    for lam in grid:  # lasso: largest lam first, each solve warm-started by the previous
        w, b = _fit(method, x_tr, y_tr, lam, dtype, w)
        errors.append(((y_he - (x_he @ w + b)) ** 2).sum(axis=0))
    return np.stack(errors)


def _check(masks, values, method, lam, folds):
    if method not in METHODS:
        raise DataError(f"unknown datamodels method {method!r}: use one of {METHODS}")
    masks, values = check_masks(masks, values, "values", columns="n_test")
    if not isinstance(folds, (int, np.integer)) or folds < 2:
        raise DataError(f"folds must be an integer >= 2, got {folds}")
    if lam is not None:
        lam = np.broadcast_to(np.asarray(lam, np.float64), (values.shape[1],))
        if not (np.isfinite(lam).all() and (lam >= 0).all()):
            raise DataError("lam must be finite and >= 0 (one value or one per test example)")
    return masks, values, lam


@renamed_keyword("block_size", "tile_size")
def datamodels(
    masks: np.ndarray,
    values: np.ndarray,
    *,
    method: str = "ridge",
    lam: float | np.ndarray | None = None,
    blocks: np.ndarray | None = None,
    folds: int = 5,
    grid: np.ndarray | None = None,
    tile_size: int = 1024,
    dtype: str = "float32",
    seed: int = 0,
) -> Datamodels:
    """Fit one linear datamodel per test example (see the module docstring).

    ``masks`` (R, n_train) bool, ``values`` (R, n_test) (margins, correctness, losses).
    ``lam``: one value or one per test example; None chooses it per test example from
    ``grid`` (L,) (default: 13 log-spaced values scaled to the data) by ``folds``-fold
    cross-validation over replicas, or over whole ``blocks`` (R,) when given. ``dtype``
    "float64" computes in double precision (JAX's x64 mode, enabled for the call only).
    """
    masks, values, lam = _check(masks, values, method, lam, folds)
    if dtype not in ("float32", "float64"):
        raise DataError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    x = masks.astype(np.float64)
    y = values.astype(np.float64)
    fold_of = cv_folds(len(x), folds, blocks, seed)
    n, m = x.shape[1], y.shape[1]
    out = {k: np.empty(m) for k in ("bias", "lam", "mse", "r2")}
    weights = np.empty((n, m), np.float32 if dtype == "float32" else np.float64)
    with jax.enable_x64(dtype == "float64"):
        for start in range(0, m, tile_size):
            cols = slice(start, min(start + tile_size, m))
            yb = y[:, cols]
            if grid is None:
                lams = _lam_grid(method, x, yb, GRID_SIZE)
            else:
                g = np.asarray(grid, np.float64)
                if g.ndim != 1 or not (g >= 0).all():
                    raise DataError("grid must be a 1-D array of lam values >= 0")
                lams = np.repeat(np.sort(g)[::-1, None], yb.shape[1], axis=1)
            if lam is not None:
                lams = lam[None, cols]
            errors = np.zeros(lams.shape)
            sq = np.zeros(yb.shape[1])
            for f in range(folds):
                tr, he = fold_of != f, fold_of == f
                errors += _path_errors(method, x[tr], yb[tr], x[he], yb[he], lams, dtype)
                sq += ((yb[he] - yb[he].mean(axis=0)) ** 2).sum(axis=0)
            best = errors.argmin(axis=0)
            chosen = lams[best, np.arange(yb.shape[1])]
            w, b = _fit(method, x, yb, chosen, dtype)
            weights[:, cols] = w
            out["bias"][cols], out["lam"][cols] = b, chosen
            err = errors[best, np.arange(yb.shape[1])]
            out["mse"][cols] = err / len(y)
            with np.errstate(invalid="ignore", divide="ignore"):
                out["r2"][cols] = np.where(sq > 0, 1 - err / np.where(sq > 0, sq, 1), np.nan)
    return Datamodels(
        weights, out["bias"], out["lam"], out["mse"], out["r2"], method=method, folds=folds
    )
