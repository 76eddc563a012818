"""The trainer's compiled-program cache is a bounded LRU: a long-lived process that trains many
differently shaped studies keeps at most ``maxsize`` programs (and their memory mappings)."""

from __future__ import annotations

import numpy as np
import pytest

import memjax as mj
from memjax.train import PROGRAMS, ProgramCache

SPEC = mj.models.MLP(widths=(8,), parameterization="standard")


def test_lru_order_and_bound():
    cache = ProgramCache(maxsize=2)
    cache.put("a", len)
    cache.put("b", abs)
    assert cache.get("a") is len  # "a" is now the most recently used
    cache.put("c", min)
    assert list(cache) == ["a", "c"] and cache.get("b") is None
    cache.resize(1)
    assert list(cache) == ["c"]


@pytest.mark.parametrize("size", [0, -1, 1.5, True, "4"])
def test_bad_size_is_refused(size):
    with pytest.raises(ValueError, match="positive integer"):
        ProgramCache(maxsize=size)


def test_environment_sets_the_bound(monkeypatch):
    monkeypatch.setenv("MEMJAX_PROGRAM_CACHE_SIZE", "3")
    assert ProgramCache().maxsize == 3
    monkeypatch.setenv("MEMJAX_PROGRAM_CACHE_SIZE", "many")
    with pytest.raises(ValueError, match="MEMJAX_PROGRAM_CACHE_SIZE"):
        ProgramCache()


@pytest.mark.slow
def test_training_more_shapes_than_the_bound_keeps_the_bound(tiny):
    """Four epoch counts are four program shapes; with a bound of 2 the cache holds the last
    two, and the evicted first shape, trained again, gives the same outputs bit for bit."""
    bound = PROGRAMS.maxsize
    PROGRAMS.clear()
    PROGRAMS.resize(2)
    try:
        masks = mj.subsets.sample(tiny.n_train, 2, 0.5, seed=0)
        runs = {}
        for epochs in (1, 2, 3, 4):
            cfg = mj.TrainConfig(epochs=epochs, batch_size=16, optimizer="sgd", learning_rate=0.1)
            runs[epochs] = mj.train_replicas(SPEC, tiny, masks, cfg, seed=0)
            assert len(PROGRAMS) == min(epochs, 2)
        assert [key[1].epochs for key in PROGRAMS] == [3, 4]
        cfg = mj.TrainConfig(epochs=1, batch_size=16, optimizer="sgd", learning_rate=0.1)
        again = mj.train_replicas(SPEC, tiny, masks, cfg, seed=0)
        assert len(PROGRAMS) == 2
        assert [key[1].epochs for key in PROGRAMS] == [4, 1]
        np.testing.assert_array_equal(again.train_margin, runs[1].train_margin)
    finally:
        PROGRAMS.resize(bound)
