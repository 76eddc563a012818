"""Membership inference: memjax.privacy against a plain, per-target implementation of the
paper's equations (scipy.stats.norm + sklearn ROC), on simulated and on trained replicas."""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

import memjax as mj
from memjax import privacy
from memjax.estimators import memorization
from memjax.store import open_store
from memjax.study import StudyConfig, build_dataset, run_study

FPRS = (1e-5, 1e-3, 1e-2)
MODES = [("online", False), ("online", True), ("offline", False), ("offline", True)]


def reference_lira(masks, scores, n_targets, mode, fixed_variance):
    """Carlini et al. (2022), eq. for online / offline LiRA, one target at a time."""
    rows = []
    for t in range(n_targets):
        shadow = np.arange(len(masks)) != t
        s, m = scores[shadow], masks[shadow]
        s_in, s_out = np.where(m, s, np.nan), np.where(~m, s, np.nan)
        mu_in, mu_out = np.nanmean(s_in, axis=0), np.nanmean(s_out, axis=0)
        sd_in, sd_out = np.nanstd(s_in, axis=0), np.nanstd(s_out, axis=0)
        if fixed_variance:
            sd_in = np.full_like(sd_in, np.sqrt(np.mean(sd_in**2)))
            sd_out = np.full_like(sd_out, np.sqrt(np.mean(sd_out**2)))
        x = scores[t]
        if mode == "online":
            rows.append(norm.logpdf(x, mu_in, sd_in) - norm.logpdf(x, mu_out, sd_out))
        else:  # 1 - Pr[Z > x], Z ~ N(mu_out, sd_out), on a log scale (same ranking)
            rows.append(-norm.logsf(x, mu_out, sd_out))
    return np.array(rows)


def reference_roc(labels, scores):
    fpr, tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    return roc_auc_score(labels, scores), {a: tpr[fpr <= a].max() for a in FPRS}


def simulated(R=48, n=600, n_outliers=0, seed=0):
    """Logit-scaled confidences with per-example difficulty and a small membership effect;
    outliers are confidently right when IN and confidently wrong when OUT."""
    rng = np.random.default_rng(seed)
    masks = mj.subsets.sample(n, R, 0.5, seed=seed)
    centre = rng.normal(3.0, 2.0, n)
    effect = rng.exponential(0.4, n)
    spread = rng.uniform(0.5, 1.5, n)
    scores = centre + effect * masks + spread * rng.standard_normal((R, n))
    out = np.zeros(n, bool)
    out[:n_outliers] = True
    planted = np.where(masks, rng.normal(3.0, 0.5, (R, n)), rng.normal(-4.0, 1.0, (R, n)))
    return masks, np.where(out, planted, scores), out


def check_against_reference(masks, scores, n_targets):
    for mode, fixed in MODES:
        res = privacy.lira_eval(masks, scores, n_targets, mode, fixed_variance=fixed)
        ref = reference_lira(masks, scores, n_targets, mode, fixed)
        mine = res.scores if mode == "online" else -norm.logsf(res.scores)
        np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=1e-6)
        labels = masks[:n_targets].ravel()
        auc, tprs = reference_roc(labels, ref.ravel())
        assert abs(res.auc - auc) < 0.005, (mode, fixed, res.auc, auc)
        for a in FPRS:
            assert res.tpr_at_fpr[a] == pytest.approx(tprs[a], rel=0.1, abs=1e-9), (mode, a)


def test_lira_matches_paper_equations_on_simulated_scores():
    masks, scores, _ = simulated()
    check_against_reference(masks, scores, n_targets=8)


def test_blocks_of_examples_change_nothing(monkeypatch):
    masks, scores, _ = simulated(R=20, n=100)
    whole = [privacy.lira_eval(masks, scores, 6, m, f).scores for m, f in MODES]
    monkeypatch.setattr(privacy, "BLOCK", 7)
    for (m, f), expected in zip(MODES, whole, strict=True):
        np.testing.assert_allclose(privacy.lira_eval(masks, scores, 6, m, f).scores, expected)


def test_roc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    labels = rng.random(3000) < 0.3
    scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # many ties
    fpr, tpr, auc = privacy.roc_curve(labels, scores)
    assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    sk_fpr, sk_tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    for a in (0.0, 0.01, 0.2, 1.0):
        assert privacy.tpr_at(fpr, tpr, [a])[0] == sk_tpr[sk_fpr <= a].max()


def test_per_example_vulnerability_is_in_minus_out_score_over_targets():
    masks, scores, _ = simulated(R=20, n=50)
    res = privacy.lira_eval(masks, scores, n_targets=12)
    for i in range(50):
        t_in = masks[:12, i]
        gap = res.scores[t_in, i].mean() - res.scores[~t_in, i].mean()
        assert res.per_example.value[i] == pytest.approx(gap)


def test_loss_attack_is_a_global_threshold_on_the_loss():
    masks, scores, _ = simulated(R=30, n=400)
    losses = np.log1p(np.exp(-scores))
    res = privacy.loss_attack_eval(masks, losses, n_targets=10)
    labels = masks[:10].ravel()
    auc, tprs = reference_roc(labels, -losses[:10].ravel())
    assert res.auc == pytest.approx(auc, abs=1e-12)
    assert res.tpr_at_fpr == pytest.approx(tprs)
    # Yeom et al.'s threshold: the shadows' mean training loss
    fpr0 = []
    tpr0 = []
    for t in range(10):
        shadow = np.arange(30) != t
        thr = losses[shadow][masks[shadow]].mean()
        flagged = losses[t] <= thr
        fpr0.append(flagged[~masks[t]])
        tpr0.append(flagged[masks[t]])
    assert res.operating_point == pytest.approx(
        (np.concatenate(fpr0).mean(), np.concatenate(tpr0).mean())
    )
    # per-example vulnerability: the IN-minus-OUT gap of -loss over the targets
    np.testing.assert_allclose(res.per_example.value, memorization(masks[:10], -losses[:10]).value)


