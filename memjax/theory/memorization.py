"""Kernel-regression "replicas": a kernel model per subset mask, as ReplicaOutputs.

For replica r with subset S_r (its mask row) the kernel model is fit on the IN examples with
one-hot targets and evaluated on every train and test example, so memorization, influence
and every other estimator run unchanged on kernel models, paired with networks trained on
the same masks. Two fits:

* ridge (default): ``f = f0 + K(., S)(K_SS + ridge I)^{-1}(Y_S - f0(S))`` (Cholesky), the
  NNGP posterior mean, or with the NTK and ridge -> 0 the end point of gradient flow;
* gradient descent (``lr`` and ``steps`` given): the exact outputs of memjax's full-batch MSE
  training of a network linearized with this kernel, ``eta = lr / |S_r|`` (see
  memjax.theory.regression), via an eigendecomposition of K_SS.

``f0`` (outputs at initialization, default zero = the infinite-width mean) makes the model
exactly the linearized network with that initialization. Subsets of unequal size are padded
to the largest one: padded rows and columns of K_SS are the identity with zero targets, so
they contribute nothing. Replicas are solved in vectorized groups (batched Cholesky or eigh).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from memjax.data import Dataset
from memjax.errors import DataError
from memjax.models import MLP
from memjax.outputs import ReplicaOutputs, per_example_metrics
from memjax.theory.analytic import float_dtype
from memjax.theory.kernel_files import KernelMatrices, dataset_kernels
from memjax.theory.regression import spectral_filter

__all__ = ["kernel_replicas"]

GROUP_ELEMENTS = 2**24  # entries of the per-group (G, n_S, n_S) systems, ~4 copies live
DEFAULT_JITTER = 1e-6


def _fit_one(K_tt, K_st, Y, idx, valid, f0_tr, f0_te, ridge, lr, steps):
    """Train and test outputs of one replica's kernel model (padded subset ``idx``)."""
    n_max = idx.shape[0]
    pair = valid[:, None] & valid[None, :]
    K_ss = jnp.where(pair, K_tt[idx[:, None], idx[None, :]], jnp.eye(n_max, dtype=K_tt.dtype))
    resid = jnp.where(valid[:, None], Y[idx] - f0_tr[idx], 0.0)
    if steps is None:
        system = K_ss + ridge * jnp.diag(valid.astype(K_tt.dtype))
        alpha = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(system, lower=True), resid)
    else:
        lam, V = jnp.linalg.eigh(K_ss)
        g = spectral_filter(lr / jnp.sum(valid), steps)
        alpha = V @ (g(lam)[:, None] * (V.T @ resid))
    coef = jnp.zeros_like(f0_tr).at[idx].add(jnp.where(valid[:, None], alpha, 0.0))
    return f0_tr + K_tt @ coef, f0_te + K_st @ coef


@partial(jax.jit, static_argnames="steps")
def _fit_group(K_tt, K_st, Y, y_tr, y_te, idx, valid, f0_tr, f0_te, ridge, lr, steps):
    fit = jax.vmap(_fit_one, in_axes=(None, None, None, 0, 0, 0, 0, None, None, None))
    train, test = fit(K_tt, K_st, Y, idx, valid, f0_tr, f0_te, ridge, lr, steps)
    metrics = [
        per_example_metrics(f, jnp.broadcast_to(y, f.shape[:2]), "mse")
        for f, y in ((train, y_tr), (test, y_te))
    ]
    return [{k: m[k] for k in ("correct", "margin", "loss")} for m in metrics]


def _check_f0(f0: np.ndarray | None, shape: tuple[int, ...], name: str) -> np.ndarray:
    if f0 is None:
        return np.zeros(shape, float_dtype())
    f0 = np.asarray(f0, float_dtype())
    if f0.shape != shape:
        raise DataError(
            f"{name} must have shape (replicas, examples, classes) = {shape}, got {f0.shape}"
        )
    if not np.isfinite(f0).all():
        raise DataError(f"{name} contains NaN or inf")
    return f0


