"""Per-replica data augmentation of channels-last image minibatches (N, H, W, C).

The augmentation of a replica's minibatch is drawn from a key that is a function of the
replica's key, the epoch and the step within the epoch (``step_key``), so a replica's run
stays a function of (seed, replica, mask): neither its group, its chunk, its device nor
the other replicas change which crops it sees.

* ``crop_flip``: random crop of the image padded by 4 pixels (reflect), then a horizontal
  flip with probability 1/2, independently per image (the CIFAR standard of He et al. 2016
  and the fast CIFAR-10 trainers).
* ``crop``: the same crops without flips, for images whose mirror is another class
  (digits, MNIST, text); its crops are those ``crop_flip`` draws from the same key.
* ``cutout`` (DeVries & Taylor 2017): a ``size`` x ``size`` square, clipped at the border
  and centred at a uniform pixel, set to zero; applied after normalization, so the square
  is the mean colour.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from memjax.errors import ConfigError

__all__ = ["AUGMENTS", "PAD", "step_key", "crop_flip", "cutout", "check_images"]

AUGMENTS = ("none", "crop_flip", "crop")
PAD = 4
_STREAM = 0x61756723  # separates augmentation keys from the replica's init and order keys


def step_key(replica_key: jax.Array, epoch: jax.Array, step: jax.Array) -> jax.Array:
    """The key of one replica's augmentation at (epoch, step within the epoch)."""
    k = jax.random.fold_in(replica_key, _STREAM)
    return jax.random.fold_in(jax.random.fold_in(k, epoch), step)


def check_images(input_shape: tuple[int, ...], augment: str, cutout_size: int) -> None:
    """Refuse augmentation of inputs that are not (H, W, C) images larger than the padding."""
    if augment == "none" and not cutout_size:
        return
    if len(input_shape) != 3 or min(input_shape[:2]) <= PAD:
        raise ConfigError(
            f"augment={augment!r} / cutout={cutout_size} need channels-last images (H, W, C) "
            f"with H, W > {PAD}; this dataset's examples have shape {input_shape}"
        )


def crop_flip(key: jax.Array, x: jax.Array, flip: bool = True) -> jax.Array:
    """Random crops (pad 4, reflect) and (``flip``) horizontal flips of x (N, H, W, C), any
    dtype."""
    n, h, w, _ = x.shape
    k_crop, k_flip = jax.random.split(key)
    offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * PAD + 1)
    flips = jax.random.bernoulli(k_flip, 0.5, (n,)) & flip
    padded = jnp.pad(x, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)), mode="reflect")
    rows = offsets[:, :1] + jnp.arange(h)  # (N, H)
    cols = offsets[:, 1:] + jnp.arange(w)  # (N, W)
    cols = jnp.where(flips[:, None], cols[:, ::-1], cols)
    return padded[jnp.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def cutout(key: jax.Array, x: jax.Array, size: int) -> jax.Array:
    """x (N, H, W, C) with one size x size square per image (clipped) set to zero."""
    n, h, w, _ = x.shape
    k_row, k_col = jax.random.split(key)
    top = jax.random.randint(k_row, (n, 1), 0, h) - size // 2
    left = jax.random.randint(k_col, (n, 1), 0, w) - size // 2
    r, c = jnp.arange(h), jnp.arange(w)
    in_rows = (r >= top) & (r < top + size)  # (N, H)
    in_cols = (c >= left) & (c < left + size)  # (N, W)
    hole = in_rows[:, :, None] & in_cols[:, None, :]
    return jnp.where(hole[..., None], jnp.zeros((), x.dtype), x)
