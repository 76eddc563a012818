"""Datamodels and the linear datamodeling score against scikit-learn, scipy and simulations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.linear_model import Lasso, Ridge

from memjax.estimators import cv_folds, datamodels, lds, seed_average, spearman_columns


def linear_data(seed: int, replicas: int, n: int = 30, m: int = 6, noise: float = 0.5):
    """Outputs exactly linear in the subset indicator plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    masks = rng.random((replicas, n)) < 0.5
    w = rng.normal(size=(n, m))
    values = masks @ w + 0.3 + noise * rng.normal(size=(replicas, m))
    return masks, values, w


@pytest.mark.parametrize("lam", [0.5, 7.0])
def test_ridge_equals_sklearn(lam):
    masks, values, _ = linear_data(0, 80)
    fit = datamodels(masks, values, lam=lam, dtype="float64")
    ref = Ridge(alpha=lam).fit(masks.astype(float), values)
    np.testing.assert_allclose(fit.weights, ref.coef_.T, atol=1e-5)
    np.testing.assert_allclose(fit.bias, ref.intercept_, atol=1e-5)
    # more training examples than replicas: the same shared SVD
    masks, values, _ = linear_data(1, 20, n=50, m=3)
    fit = datamodels(masks, values, lam=lam, dtype="float64", folds=4)
    ref = Ridge(alpha=lam).fit(masks.astype(float), values)
    np.testing.assert_allclose(fit.weights, ref.coef_.T, atol=1e-5)
    # float32 (the default) stays close
    fit32 = datamodels(masks, values, lam=lam, folds=4)
    np.testing.assert_allclose(fit32.weights, ref.coef_.T, atol=1e-4)


def test_lasso_equals_sklearn_with_its_scaling():
    masks, values, _ = linear_data(2, 120, n=20, m=4)
    lam = 30.0  # ours: ||r||^2 + lam |w|_1; scikit-learn: ||r||^2 / (2R) + alpha |w|_1
    fit = datamodels(masks, values, method="lasso", lam=lam, dtype="float64")
    ref = Lasso(alpha=lam / (2 * len(masks)), tol=1e-12, max_iter=100_000)
    ref.fit(masks.astype(float), values)
    np.testing.assert_allclose(fit.weights, ref.coef_.T, atol=1e-5)
    np.testing.assert_allclose(fit.bias, ref.intercept_, atol=1e-5)
    assert (fit.weights == 0).any()  # the penalty is strong enough to zero some weights


@pytest.mark.parametrize("seed", [8, 9])
def test_lasso_float32_stops_at_its_duality_gap_near_sklearn(seed):
    """The default float32 solve, stopped at a duality gap of 1e-5 ||y||^2, lands within
    1e-3 (relative to the largest weight) of scikit-learn's float64 weights."""
    masks, values, _ = linear_data(seed, 64, n=200, m=5, noise=1.0)
    lam = 20.0
    fit = datamodels(masks, values, method="lasso", lam=lam)
    ref = Lasso(alpha=lam / (2 * len(masks)), tol=1e-12, max_iter=100_000)
    ref.fit(masks.astype(float), values)
    scale = np.abs(ref.coef_).max()
    np.testing.assert_allclose(fit.weights, ref.coef_.T, atol=1e-3 * scale)


@pytest.mark.parametrize("method", ["ridge", "lasso"])
@pytest.mark.parametrize("seed", [3, 4])
def test_linear_outputs_give_high_lds_and_recover_weights(method, seed):
    masks, values, w = linear_data(seed, 300, noise=0.3)
    fit = datamodels(masks, values, method=method)
    assert fit.lam.shape == (6,) and (fit.lam > 0).all()
    assert np.abs(fit.weights - w).max() < 0.25  # noise sd 0.3 over 300 replicas
    assert (fit.heldout_r2 > 0.9).all()
    rng = np.random.default_rng(seed + 100)
    masks_eval = rng.random((60, 30)) < 0.5
    values_eval = masks_eval @ w + 0.3 + 0.3 * rng.normal(size=(60, 6))
    score = lds(fit.weights, masks_eval, values_eval, n_boot=200)
    assert score.value > 0.95 and score.ci_low < score.value < score.ci_high


def test_cross_validation_picks_small_lam_for_clean_data_and_large_for_noise():
    masks, values, _ = linear_data(5, 100, noise=0.01)
    noise_only = np.random.default_rng(6).normal(size=(100, 6))
    clean = datamodels(masks, values)
    noisy = datamodels(masks, noise_only)
    assert clean.lam.max() < noisy.lam.min()
    assert (noisy.heldout_r2 < 0.1).all()


