"""Control variates for memorization and influence (memjax.estimators (control variates)).

Simulated data with a known truth: per-replica values v_ri = a_i m_ri + sum_j W_ij m_rj +
s_i (sqrt(rho) z_ri + sqrt(1 - rho) e_ri) and a control c_ri = b_i m_ri + 0.8 sum_j W_ij m_rj
+ s_i z_ri sharing the cross-example effects and the noise z (as a kernel model shares a
network's mask and initialization). Under the balanced design at ratio 1/2 and the bernoulli
design every other example is IN with probability 1/2 whether i is IN or not, so the true
memorization is a_i (W has a zero diagonal). Also: the estimator against a brute-force loop
with explicit covariances, and specific errors.
"""

from __future__ import annotations

import numpy as np
import pytest

import memjax as mj
from memjax.estimators import KernelControl, fold_ids
from memjax.subsets import block_ids, sample

N = 30  # training examples
R = 32  # replicas per repetition
EXTRA = 10  # extra control replicas per replica
REPS = 150


def _world(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.3, (N, N)) / np.sqrt(N) * (1 - np.eye(N))
    return {
        "a": rng.normal(0.5, 0.3, N),
        "b": rng.normal(0.4, 0.3, N),
        "W": w,
        "s": rng.uniform(0.5, 1.5, N),
    }


def _draw(w: dict, masks: np.ndarray, rng: np.random.Generator, rho: float):
    m = masks.astype(float)
    z = rng.standard_normal(m.shape) * w["s"]
    e = rng.standard_normal(m.shape) * w["s"]
    cross = m @ w["W"].T
    v = w["a"] * m + cross + np.sqrt(rho) * z + np.sqrt(1 - rho) * e
    return v, w["b"] * m + 0.8 * cross + z


def _repetition(w: dict, design: str, seed: int, rho: float):
    rng = np.random.default_rng([seed, 7])
    ids, extra_ids = np.arange(R), np.arange(R, R + EXTRA * R)
    masks = sample(N, R, 0.5, seed, design)
    extra_masks = sample(N, 0, 0.5, seed, design, replica_ids=extra_ids)
    v, c = _draw(w, masks, rng, rho)
    _, extra_c = _draw(w, extra_masks, rng, rho)
    control = KernelControl(c, extra_masks, extra_c, block_ids(extra_ids, 0.5, design))
    blocks = block_ids(ids, 0.5, design)
    cv = mj.estimators.memorization(masks, v, blocks, control=control)
    return cv, mj.estimators.memorization(masks, v, blocks)


@pytest.mark.parametrize(
    "design, rho, world", [("balanced", 0.9, 1), ("bernoulli", 0.9, 2), ("balanced", 0.0, 3)]
)
def test_control_variate_is_unbiased_covers_and_saves_replicas(design, rho, world):
    w = _world(world)
    runs = [_repetition(w, design, seed, rho) for seed in range(REPS)]
    err = np.array([cv.value - w["a"] for cv, _ in runs])  # (REPS, N)
    plain = np.array([p.value - w["a"] for _, p in runs])
    ok = np.isfinite(err).all(axis=1) & np.isfinite(plain).all(axis=1)
    err, plain = err[ok], plain[ok]
    assert ok.mean() > 0.9
    # unbiased: the mean error over repetitions is within 2 standard errors, pooled over
    # examples and per example (95% expected within; 85% asked)
    per_rep = err.mean(axis=1)
    assert abs(per_rep.mean()) < 2 * per_rep.std(ddof=1) / np.sqrt(len(per_rep))
    z = err.mean(0) / (err.std(0, ddof=1) / np.sqrt(len(err)))
    assert (np.abs(z) < 2).mean() >= 0.85
    # the interval covers at the nominal 95%
    covered = np.array([(cv.ci_low <= w["a"]) & (w["a"] <= cv.ci_high) for cv, _ in runs]).mean()
    assert 0.93 <= covered <= 0.97, covered
    # the stated standard error is the real spread, and the variance falls by ~1 - rho^2
    # (rho = 0.9: ~0.2) where the control shares the noise; with nothing shared it costs
    # little (the noise of estimating beta)
    stated = np.mean([np.nanmean(cv.stderr**2) for cv, _ in runs])
    assert 0.8 < err.var(0).mean() / stated < 1.25
    ratio = err.var(0).mean() / plain.var(0).mean()
    predicted = np.mean([np.nanmean(cv.variance_ratio) for cv, _ in runs])
    if rho > 0:
        assert ratio < 0.35 and predicted < 0.35, (ratio, predicted)
    else:
        assert 0.9 < ratio < 1.3 and 0.9 < predicted < 1.3, (ratio, predicted)


def _welch_parts(mask_col: np.ndarray, v: np.ndarray, c: np.ndarray):
    """Brute force for one example: IN-minus-OUT of v and c, their variances, covariance."""
    parts = []
    for x in (v, c):
        parts.append(x[mask_col].mean() - x[~mask_col].mean())
    var = []
    for x, y in ((v, v), (c, c), (v, c)):
        total = 0.0
        for side in (mask_col, ~mask_col):
            total += np.cov(x[side], y[side])[0, 1] / side.sum()
        var.append(total)
    return (*parts, *var)


