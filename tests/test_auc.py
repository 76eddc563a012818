"""The clustered AUC interval (memjax.estimators.auc) against the binormal truth of pooled
attack pairs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from memjax.estimators.auc import auc_interval, delong


def pooled_pairs(seed: int, n: int = 300, targets: int = 8):
    """(target, example) pairs as a membership-inference evaluation pools them: example i
    has its own vulnerability d_i ~ Exponential(1) shared by all its member pairs (an
    outlier is easy to attack for every target). Member score d_i + e, non-member e', with
    e, e' ~ N(0, 1): true AUC = E[Phi((d_i) / sqrt 2)] over d ~ Exponential(1)."""
    rng = np.random.default_rng(seed)
    vulnerability = rng.exponential(1.0, n)
    members = rng.random((targets, n)) < 0.5
    scores = vulnerability * members + rng.normal(size=(targets, n))
    clusters = np.broadcast_to(np.arange(n), (targets, n))
    d = np.linspace(0, 40, 400001)
    truth = np.trapezoid(stats.norm.cdf(d / np.sqrt(2)) * np.exp(-d), d)
    return members.ravel(), scores.ravel(), clusters.ravel(), truth


@pytest.mark.slow
def test_clustered_interval_covers_pooled_pairs_and_pairwise_one_does_not():
    covered = {"clustered": [], "pairs": []}
    for seed in range(200):
        labels, scores, clusters, truth = pooled_pairs(seed)
        for name, c in (("clustered", clusters), ("pairs", None)):
            low, high = auc_interval(labels, scores, clusters=c)
            covered[name].append(low <= truth <= high)
    # 200 draws: 4 binomial sds of a 95% rate are 0.06
    assert abs(np.mean(covered["clustered"]) - 0.95) < 0.06, np.mean(covered["clustered"])
    assert np.mean(covered["pairs"]) < 0.85, np.mean(covered["pairs"])


def test_singleton_clusters_give_delongs_variance():
    """With one score per cluster Obuchowski's variance is DeLong's up to the ddof of the
    two sample variances (I/(I-1) against m/(m-1), n/(n-1))."""
    rng = np.random.default_rng(1)
    labels = rng.random(400) < 0.3
    scores = rng.normal(size=(2, 400)) + labels
    auc, cov = delong(labels, scores)
    auc_c, cov_c = delong(labels, scores, clusters=np.arange(400))
    np.testing.assert_allclose(auc_c, auc)
    np.testing.assert_allclose(cov_c, cov, rtol=0.01)


def test_clusters_must_match_the_scores():
    labels = np.array([True, False, True, False])
    with pytest.raises(ValueError, match="one id per score"):
        delong(labels, np.arange(4.0), clusters=np.arange(3))
    with pytest.raises(ValueError, match="at least 2 clusters"):
        delong(labels, np.arange(4.0), clusters=np.zeros(4, int))
