"""The privacy-preservation bars: DP-SGD lowers memorization and attack success on the same
masks with its audit below the accountant's epsilon; replicas fit random labels while their
test accuracy stays at chance (Zhang et al. 2017). Trained replicas: slow, except the data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import memjax as mj
from memjax.estimators import memorization
from memjax.intervals import clopper_pearson
from memjax.privacy import audit_epsilon
from memjax.study import StudyConfig, build_dataset


def test_random_labels_are_uniform_and_exactly_counted(digits):
    noisy, flipped = mj.data.with_random_labels(digits, 1.0, seed=3)
    n, k = digits.n_train, digits.num_classes
    np.testing.assert_array_equal(flipped, noisy.y_train != digits.y_train)
    # every label redrawn uniformly: it keeps its class with probability 1/k
    low, high = clopper_pearson(int((~flipped).sum()), n, 0.999)
    assert low <= 1 / k <= high
    counts = np.bincount(noisy.y_train, minlength=k)
    assert counts.min() > 0.7 * n / k
    half, flipped_half = mj.data.with_random_labels(digits, 0.5, seed=3)
    changed_or_kept = (half.y_train != digits.y_train).sum()
    assert changed_or_kept == flipped_half.sum() <= round(0.5 * n)
    with pytest.raises(ValueError, match="random-label rate"):
        mj.data.with_random_labels(digits, 1.5)
    with pytest.raises(mj.schema.ConfigError, match="dataset.random_labels"):
        StudyConfig(
            dataset={"name": "digits", "label_noise": 0.1, "random_labels": 0.5},
            model=mj.models.MLP(),
            replicas=2,
            ratio=0.5,
            design="fixed",
            train=mj.TrainConfig(),
        )
    config_built = build_dataset({"name": "digits", "random_labels": 1.0, "noise_seed": 3})
    np.testing.assert_array_equal(config_built.y_train, noisy.y_train)


@pytest.mark.slow
def test_replicas_fit_random_labels_at_chance_test_accuracy(digits):
    noisy, _ = mj.data.with_random_labels(digits, 1.0, seed=0)
    masks = mj.subsets.sample(noisy.n_train, 4, 0.5, seed=0, design="fixed")
    cfg = mj.TrainConfig(epochs=200, batch_size=64, optimizer="adam", learning_rate=3e-3)
    spec = mj.models.MLP(widths=(1024,), parameterization="standard")
    out = mj.train_replicas(spec, noisy, masks, cfg, seed=0)
    train_acc = (out.train_correct & masks).sum(1) / masks.sum(1)
    assert (train_acc >= 0.95).all(), train_acc
    # test accuracy against the true labels is chance, 1/10: the replicas' mean within 3
    # binomial standard deviations of one replica's (their errors share the test set)
    test_acc = out.test_correct.mean(1)
    assert abs(test_acc.mean() - 0.1) < 3 * (0.1 * 0.9 / digits.n_test) ** 0.5, test_acc


def _dp_run(ds, masks, dp, seed):
    cfg = mj.TrainConfig(epochs=15, batch_size=32, optimizer="adam", learning_rate=3e-3, dp=dp)
    spec = mj.models.MLP(widths=(128,), parameterization="standard")
    return mj.train_replicas(spec, ds, masks, cfg, seed=seed)


@pytest.mark.slow
def test_strong_noise_lowers_memorization_and_attack_success(digits):
    ds = mj.data.from_arrays(
        digits.x_train[:300], digits.y_train[:300], digits.x_test[:100], digits.y_test[:100]
    )
    ds, _ = mj.data.with_label_noise(ds, 0.2, seed=0)
    masks = mj.subsets.sample(ds.n_train, 32, 0.5, seed=0, design="fixed")
    strong = mj.DPConfig(clip_norm=1.0, noise_multiplier=1.0)
    steps = 15 * math.ceil(150 / 32)
    eps = mj.privacy.dp_epsilon(1.0, 32 / 150, steps, strong.delta)
    for seed in (0, 1):
        plain, private = (_dp_run(ds, masks, dp, seed) for dp in (None, strong))
        mems = [np.nanmean(memorization(masks, o.train_correct).value) for o in (plain, private)]
        assert mems[1] < mems[0] - 0.03, mems
        attacks = [
            mj.privacy.lira_eval(masks, o.train_margin, n_targets=8) for o in (plain, private)
        ]
        tpr = [a.tpr_at_fpr[0.01] for a in attacks]
        assert tpr[1] < tpr[0], tpr
        audit = audit_epsilon(masks[:8], attacks[1].scores, strong.delta)
        assert audit.epsilon_lb <= eps