def _brute_force(masks, v, c, extra_masks, extra_c, i_mask, j):
    """Cross-fitted control-variate estimate (value, stderr) of column j of v/c with mask
    column i_mask, independent replicas, two folds of alternating replicas."""
    folds = [np.arange(len(masks))[k::2] for k in range(2)]
    mu, _, mu_var, _, _ = _welch_parts(extra_masks[:, i_mask], extra_c[:, j], extra_c[:, j])
    fold = [_welch_parts(masks[f, i_mask], v[f, j], c[f, j]) for f in folds]
    units = np.array([len(f) for f in folds])
    total = units.sum()
    value = var = beta_mean = 0.0
    for k in range(2):
        other = fold[1 - k]
        beta = units[1 - k] * other[4] / (units[1 - k] * other[3] + total * mu_var)
        ev, ec, vv, vc, cov = fold[k]
        w = units[k] / total
        value += w * (ev - beta * ec)
        var += w**2 * (vv - 2 * beta * cov + beta**2 * vc)
        beta_mean += w * beta
    return value + beta_mean * mu, np.sqrt(var + beta_mean**2 * mu_var)


def test_memorization_and_influence_match_a_brute_force_loop():
    rng = np.random.default_rng(0)
    n, m, r = 6, 4, 40
    masks = rng.random((r, n)) < 0.5
    extra_masks = rng.random((200, n)) < 0.5
    v = rng.normal(size=(r, n)) + masks
    c = 0.7 * v + rng.normal(size=(r, n))
    extra_c = rng.normal(size=(200, n)) + 0.7 * extra_masks
    est = mj.estimators.memorization(masks, v, control=KernelControl(c, extra_masks, extra_c))
    for i in range(n):
        value, stderr = _brute_force(masks, v, c, extra_masks, extra_c, i, i)
        assert est.value[i] == pytest.approx(value, abs=1e-9)
        assert est.stderr[i] == pytest.approx(stderr, abs=1e-9)
    tv = rng.normal(size=(r, m)) + masks[:, :m]
    tc = tv + rng.normal(size=(r, m))
    extra_tc = rng.normal(size=(200, m))
    infl = mj.estimators.influence(
        masks, tv, control=KernelControl(tc, extra_masks, extra_tc), tile_size=3
    )
    for i in range(n):
        for j in range(m):
            value, stderr = _brute_force(masks, tv, tc, extra_masks, extra_tc, i, j)
            assert infl.value[i, j] == pytest.approx(value, abs=1e-5)
            assert infl.stderr[i, j] == pytest.approx(stderr, rel=1e-3)
    assert infl.value.shape == (n, m) and infl.plain_stderr.shape == (n, m)
    plain = mj.estimators.influence(masks, tv)
    np.testing.assert_allclose(infl.plain_stderr, plain.stderr)
    np.testing.assert_allclose(
        infl.replicas_saved, 1 - (infl.stderr / plain.stderr.astype(np.float64)) ** 2, rtol=1e-6
    )


def test_folds_keep_blocks_whole():
    blocks = np.repeat(np.arange(20), 2)
    folds = fold_ids(blocks, 40, 2)
    assert sorted(np.concatenate(folds).tolist()) == list(range(40))
    for f in folds:
        assert set(blocks[f]).isdisjoint(set(blocks[np.setdiff1d(np.arange(40), f)]))
    with pytest.raises(ValueError, match="needs at least 16 blocks, got 10"):
        fold_ids(blocks[:20], 20, 2)


def test_bad_controls_fail_with_specific_errors():
    rng = np.random.default_rng(0)
    masks = rng.random((40, 5)) < 0.5
    v = rng.normal(size=(40, 5))
    extra = rng.random((80, 5)) < 0.5
    ev = rng.normal(size=(80, 5))
    with pytest.raises(ValueError, match="same replicas and examples"):
        mj.estimators.memorization(masks, v, control=KernelControl(v[:-1], extra, ev))
    with pytest.raises(ValueError, match="extra_values must be"):
        mj.estimators.memorization(masks, v, control=KernelControl(v, extra, ev[:, :3]))
    with pytest.raises(ValueError, match="one row per extra mask"):
        mj.estimators.memorization(masks, v, control=KernelControl(v, extra, ev[:50]))
    with pytest.raises(ValueError, match="needs at least 32 independent replicas, got 20"):
        mj.estimators.memorization(masks[:20], v[:20], control=KernelControl(v[:20], extra, ev))
    with pytest.raises(ValueError, match="folds >= 2"):
        mj.estimators.memorization(masks, v, control=KernelControl(v, extra, ev, folds=1))
    bad = v.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        mj.estimators.memorization(masks, v, control=KernelControl(bad, extra, ev))
