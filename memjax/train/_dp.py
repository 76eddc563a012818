"""DP-SGD in the replica trainer (Abadi et al. 2016): clipped per-example gradients plus noise.

``TrainConfig(dp=DPConfig(clip_norm=C, noise_multiplier=sigma))`` makes every replica's step

    g = (sum_i min(1, C / ||g_i||) g_i + N(0, (sigma C)^2 I)) / B

over the examples i of its batch, g_i the example's gradient over all parameter leaves
(global L2 norm), computed by ``vmap(grad)`` inside the replica's step. The clipped sum is
taken as the gradient of the batch loss reweighted by the (constant) clip factors, one more
backward pass: the same sum, and where no gradient is clipped (factors exactly 1) and
sigma = 0, exactly the ordinary step's arithmetic, so such a run reproduces ordinary SGD bit
for bit. The noise comes from a key that is a function of (seed, replica, epoch, step) only.

Batches (``DPConfig.sampling``):
  * ``"poisson"`` (the default, what the accountant assumes): at every step each example of
    the replica's subset (size m) joins the batch independently with rate q = min(1, b / m)
    (b the batch size; full batch: q = 1); an epoch keeps the ordinary step count. B is the
    EXPECTED batch size q m (the actual count would leak membership), the standard choice
    (Opacus, TF Privacy). Batches have a static cap (``poisson_cap``) at which the
    probability that a step draws more examples is below ``TRUNCATION`` (a Chernoff bound);
    the examples beyond the cap would be left out.
  * ``"shuffle"``: the ordinary batches (a fresh permutation per epoch) and B = the batch's
    example count. The accountant's Poisson assumption then does not strictly hold (the
    reported epsilon is the customary approximation, not a proven bound).

Per-example gradients need a per-example loss: models whose output for one example depends
on the rest of its batch (BatchNorm in training mode) have none and must not be used here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import jax
import jax.numpy as jnp

from memjax import schema

__all__ = [
    "DPConfig",
    "SAMPLINGS",
    "poisson_cap",
    "poisson_batches",
    "step_inputs",
    "clip_factors",
    "private_gradient",
]

SAMPLINGS = ("poisson", "shuffle")
TRUNCATION = 1e-12  # bound on the probability that one Poisson batch exceeds its cap
_SAMPLE_TAG = 0x5053  # fold_in tags separating a step's sampling key from its noise key
_NOISE_TAG = 0x4E53


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings: per-example clip norm C > 0, noise multiplier sigma >= 0 (noise std
    sigma C on the clipped sum), the delta at which epsilon is reported, and the batch
    sampling ("poisson" or "shuffle", see the module docstring)."""

    clip_norm: float
    noise_multiplier: float
    delta: float = 1e-5
    sampling: str = "poisson"

    def __post_init__(self) -> None:
        checked = {
            "clip_norm": schema.number(self.clip_norm, "clip_norm", 0.0, low_open=True),
            "noise_multiplier": schema.number(self.noise_multiplier, "noise_multiplier", 0.0),
            "delta": schema.number(self.delta, "delta", 0.0, 1.0, True, True),
            "sampling": schema.choice(self.sampling, "sampling", SAMPLINGS),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, setting: str = "dp") -> DPConfig:
        """From a config section (``dp: {clip_norm: 1.0, noise_multiplier: 1.1}``)."""
        d = schema.section(
            d, setting, [f.name for f in fields(cls)], required=("clip_norm", "noise_multiplier")
        )
        try:
            return cls(**d)
        except schema.SettingError as err:
            raise err.within(setting) from None


def poisson_cap(batch: int, n: int) -> int:
    """Static size of a Poisson batch of expected size ``batch``: the smallest c with
    P(count > c) <= TRUNCATION by the Chernoff bound P(X >= c) <= e^-mu (e mu / c)^c, which
    holds for any sum of independent Bernoullis of mean mu (here mu <= batch); at most n."""
    mu = float(batch)
    c = batch + 1
    while c < n and (c * math.log(c / (math.e * mu)) + mu) < -math.log(TRUNCATION):
        c += 1
    return min(c, n)


def _steps(size: jax.Array, batch: int, full_batch: bool, drop_last: bool) -> jax.Array:
    """A replica's steps per epoch (as memjax.train.steps_per_epoch)."""
    if full_batch:
        return jnp.ones_like(size)
    return size // batch if drop_last else -(-size // batch)


