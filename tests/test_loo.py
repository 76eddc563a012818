"""Exact leave-one-out: the design, the estimators against brute force, and a study end to end."""

from __future__ import annotations

import os

import numpy as np
import pytest

import memjax as mj
from memjax import data, subsets
from memjax.estimators import loo_influence, loo_memorization
from memjax.study import StudyConfig, run_study


def test_loo_design_trains_the_full_set_and_every_one_removed_set_per_seed():
    n, seeds = 7, 3
    masks = subsets.sample(n, (n + 1) * seeds, 1.0, seed=0, design="loo")
    for k in range(seeds):
        per_seed = masks[k * (n + 1) : (k + 1) * (n + 1)]
        assert per_seed[0].all()
        np.testing.assert_array_equal(~per_seed[1:], np.eye(n, dtype=bool))
    part = subsets.sample(n, 0, 1.0, design="loo", replica_ids=np.array([17, 3]))
    np.testing.assert_array_equal(part, masks[[17, 3]])
    assert subsets.block_ids(np.arange(8), 1.0, "loo") is None
    with pytest.raises(ValueError, match="'loo' trains on the whole training set: ratio 1"):
        subsets.sample(n, 8, 0.5, design="loo")


def test_eval_design_gives_each_subset_its_seeds():
    masks = subsets.sample(30, 12, 0.4, seed=2, design="eval", seeds=3)
    assert (masks.sum(1) == 12).all()
    for m in range(4):
        assert (masks[3 * m : 3 * m + 3] == masks[3 * m]).all()
    assert len({row.tobytes() for row in masks[::3]}) == 4
    np.testing.assert_array_equal(
        subsets.block_ids(np.arange(12), 0.4, "eval", seeds=3), np.arange(12) // 3
    )
    with pytest.raises(ValueError, match="applies to the design 'eval' only"):
        subsets.sample(30, 4, 0.5, design="fixed", seeds=2)


def test_loo_estimators_equal_brute_force():
    rng = np.random.default_rng(0)
    n, seeds = 5, 4
    masks = subsets.sample(n, (n + 1) * seeds, 1.0, design="loo")
    values = rng.normal(size=(len(masks), n))
    test = rng.normal(size=(len(masks), 3))
    full = masks.all(axis=1)
    mem = loo_memorization(masks, values)
    infl = loo_influence(masks, test)
    for i in range(n):
        out = ~masks[:, i]
        assert mem.value[i] == pytest.approx(values[full, i].mean() - values[out, i].mean())
        se = np.sqrt(values[full, i].var(ddof=1) / seeds + values[out, i].var(ddof=1) / seeds)
        assert mem.stderr[i] == pytest.approx(se)
        np.testing.assert_allclose(infl.value[i], test[full].mean(0) - test[out].mean(0))
    np.testing.assert_array_equal(mem.n_out, np.full(n, seeds))
    with pytest.raises(ValueError, match="no replica trained on the full set"):
        loo_memorization(masks[~full], values[~full])


def test_eval_and_loo_in_study_configs():
    base = {
        "dataset": "digits",
        "model": {"type": "MLP", "widths": [8]},
        "train": {"epochs": 1},
    }
    cfg = StudyConfig.from_dict({**base, "subsets": {"replicas": 6, "design": "loo"}})
    assert cfg.ratio == 1.0 and "seeds" not in cfg.result_dict()["subsets"]
    cfg = StudyConfig.from_dict(
        {**base, "subsets": {"replicas": 6, "design": "eval", "seeds": 3, "ratio": 0.5}}
    )
    assert cfg.result_dict()["subsets"]["seeds"] == 3
    with pytest.raises(ValueError, match="subsets.replicas.*multiple of subsets.seeds"):
        StudyConfig.from_dict({**base, "subsets": {"replicas": 7, "design": "eval", "seeds": 3}})
    with pytest.raises(ValueError, match="subsets.seeds.*'eval' only"):
        StudyConfig.from_dict({**base, "subsets": {"replicas": 8, "seeds": 2}})


@pytest.fixture(scope="module")
def flipped_npz(tmp_path_factory):
    """20 digits of classes 0 and 1, the label of training example 0 flipped."""
    d = data.load("digits")
    keep = np.flatnonzero(d.y_train < 2)[:20]
    test = np.flatnonzero(d.y_test < 2)[:20]
    y = d.y_train[keep].copy()
    y[0] = 1 - y[0]
    path = tmp_path_factory.mktemp("loo") / "flipped.npz"
    np.savez(
        path,
        x_train=d.x_train[keep],
        y_train=y,
        x_test=d.x_test[test],
        y_test=d.y_test[test],
        num_classes=2,
    )
    return str(path)


def test_loo_study_memorizes_a_flipped_label(flipped_npz, tmp_path):
    seeds, n = 3, 20
    cfg = StudyConfig.from_dict(
        {
            "name": "loo",
            "dataset": flipped_npz,
            "model": {"type": "MLP", "widths": [32]},
            "subsets": {"replicas": (n + 1) * seeds, "design": "loo"},
            "train": {
                "epochs": 60,
                "batch_size": None,
                "optimizer": "adam",
                "learning_rate": 0.05,
                "vectorize": "vmap",
            },
        }
    )
    run_study(cfg, str(tmp_path / "s"), progress=False)
    study = mj.open_study(str(tmp_path / "s"), data_root=os.path.dirname(flipped_npz))
    masks = study.masks
    assert len(masks) == (n + 1) * seeds and len({r.tobytes() for r in masks}) == n + 1
    mem = study.memorization
    assert mem.value[0] > 0.5 and mem.ci_low[0] > 0  # the flipped example
    assert np.median(mem.value[1:]) == 0  # clean examples: fitted with or without them
    infl = study.influence
    assert infl.value.shape == (n, 20) and np.isfinite(infl.value).all()