def test_pairs_with_too_few_shadows_are_excluded_and_counted():
    masks = mj.subsets.sample(200, 6, 0.5, seed=3, design="bernoulli")
    scores = np.random.default_rng(0).normal(masks * 1.0, 1.0)
    res = privacy.lira_eval(masks, scores, n_targets=6, mode="online")
    expected = 0
    for t in range(6):
        shadow = np.arange(6) != t
        n_in = masks[shadow].sum(0)
        expected += int(((n_in < 2) | (5 - n_in < 2)).sum())
    assert expected > 0
    assert res.n_excluded == expected
    assert res.n_pairs == 6 * 200 - expected
    assert np.isnan(res.scores).sum() == expected
    # fixed variance needs one shadow per side only
    fixed = privacy.lira_eval(masks, scores, n_targets=6, mode="online", fixed_variance=True)
    assert fixed.n_excluded < expected


def test_bad_input_fails_early():
    masks, scores, _ = simulated(R=10, n=30)
    with pytest.raises(ValueError, match="n_targets"):
        privacy.lira_eval(masks, scores, n_targets=11)
    with pytest.raises(ValueError, match="n_targets"):
        privacy.lira_eval(masks, scores, n_targets=1)
    with pytest.raises(ValueError, match="shape"):
        privacy.lira_eval(masks, scores[:, :-1], n_targets=4)
    bad = scores.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        privacy.lira_eval(masks, bad, n_targets=4)
    with pytest.raises(ValueError, match="boolean"):
        privacy.lira_eval(masks.astype(int), scores, n_targets=4)
    with pytest.raises(ValueError, match="mode"):
        privacy.lira_eval(masks, scores, n_targets=4, mode="two-sided")
    with pytest.raises(ValueError, match="too few shadow models"):
        privacy.lira_eval(masks[:2], scores[:2], n_targets=2)
    with pytest.raises(ValueError, match="both classes"):
        privacy.roc_curve(np.ones(5, bool), np.arange(5.0))


def subgroup_tpr(res, masks, group, alpha):
    """TPR on the member pairs of ``group`` at the pooled threshold with FPR <= alpha."""
    members = masks[: len(res.scores)]
    neg = np.sort(res.scores[~members & np.isfinite(res.scores)])[::-1]
    threshold = neg[int(np.floor(alpha * len(neg)))]
    return float((res.scores[members & group[None]] > threshold).mean())


def test_planted_outliers_found_by_lira_not_by_loss_attack():
    masks, scores, outlier = simulated(R=64, n=1000, n_outliers=20)
    losses = np.log1p(np.exp(-scores))
    lira = privacy.lira_eval(masks, scores, n_targets=16)
    loss = privacy.loss_attack_eval(masks, losses, n_targets=16)
    assert subgroup_tpr(lira, masks, outlier, 1e-3) > 0.9
    assert subgroup_tpr(loss, masks, outlier, 1e-3) < 0.1
    mem = memorization(masks, scores > 0).value
    assert mem[outlier].min() > 0.9 > np.quantile(mem[~outlier], 0.99)
    top = np.argsort(-lira.per_example.value)[:20]
    assert outlier[top].all()


@pytest.fixture(scope="module")
def longtail_replicas(tmp_path_factory):
    """A small long-tailed study run into a store (singleton subpopulations are the planted
    outliers); the tests read the stored arrays back."""
    cfg = StudyConfig.from_dict(
        {
            "name": "longtail-privacy",
            "dataset": {"name": "longtail", "n_train": 600, "n_test": 100, "seed": 0},
            "model": {"type": "MLP", "widths": [128], "parameterization": "standard"},
            "subsets": {"replicas": 32, "ratio": 0.5},
            "train": {"epochs": 40, "batch_size": 128, "optimizer": "adam", "learning_rate": 0.01},
            "seed": 0,
        }
    )
    path = str(tmp_path_factory.mktemp("longtail") / "study")
    run_study(cfg, path, progress=False)
    store = open_store(path)
    return build_dataset(cfg.dataset), store.masks(), store.load_outputs()


@pytest.mark.slow
def test_lira_matches_paper_equations_on_trained_replicas(longtail_replicas):
    _, masks, out = longtail_replicas
    check_against_reference(masks, out.train_margin.astype(np.float64), n_targets=16)


@pytest.mark.slow
def test_trained_singletons_found_by_lira_not_by_loss_attack(longtail_replicas):
    ds, masks, out = longtail_replicas
    single = ds.train_info["subpop_train_count"] == 1
    common = ds.train_info["subpop_train_count"] >= 5
    assert single.sum() >= 30
    lira = privacy.lira_eval(masks, out.train_margin, n_targets=16)
    loss = privacy.loss_attack_eval(masks, out.train_loss, n_targets=16)
    lira_tpr = subgroup_tpr(lira, masks, single, 1e-2)
    loss_tpr = subgroup_tpr(loss, masks, single, 1e-2)
    assert lira_tpr > 0.5 and lira_tpr > 10 * max(loss_tpr, 0.01), (lira_tpr, loss_tpr)
    mem = memorization(masks, out.train_correct).value
    assert np.nanmean(mem[single]) > 0.5 > 0.2 > np.nanmean(mem[common])
