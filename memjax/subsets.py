"""Subset designs: which training examples each replica sees, as boolean masks (R, n).

Replica r's mask is a function of (seed, design, ratio, n, r) alone (for "balanced", of r's
block), so any chunk of replicas can be generated on its own, on any host, in any order.
The design "all" (ratio 1) gives every replica every example: replicas that differ only in
initialization and data order, e.g. to retrain on a whole (reduced) training set; nothing
is held out, so memorization and the other IN-vs-OUT estimates are undefined for it.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from memjax.errors import ConfigError

__all__ = [
    "DESIGNS",
    "WHOLE_SET_DESIGNS",
    "sample",
    "balanced_block_size",
    "block_ids",
    "check_seeds",
    "validate_design",
    "loo_subset",
]

DESIGNS = ("balanced", "fixed", "bernoulli", "all", "eval", "loo")
_DESIGN_TAG = {"balanced": 1, "fixed": 2, "bernoulli": 3, "eval": 4}
# designs whose replicas all train on (nearly) the whole set: ratio 1
WHOLE_SET_DESIGNS = ("all", "loo")
MAX_BLOCK = 1000


def balanced_block_size(ratio: float) -> tuple[int, int]:
    """Smallest block b (<= 1000) and k with k/b == ratio: each example is IN in k of b replicas."""
    frac = Fraction(ratio).limit_denominator(MAX_BLOCK)
    if abs(float(frac) - ratio) > 1e-9:
        raise ConfigError(
            f"ratio {ratio} is not a fraction k/b with b <= {MAX_BLOCK}; the balanced design "
            "needs one (use design='fixed' or 'bernoulli' for arbitrary ratios)"
        )
    return frac.denominator, frac.numerator


def validate_design(ratio: float, design: str) -> None:
    """Fail early on a design name or ratio that no dataset could use."""
    if design not in DESIGNS:
        raise ConfigError(f"unknown subset design {design!r}: use one of {DESIGNS}")
    if design in WHOLE_SET_DESIGNS:
        if ratio != 1.0:
            raise ConfigError(
                f"the design {design!r} trains on the whole training set: ratio 1, got {ratio}"
            )
        return
    if not (0.0 < ratio < 1.0):
        raise ConfigError(f"subset ratio must lie strictly between 0 and 1, got {ratio}")
    if design == "balanced":
        balanced_block_size(ratio)


def check_seeds(seeds: int, design: str) -> None:
    """``seeds`` (replicas per subset) must be a positive integer, and 1 except under eval."""
    if not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ConfigError(f"seeds must be a positive integer, got {seeds!r}")
    if design != "eval" and seeds != 1:
        raise ConfigError(
            f"seeds (replicas per subset) applies to the design 'eval' only, not {design!r}"
        )


def block_ids(
    replica_ids: np.ndarray, ratio: float, design: str, seeds: int = 1
) -> np.ndarray | None:
    """Block id (R,) of each replica: the unit of independence of the estimators.

    Under ``balanced`` replica r belongs to block r // b (b from ``balanced_block_size``):
    the replicas of a block share one balancing constraint, so they are dependent. Under
    ``eval`` the ``seeds`` replicas of one subset are a block (r // seeds). Under ``fixed``,
    ``bernoulli``, ``all`` and ``loo`` every replica is independent: None.
    """
    validate_design(ratio, design)
    check_seeds(seeds, design)
    ids = np.asarray(replica_ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer) or (ids < 0).any():
        raise ConfigError("replica_ids must be a 1-D array of non-negative integers")
    if design == "eval":
        return ids.astype(np.int64) // seeds
    if design != "balanced":
        return None
    b, _ = balanced_block_size(ratio)
    return ids.astype(np.int64) // b


def _check(n: int, ratio: float, design: str) -> None:
    validate_design(ratio, design)
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ConfigError(f"n (number of training examples) must be an integer >= 2, got {n}")
    if design in ("fixed", "eval") and not 1 <= round(ratio * n) <= n - 1:
        raise ConfigError(f"ratio {ratio} of n={n} gives an empty or full subset")


def _replica_mask(n: int, ratio: float, seed: int, design: str, r: int) -> np.ndarray:
    rng = np.random.default_rng([seed, _DESIGN_TAG[design], r])
    if design == "bernoulli":
        return rng.random(n) < ratio
    mask = np.zeros(n, bool)
    mask[rng.choice(n, size=round(ratio * n), replace=False)] = True
    return mask


def _balanced_block(n: int, ratio: float, seed: int, block: int) -> np.ndarray:
    b, k = balanced_block_size(ratio)
    rng = np.random.default_rng([seed, _DESIGN_TAG["balanced"], block])
    ranks = np.argsort(rng.random((b, n)), axis=0)  # each column: a random permutation of 0..b-1
    return ranks < k


def sample(
    n: int,
    replicas: int,
    ratio: float = 0.5,
    seed: int = 0,
    design: str = "balanced",
    replica_ids: np.ndarray | None = None,
    seeds: int = 1,
) -> np.ndarray:
    """Boolean masks (len(replica_ids) or replicas, n); row j is replica ``replica_ids[j]``.

    Designs:
      * ``bernoulli``: each example IN independently with probability ``ratio``;
      * ``fixed``: exactly ``round(ratio * n)`` examples per replica (Feldman & Zhang);
      * ``balanced``: replicas come in blocks of b with ratio = k/b; within a block every
        example is IN in exactly k replicas (ratio 0.5: complementary pairs), which removes
        the IN/OUT count imbalance from the estimators' variance;
      * ``all``: every example in every replica (ratio must be 1);
      * ``eval``: subset r // ``seeds`` of ``round(ratio * n)`` examples (module docstring);
      * ``loo``: the full set or one example left out, n + 1 subsets per seed (ratio 1).
    """
    _check(n, ratio, design)
    check_seeds(seeds, design)
    if replica_ids is None:
        if not isinstance(replicas, (int, np.integer)) or replicas < 1:
            raise ConfigError(f"replicas must be a positive integer, got {replicas}")
        replica_ids = np.arange(replicas)
    ids = np.asarray(replica_ids, np.int64)
    if ids.ndim != 1 or (ids < 0).any():
        raise ConfigError("replica_ids must be a 1-D array of non-negative integers")
    if design == "all":
        return np.ones((len(ids), n), bool)
    if design == "loo":
        masks = np.ones((len(ids), n), bool)
        left_out = loo_subset(ids, n)
        masks[np.flatnonzero(left_out >= 0), left_out[left_out >= 0]] = False
        return masks
    if design == "eval":
        return np.stack([_replica_mask(n, ratio, seed, design, int(r) // seeds) for r in ids])
    if design != "balanced":
        return np.stack([_replica_mask(n, ratio, seed, design, int(r)) for r in ids])
    b, _ = balanced_block_size(ratio)
    blocks = {int(blk): _balanced_block(n, ratio, seed, int(blk)) for blk in np.unique(ids // b)}
    return np.stack([blocks[int(r) // b][int(r) % b] for r in ids])


def loo_subset(replica_ids: np.ndarray, n: int) -> np.ndarray:
    """Under ``loo``: -1 for a replica trained on the full set, else the example it leaves out."""
    return np.asarray(replica_ids, np.int64) % (n + 1) - 1