def test_folds_keep_blocks_whole():
    blocks = np.repeat(np.arange(10), 2)
    folds = cv_folds(20, 5, blocks)
    assert all(len(set(folds[blocks == b])) == 1 for b in range(10))
    assert sorted(np.bincount(folds)) == [4] * 5
    with pytest.raises(ValueError, match="at least 5 blocks"):
        cv_folds(8, 5, np.repeat(np.arange(4), 2))


def test_datamodels_errors_name_the_problem():
    masks, values, _ = linear_data(0, 20)
    with pytest.raises(ValueError, match="unknown datamodels method 'ols'"):
        datamodels(masks, values, method="ols")
    with pytest.raises(ValueError, match="masks must be a boolean"):
        datamodels(masks.astype(int), values)
    with pytest.raises(ValueError, match="values must be .replicas, n_test. with 20"):
        datamodels(masks, values[:5])
    with pytest.raises(ValueError, match="lam must be finite and >= 0"):
        datamodels(masks, values, lam=-1.0)


def test_lds_equals_per_example_scipy_spearman():
    rng = np.random.default_rng(7)
    attributions = rng.normal(size=(15, 8))
    masks = rng.random((40, 15)) < 0.5
    values = rng.integers(0, 3, (40, 8)).astype(float)  # ties, as correctness has them
    values[:, 3] = masks @ attributions[:, 3]
    score = lds(attributions, masks, values, n_boot=50)
    ref = [stats.spearmanr(masks @ attributions[:, j], values[:, j]).statistic for j in range(8)]
    np.testing.assert_allclose(score.per_example, ref, atol=1e-9)
    assert score.value == pytest.approx(np.mean(ref), abs=1e-9)
    assert score.per_example[3] == pytest.approx(1.0)
    # a seed axis is averaged: (M, K, n_test)
    seeds = np.stack([values - 1, values + 1], axis=1)
    np.testing.assert_allclose(lds(attributions, masks, seeds, n_boot=5).per_example, ref)
    np.testing.assert_allclose(seed_average(seeds.reshape(80, 8), 2), values)


def test_lds_bootstrap_ranks_equal_ranks_of_the_resampled_rows():
    """The bootstrap's weighted ranks are scipy's on the duplicated rows."""
    from memjax.estimators._lds import _TieGroups, _weighted_pearson

    rng = np.random.default_rng(8)
    x = rng.integers(0, 4, (12, 5)).astype(float)
    y = rng.normal(size=(12, 5))
    rows = rng.integers(0, 12, 12)
    weight = np.bincount(rows, minlength=12)[None].astype(float)
    ranks = _TieGroups(x).ranks(weight)[0]
    np.testing.assert_allclose(ranks[rows], stats.rankdata(x[rows], axis=0))
    rho = _weighted_pearson(ranks[None], _TieGroups(y).ranks(weight), weight)[0]
    np.testing.assert_allclose(rho, spearman_columns(x[rows], y[rows]), atol=1e-12)


def simulated_lds(seed: int, subsets: int, examples: int, n: int = 20):
    """Attributions = true weights + error; outputs linear in the indicator plus noise."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, examples))
    attributions = w + 0.7 * rng.normal(size=(n, examples))
    masks = rng.random((subsets, n)) < 0.5
    return attributions, masks, masks @ w + 2.0 * rng.normal(size=(subsets, examples))


def lds_coverage(repetitions: int) -> tuple[float, float]:
    truth = np.nanmean(
        spearman_columns(*(lambda a, x, y: (x @ a, y))(*simulated_lds(0, 4000, 400)))
    )
    hits = [
        (r.ci_low <= truth <= r.ci_high)
        for r in (
            lds(*simulated_lds(s + 1, 40, 20), n_boot=200, seed=s) for s in range(repetitions)
        )
    ]
    return float(np.mean(hits)), truth


def test_lds_interval_covers_the_truth():
    coverage, _ = lds_coverage(40)
    assert coverage >= 0.85  # nominal 0.95; 300 repetitions (the slow test) measured 0.96


@pytest.mark.slow
def test_lds_interval_coverage_many_repetitions():
    coverage, _ = lds_coverage(300)
    assert 0.92 <= coverage <= 0.995


def test_lds_errors_name_the_problem():
    a, masks, values = simulated_lds(0, 10, 4)
    with pytest.raises(ValueError, match="masks_eval must be a boolean .subsets, n_train=20."):
        lds(a, masks[:, :5], values)
    with pytest.raises(ValueError, match="values_eval must be .subsets=10, n_test=4."):
        lds(a, masks, values[:, :2])
    with pytest.raises(ValueError, match="one block id per evaluation subset"):
        lds(a, masks, values, blocks=np.arange(3))
    with pytest.raises(ValueError, match="undefined for every test example"):
        lds(a, masks, np.ones_like(values))