def _padded_subsets(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index (R, n_max) of each replica's IN examples, zero-padded, and its validity mask."""
    sizes = masks.sum(axis=1)
    n_max = int(sizes.max())
    order = np.argsort(~masks, axis=1, kind="stable")[:, :n_max]  # IN examples first
    valid = np.arange(n_max)[None, :] < sizes[:, None]
    return np.where(valid, order, 0), valid


def kernel_replicas(
    kernels: KernelMatrices | MLP,
    ds: Dataset,
    masks: np.ndarray,
    *,
    kind: str = "ntk",
    ridge: float | None = None,
    lr: float | None = None,
    steps: int | None = None,
    f0_train: np.ndarray | None = None,
    f0_test: np.ndarray | None = None,
    replica_ids: np.ndarray | None = None,
) -> ReplicaOutputs:
    """Kernel models on the subsets ``masks`` (R, n) of ``ds``, as ReplicaOutputs (module doc).

    ``kernels``: an MLP spec (analytic kernels) or KernelMatrices (e.g. from
    ``load_kernel_file``), whose fingerprint must match ``ds``. ``kind``: "ntk" or "nngp".
    ``ridge`` (ridge fit only; absolute, default 1e-6 x the mean training diagonal, i.e.
    interpolation up to round-off). ``lr, steps``: use the gradient-descent fit instead.
    ``f0_train`` (R, n, C), ``f0_test`` (R, m, C): outputs at initialization.
    The loss reported is memjax's MSE, ``0.5 ||f - onehot||**2``.
    """
    km = dataset_kernels(kernels, ds) if isinstance(kernels, MLP) else kernels
    if not isinstance(km, KernelMatrices):
        raise TypeError(f"kernels must be an MLP spec or KernelMatrices, got {type(kernels)}")
    km.check_dataset(ds)
    masks = np.asarray(masks)
    if masks.ndim != 2 or masks.dtype != bool or masks.shape[1] != ds.n_train:
        raise DataError(
            f"masks must be boolean (replicas, {ds.n_train}), got {masks.dtype} {masks.shape}"
        )
    if not masks.any(axis=1).all():
        raise DataError(
            f"replica(s) {np.flatnonzero(~masks.any(axis=1))[:5].tolist()} have an empty subset"
        )
    ids = np.arange(len(masks)) if replica_ids is None else np.asarray(replica_ids, np.int64)
    if ids.shape != (len(masks),):
        raise DataError(f"replica_ids must have one id per mask row, got shape {ids.shape}")
    if (lr is None) != (steps is None):
        raise DataError("give both lr and steps (gradient-descent fit) or neither (ridge fit)")
    if lr is not None and (not lr > 0 or int(steps) < 0 or ridge is not None):
        raise DataError(
            f"gradient-descent fit needs lr > 0, steps >= 0 and no ridge; got "
            f"lr={lr}, steps={steps}, ridge={ridge}"
        )
    K_tt, K_st = (jnp.asarray(k, float_dtype()) for k in km.train_test(kind))
    if ridge is None:
        ridge = DEFAULT_JITTER * float(jnp.mean(jnp.diagonal(K_tt)))
    if not ridge >= 0:
        raise DataError(f"ridge must be >= 0, got {ridge}")
    R, C = len(masks), ds.num_classes
    f0_tr = _check_f0(f0_train, (R, ds.n_train, C), "f0_train")
    f0_te = _check_f0(f0_test, (R, ds.n_test, C), "f0_test")
    idx, valid = _padded_subsets(masks)
    group = int(np.clip(GROUP_ELEMENTS // idx.shape[1] ** 2, 1, R))
    Y = jax.nn.one_hot(ds.y_train, C, dtype=K_tt.dtype)
    y_tr, y_te = jnp.asarray(ds.y_train), jnp.asarray(ds.y_test)
    parts: list[list[dict[str, np.ndarray]]] = []
    for start in range(0, R, group):
        rows = np.arange(start, start + group) % R  # the last group wraps: one compilation
        out = _fit_group(
            K_tt,
            K_st,
            Y,
            y_tr,
            y_te,
            idx[rows],
            valid[rows],
            f0_tr[rows],
            f0_te[rows],
            ridge,
            lr or 0.0,
            None if steps is None else int(steps),
        )
        keep = min(group, R - start)
        parts.append([{k: np.asarray(v)[:keep] for k, v in split.items()} for split in out])
    train, test = (
        {k: np.concatenate([p[s][k] for p in parts]) for k in parts[0][s]} for s in (0, 1)
    )
    bad = ~np.isfinite(train["margin"]).all(axis=1)
    if bad.any():
        raise np.linalg.LinAlgError(
            f"kernel system of replica(s) {ids[bad][:5].tolist()} is singular or not positive "
            f"definite with ridge {ridge:g}: use a larger ridge or enable float64"
        )
    return ReplicaOutputs(
        replica_ids=ids,
        train_correct=train["correct"],
        train_margin=train["margin"],
        train_loss=train["loss"],
        test_correct=test["correct"],
        test_margin=test["margin"],
        test_loss=test["loss"],
    )
