"""memjax.subsets: marginal properties of each design and chunk-independence of replica masks."""

from __future__ import annotations

import numpy as np
import pytest

from memjax.subsets import DESIGNS, WHOLE_SET_DESIGNS, balanced_block_size, block_ids, sample


def test_bernoulli_rate_and_independence():
    """Inclusion rate and the spread of per-example IN counts, as medians over 5 seeds: the
    rate within 4 binomial sds of one seed's rate; the variance of the IN counts, whose
    relative sd is sqrt(2 / (n - 1)) = 0.063 for one seed, within 20% (~6 sds of the median)."""
    n, R, ratio = 500, 200, 0.3
    rates, variances = [], []
    for seed in range(5):
        masks = sample(n, R, ratio, seed=seed, design="bernoulli")
        assert masks.shape == (R, n) and masks.dtype == bool
        assert len(np.unique(masks.sum(axis=1))) > 5, "bernoulli subsets should vary in size"
        rates.append(masks.mean())
        # each example's IN count is Binomial(R, ratio): check its spread, not just its mean
        variances.append(np.var(masks.sum(axis=0)))
    sd = np.sqrt(ratio * (1 - ratio) / (n * R))
    assert abs(np.median(rates) - ratio) < 4 * sd, rates
    assert np.median(variances) == pytest.approx(R * ratio * (1 - ratio), rel=0.2), variances


@pytest.mark.parametrize(("n", "ratio"), [(100, 0.5), (101, 0.5), (37, 0.3), (10, 0.85)])
def test_fixed_exact_count(n, ratio):
    masks = sample(n, 50, ratio, seed=2, design="fixed")
    np.testing.assert_array_equal(masks.sum(axis=1), round(ratio * n))
    assert len({m.tobytes() for m in masks}) >= 25, "replicas should get different subsets"


@pytest.mark.parametrize(
    ("ratio", "block", "k"), [(0.5, 2, 1), (0.25, 4, 1), (0.3, 10, 3), (2 / 3, 3, 2), (0.6, 5, 3)]
)
def test_balanced_blocks(ratio, block, k):
    assert balanced_block_size(ratio) == (block, k)
    n, blocks = 57, 4
    masks = sample(n, block * blocks, ratio, seed=3, design="balanced")
    per_block = masks.reshape(blocks, block, n).sum(axis=1)
    np.testing.assert_array_equal(per_block, k)  # every example IN in exactly k of each block
    # blocks are drawn independently: not all blocks are the same arrangement
    assert len({masks[i * block : (i + 1) * block].tobytes() for i in range(blocks)}) == blocks
    # marginally each replica still sees about ratio * n examples
    assert abs(masks.mean() - ratio) < 0.1


def test_balanced_half_is_complementary_pairs():
    masks = sample(64, 10, 0.5, seed=4)  # balanced is the default design
    np.testing.assert_array_equal(masks[0::2], ~masks[1::2])
    # a partial trailing block is the head of the full block
    np.testing.assert_array_equal(sample(64, 11, 0.5, seed=4)[:10], masks)


SUBSAMPLING = [d for d in DESIGNS if d not in WHOLE_SET_DESIGNS]


def test_design_all_gives_every_replica_every_example():
    masks = sample(40, 6, 1.0, seed=3, design="all", replica_ids=np.array([5, 0]))
    assert masks.shape == (2, 40) and masks.all()
    assert block_ids(np.arange(6), 1.0, "all") is None
    with pytest.raises(ValueError, match="ratio 1"):
        sample(40, 6, 0.5, design="all")
    for design in SUBSAMPLING:
        with pytest.raises(ValueError, match="strictly between 0 and 1"):
            sample(40, 6, 1.0, design=design)


@pytest.mark.parametrize("design", SUBSAMPLING)
@pytest.mark.parametrize("ratio", [0.5, 0.25])
def test_replica_mask_depends_only_on_seed_and_id(design, ratio):
    n, R = 40, 24
    full = sample(n, R, ratio, seed=9, design=design)
    rng = np.random.default_rng(0)
    for ids in (np.array([5]), np.arange(7, 19), rng.permutation(R)[:9], np.array([23, 0, 23])):
        part = sample(n, 0, ratio, seed=9, design=design, replica_ids=ids)
        np.testing.assert_array_equal(part, full[ids])
    # ids beyond a first chunk are the rows a larger run would give them
    bigger = sample(n, 2 * R, ratio, seed=9, design=design)
    np.testing.assert_array_equal(bigger[:R], full)
    other_seed = sample(n, R, ratio, seed=10, design=design)
    assert not np.array_equal(other_seed, full)


def test_designs_are_distinct_streams():
    a = sample(50, 4, 0.5, seed=0, design="fixed")
    b = sample(50, 4, 0.5, seed=0, design="balanced")
    assert not np.array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratio": 0.0}, r"ratio must lie strictly between 0 and 1, got 0.0"),
        ({"ratio": 1.0}, r"ratio must lie strictly between 0 and 1"),
        ({"ratio": -0.2}, r"ratio must lie strictly between 0 and 1"),
        ({"ratio": 1.5, "design": "bernoulli"}, r"ratio must lie strictly between 0 and 1"),
        ({"ratio": float("nan")}, r"ratio must lie strictly between 0 and 1"),
        ({"design": "poisson"}, r"unknown subset design 'poisson'"),
        ({"n": 1}, r"n \(number of training examples\) must be an integer >= 2, got 1"),
        ({"n": 0}, r"must be an integer >= 2"),
        ({"n": 10.5}, r"must be an integer >= 2"),
        ({"replicas": 0}, r"replicas must be a positive integer, got 0"),
        ({"replicas": 2.0}, r"replicas must be a positive integer"),
        ({"ratio": 1 / np.pi}, r"not a fraction k/b with b <= 1000"),
        ({"n": 10, "ratio": 0.01, "design": "fixed"}, r"gives an empty or full subset"),
        ({"replica_ids": np.array([1, -1])}, r"replica_ids must be a 1-D array of non-negative"),
        ({"replica_ids": np.zeros((2, 2))}, r"replica_ids must be a 1-D array"),
    ],
)
def test_sample_errors(kwargs, message):
    args = {"n": 20, "replicas": 4, "ratio": 0.5, "seed": 0, "design": "balanced", **kwargs}
    with pytest.raises(ValueError, match=message):
        sample(**args)