def _step_key(epoch_key: jax.Array, tag: int, step: jax.Array) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(epoch_key, tag), step)


def poisson_batches(
    epoch_key: jax.Array,
    mask: jax.Array,
    n_steps: int,
    batch: int,
    full_batch: bool,
    drop_last: bool,
) -> tuple[jax.Array, jax.Array]:
    """One replica's Poisson batches for one epoch: indices (n_steps, cap) int32 and valid
    (n_steps, cap) float32 (1 for a drawn example, 0 for padding and for the steps past the
    replica's own step count). Step j's draw depends on (epoch key, j) only."""
    n = mask.shape[0]
    cap = poisson_cap(batch, n)
    size = jnp.sum(mask)
    rate = jnp.minimum(1.0, batch / jnp.maximum(size, 1))
    steps = _steps(size, batch, full_batch, drop_last)

    def one(j):
        drawn = mask & (jax.random.uniform(_step_key(epoch_key, _SAMPLE_TAG, j), (n,)) < rate)
        idx = jnp.nonzero(drawn, size=cap, fill_value=0)[0]
        valid = (jnp.arange(cap) < jnp.sum(drawn)) & (j < steps)
        return idx.astype(jnp.int32), valid.astype(jnp.float32)

    return jax.vmap(one)(jnp.arange(n_steps))


def step_inputs(
    epoch_keys: jax.Array,
    masks: jax.Array,
    n_steps: int,
    batch: int,
    full_batch: bool,
    drop_last: bool,
) -> tuple[jax.Array, jax.Array]:
    """Per-step DP inputs of a group for one epoch, step-major for the trainer's scan: noise
    keys (n_steps, G, 2) and the expected Poisson batch size min(b, m) (n_steps, G), 0 at
    the steps past a replica's own step count (the only steps a Poisson replica skips: one
    whose draw is empty still takes its noisy step)."""
    keys = jax.vmap(lambda k: jax.vmap(lambda j: _step_key(k, _NOISE_TAG, j))(jnp.arange(n_steps)))(
        epoch_keys
    )
    sizes = jnp.sum(masks, axis=1)
    live = jnp.arange(n_steps)[:, None] < _steps(sizes, batch, full_batch, drop_last)[None]
    expected = jnp.where(live, jnp.minimum(batch, sizes)[None], 0).astype(jnp.float32)
    return keys.swapaxes(0, 1), expected


def clip_factors(per_example_grads, clip_norm: float) -> jax.Array:
    """min(1, C / ||g_i||) (B,) over the global L2 norm of each example's gradient tree
    (leaves (B, ...)); exactly 1 where ||g_i|| <= C."""
    sq = sum(
        jnp.sum(jnp.reshape(g, (g.shape[0], -1)) ** 2, axis=1)
        for g in jax.tree.leaves(per_example_grads)
    )
    norm = jnp.sqrt(sq)
    return jnp.where(norm > clip_norm, clip_norm / jnp.maximum(norm, 1e-30), 1.0)


def private_gradient(
    batch_loss: Callable,
    example_loss: Callable,
    params,
    xb: jax.Array,
    yb: jax.Array,
    valid: jax.Array,
    key: jax.Array,
    expected: jax.Array,
    dp: DPConfig,
):
    """One replica's DP-SGD gradient for a batch (b, ...) and whether each example was right.

    ``batch_loss(p, weight (b,), denom)`` -> (sum_i weight_i loss_i / denom, correct (b,)) is
    the trainer's batch loss; ``example_loss(p, x_i, y_i)`` one example's loss. ``valid``
    (b,) marks real examples; ``expected`` is the expected batch size (Poisson sampling).
    """
    per_example = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))(params, xb, yb)
    weight = valid * jax.lax.stop_gradient(clip_factors(per_example, dp.clip_norm))
    denom = expected if dp.sampling == "poisson" else jnp.maximum(jnp.sum(valid), 1.0)
    (_, correct), grads = jax.value_and_grad(batch_loss, has_aux=True)(params, weight, denom)
    if dp.noise_multiplier > 0:
        leaves, tree = jax.tree.flatten(grads)
        keys = jax.random.split(key, len(leaves))
        std = dp.noise_multiplier * dp.clip_norm / denom
        leaves = [
            g + std * jax.random.normal(k, g.shape, g.dtype)
            for g, k in zip(leaves, keys, strict=True)
        ]
        grads = jax.tree.unflatten(tree, leaves)
    return grads, correct
