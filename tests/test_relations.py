"""relations(): every per-example score beside memorization, checked against direct
computations (rank correlations, sklearn AUCs) on simulated outputs, and on a real
MNIST-1D study with 10% label noise."""

import json

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

import memjax as mj
from memjax.analysis.relations import SUSPICIOUS_WHEN_HIGH, relations
from memjax.estimators import counterfactual_memorization, memorization
from memjax.outputs import ReplicaOutputs
from memjax.privacy import FPR_GRID

FINAL = ["memorization", "cf_memorization_margin", "cf_memorization_neg_loss", "held_out_accuracy"]
ATTACKS = ["lira_online", "lira_offline", "loss_attack"]
PROXIES = ["loss", "confidence", "margin"]
PRESENTED = ["learning_time", "forgetting_events"]
TRAJ = ["learning_time_recorded", "forgetting_events_recorded", "el2n", "grand", "self_influence"]
EPOCHS = 20


def simulated_study(R=32, n=300, T=4, trajectories=True, seed=0):
    """Margins where flipped examples are fit only when IN (and late, after more forgetting),
    as with label noise."""
    rng = np.random.default_rng(seed)
    masks = mj.subsets.sample(n, R, 0.5, seed=seed)
    flipped = np.zeros(n, bool)
    flipped[rng.choice(n, n // 10, replace=False)] = True
    ease = rng.normal(2.0, 1.5, n)
    final = np.where(flipped, np.where(masks, 1.0, -3.0), ease + 1.5 * masks)
    margin = final + rng.standard_normal((R, n))
    half = EPOCHS // 2
    extra = {
        "first_learned": np.where(masks, rng.integers(0, half, (R, n)) + half * flipped, -1),
        "forgetting_events": np.where(masks, rng.poisson(1.0 + 2.0 * flipped, (R, n)), 0),
    }
    if trajectories:
        progress = np.linspace(0.25, 1.0, T)[None, :, None]
        late = np.where(flipped, 2.0, 1.0)  # noisy labels are learned late
        traj_margin = margin[:, None] * progress**late + rng.standard_normal((R, T, n))
        p = 1 / (1 + np.exp(-traj_margin))
        el2n = np.sqrt(2) * (1 - p)
        extra.update(
            traj_correct=traj_margin > 0,
            traj_margin=traj_margin,
            traj_loss=np.log1p(np.exp(-traj_margin)),
            traj_el2n=el2n,
            traj_grad_sq=3.0 * el2n**2,
            record_epochs=np.arange(T) * 5,
            record_lr=np.full(T, 0.1),
        )
    out = ReplicaOutputs(
        np.arange(R),
        margin > 0,
        margin,
        np.log1p(np.exp(-margin)),
        margin > 0,
        margin,
        margin,
        **extra,
    )
    return masks, out, flipped


def test_columns_correlations_and_flipped_aucs():
    masks, out, flipped = simulated_study()
    rel = relations(masks, out, flipped, n_targets=8)
    assert list(rel.columns) == FINAL + ATTACKS + PROXIES + PRESENTED + TRAJ
    mem = memorization(masks, out.train_correct).value
    np.testing.assert_allclose(rel.columns["memorization"].value, mem)
    for name, est in rel.columns.items():
        value = est.value
        assert value.shape == est.stderr.shape == est.ci_low.shape == est.ci_high.shape == (300,)
        ok = np.isfinite(value) & np.isfinite(mem)
        if name != "memorization":
            rho = np.corrcoef(rankdata(value[ok]), rankdata(mem[ok]))[0, 1]
            assert rel.spearman[name] == pytest.approx(rho)
        oriented = value if SUSPICIOUS_WHEN_HIGH[name] else -value
        expected = roc_auc_score(flipped[np.isfinite(value)], oriented[np.isfinite(value)])
        assert rel.flipped_auc[name] == pytest.approx(expected)
    summary = rel.summary()
    assert set(summary["flipped_label_auc"]) == set(rel.columns)
    assert summary["suspicious_when"]["confidence"] == "low"
    assert set(summary["attacks"]) == {
        "lira_online",
        "lira_offline",
        "lira_online_fixed_variance",
        "lira_offline_fixed_variance",
        "loss_attack",
        "lira_online_paper",
        "lira_offline_paper",
    }
    for name, attack in summary["attacks"].items():
        assert attack["convention"] == ("paper" if name.endswith("_paper") else "reference")
        assert attack["tpr_at_fpr"]["1e-05"] is None and "1e-05" in attack["undefined"]


# Flipped-label AUC bars, each on the median over 5 simulated studies (measured per seed:
# memorization 0.997-1.0, held-out accuracy 0.993-0.996, learning time 1.0, recorded learning
# time 0.954-0.972, forgetting events 1.0).
FLIPPED_AUC_BARS = {
    "memorization": 0.95,
    "held_out_accuracy": 0.9,  # oriented: low held-out accuracy is suspicious
    "learning_time": 0.9,
    "learning_time_recorded": 0.9,
    "forgetting_events": 0.8,
}


def test_flipped_labels_ranked_first_on_the_median_of_seeds():
    aucs = {name: [] for name in FLIPPED_AUC_BARS}
    for seed in range(5):
        masks, out, flipped = simulated_study(seed=seed)
        rel = relations(masks, out, flipped, n_targets=8)
        for name in aucs:
            aucs[name].append(rel.flipped_auc[name])
    for name, bar in FLIPPED_AUC_BARS.items():
        assert np.median(aucs[name]) > bar, (name, aucs[name])


def test_without_trajectories_or_flips():
    masks, out, _ = simulated_study(trajectories=False)
    rel = relations(masks, out, n_targets=4)
    assert list(rel.columns) == FINAL + ATTACKS + PROXIES + PRESENTED
    assert rel.flipped_auc is None and rel.flipped_auc_ci is None
    assert rel.summary()["flipped_label_auc"] is None
    assert rel.summary()["flipped_label_auc_ci"] is None


def test_counterfactual_memorization_is_in_minus_out_of_the_measure():
    masks, out, _ = simulated_study(R=12, n=40, trajectories=False)
    for measure, values in (
        ("accuracy", out.train_correct.astype(float)),
        ("margin", out.train_margin),
        ("neg_loss", -out.train_loss),
    ):
        est = counterfactual_memorization(masks, out, measure)
        for i in range(40):
            a, b = values[masks[:, i], i], values[~masks[:, i], i]
            assert est.value[i] == pytest.approx(a.mean() - b.mean())
            se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
            assert est.stderr[i] == pytest.approx(se)
    from_array = counterfactual_memorization(masks, out.train_loss, "neg_loss")
    np.testing.assert_allclose(from_array.value, est.value)
    with pytest.raises(ValueError, match="measure"):
        counterfactual_memorization(masks, out, "probability")


def test_early_epoch_selects_the_recording_of_el2n_and_grand():
    masks, out, _ = simulated_study()
    rel = relations(masks, out, n_targets=4, early_epoch=10)  # recordings at 0, 5, 10, 15
    for name, traj in (("el2n", out.traj_el2n), ("grand", np.sqrt(out.traj_grad_sq))):
        expected = [traj[masks[:, i], 2, i].mean() for i in range(300)]
        np.testing.assert_allclose(rel.columns[name].value, expected)


def test_experiment_tables_show_every_attack_and_score():
    from experiments.privacy_and_proxies.analysis import tables

    masks, out, flipped = simulated_study()
    rel = relations(masks, out, flipped, n_targets=8)
    lines = tables(rel.summary()).splitlines()
    split = lines.index(
        "| score | suspicious when | flipped-label AUC | Spearman with memorization |"
    )
    attack_rows, score_rows = lines[:split], lines[split:]
    for name, attack in rel.attacks.items():
        row = next(line for line in attack_rows if line.startswith(f"| {name} |"))
        assert f"| {attack.auc:.4f} |" in row
    for name in rel.columns:
        row = next(line for line in score_rows if line.startswith(f"| {name} |"))
        assert f"| {rel.flipped_auc[name]:.4f} |" in row
        assert row.endswith(f"| {rel.spearman.get(name, 1.0):.3f} |")


EXPERIMENT_STUDY = {
    "name": "tiny-privacy",
    "dataset": {"name": "digits", "label_noise": 0.1},
    "model": {"type": "MLP", "widths": [16]},
    "subsets": {"replicas": 8, "ratio": 0.5, "design": "balanced"},
    "train": {
        "epochs": 2,
        "batch_size": 128,
        "optimizer": "adam",
        "learning_rate": 0.01,
        "record_every": 1,
        "record_grad_norm": True,
    },
    "seed": 3,
}


@pytest.mark.slow
def test_experiment_analysis_equals_memjax_estimate(tmp_path):
    """The experiment's per-example table and summary are `memjax estimate`'s (plus the fit
    of the flipped labels and the ROC points), on one tiny study with flipped labels."""
    from experiments.privacy_and_proxies.analysis import FILES, analyze, tables, write
    from memjax.report import estimate_study
    from memjax.study import StudyConfig, run_study

    run_study(StudyConfig.from_dict(EXPERIMENT_STUDY), str(tmp_path / "s"), progress=False)
    study = mj.open_study(str(tmp_path / "s"))
    result = analyze(study)
    write(str(tmp_path / "exp"), result)
    estimated = estimate_study(study, str(tmp_path / "est"))
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == sorted(FILES)
    csv_exp = (tmp_path / "exp" / "per_example.csv").read_text()
    assert csv_exp == (tmp_path / "est" / "memorization.csv").read_text()
    written = json.loads((tmp_path / "exp" / "summary.json").read_text())
    assert written.pop("flipped_fit_in_subset") == result["summary"]["flipped_fit_in_subset"]
    assert written == estimated
    assert (tmp_path / "exp" / "tables.md").read_text() == tables(result["summary"])
    # independent checks on the stored arrays
    masks, out, flipped = study.masks, study.outputs, study.flipped
    hand = [
        out.train_correct[masks[:, i], i].mean() - out.train_correct[~masks[:, i], i].mean()
        for i in range(masks.shape[1])
    ]
    np.testing.assert_allclose(result["columns"]["memorization"], hand, rtol=1e-6)
    np.testing.assert_array_equal(result["columns"]["flipped"], flipped)
    pairs = [out.train_correct[r, i] for r in range(len(masks)) for i in np.flatnonzero(flipped)]
    pairs_in = [p for p, m in zip(pairs, masks[:, flipped].ravel(), strict=True) if m]
    assert result["summary"]["flipped_fit_in_subset"] == pytest.approx(np.mean(pairs_in))
    mem = result["columns"]["memorization"]
    ok = np.isfinite(mem)
    assert written["flipped_label_auc"]["memorization"] == pytest.approx(
        roc_auc_score(flipped[ok], mem[ok])
    )
    roc = (tmp_path / "exp" / "roc.csv").read_text().splitlines()
    assert roc[0].split(",") == ["fpr", *study.relations.attacks]
    assert len(roc) == 1 + len(FPR_GRID)


def test_summary_has_no_nan():
    masks, out, flipped = simulated_study()
    out.traj_correct[:] = True  # no forgetting anywhere: constant columns
    out.forgetting_events[:] = 0
    rel = relations(masks, out, flipped, n_targets=4)
    summary = rel.summary()
    for name in ("forgetting_events", "forgetting_events_recorded"):
        assert np.isnan(rel.spearman[name])
        assert summary["spearman_with_memorization"][name] is None
        assert summary["spearman_with_memorization_ci"][name] is None
        assert summary["flipped_label_auc"][name] == 0.5  # all ties
        low, high = summary["flipped_label_auc_ci"][name]  # open, though DeLong's is 0
        assert low < 0.5 < high
    json.dumps(summary, allow_nan=False)


def test_small_studies_skip_the_attacks():
    masks, out, flipped = simulated_study(R=4, trajectories=False)
    rel = relations(masks, out, flipped, n_targets=2)
    assert list(rel.columns) == FINAL + PROXIES + PRESENTED
    assert rel.attacks == {} and rel.summary()["attacks"] == {}


def test_bad_flipped_mask_fails_early():
    masks, out, flipped = simulated_study(trajectories=False)
    with pytest.raises(ValueError, match="flipped"):
        relations(masks, out, flipped[:-1])
    with pytest.raises(ValueError, match="flipped"):
        relations(masks, out, flipped.astype(int))


@pytest.mark.slow
@pytest.mark.optimized
def test_mnist1d_label_noise_found_by_memorization():
    """128 replicas on MNIST-1D with 10% flipped labels, as in the experiment's quick mode.
    Memorization AUC measured with seed s for the noise, masks and training, s = 0..4 (the
    test uses 0): 0.935 0.923 0.927 0.935 0.927, mean 0.929, sd 0.0052, so the 0.9 bar is 5.6
    seed-to-seed sds below. With 64 replicas it was 0.918 (sd 0.0056 over 10 seeds): 3.2 sds,
    too close for one seed (the 64 more replicas add ~10 s)."""
    ds, flipped = mj.data.with_label_noise(mj.data.load("mnist1d"), 0.1, seed=0)
    masks = mj.subsets.sample(ds.n_train, 128, 0.5, seed=0)
    cfg = mj.TrainConfig(
        epochs=20,
        batch_size=128,
        optimizer="adam",
        learning_rate=1e-2,
        record_every=20,  # init and one recording keep it cheap; the columns are what is checked
        record_grad_norm=True,
    )
    spec = mj.models.MLP(widths=(128, 128), parameterization="standard")
    out = mj.train_replicas(spec, ds, masks, cfg, seed=0)
    rel = relations(masks, out, flipped, n_targets=16)
    assert list(rel.flipped_auc) == FINAL + ATTACKS + PROXIES + PRESENTED + TRAJ
    assert all(np.isfinite(v) for v in rel.flipped_auc.values())
    assert rel.flipped_auc["memorization"] >= 0.9, rel.flipped_auc


def _psi_components(labels: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components by brute force over every (positive, negative) pair."""
    x, y = score[labels], score[~labels]
    psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
    return psi.mean(axis=1), psi.mean(axis=0)


def _binormal(rng, n: int, positives: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros(n, bool)
    labels[:positives] = True
    return labels, rng.standard_normal(n) + shift * labels


def test_delong_covariance_equals_its_structural_components_by_brute_force():
    rng = np.random.default_rng(0)
    labels = rng.random(120) < 0.2
    scores = np.round(rng.standard_normal((2, 120)) + [[1.0], [0.5]] * labels, 1)  # with ties
    auc, cov = mj.auc.delong(labels, scores)
    comps = [_psi_components(labels, s) for s in scores]
    m, n = labels.sum(), (~labels).sum()
    for i in range(2):
        assert auc[i] == pytest.approx(roc_auc_score(labels, scores[i]))
        for j in range(2):
            (x_i, y_i), (x_j, y_j) = comps[i], comps[j]
            expected = np.cov(x_i, x_j)[0, 1] / m + np.cov(y_i, y_j)[0, 1] / n
            assert cov[i, j] == pytest.approx(expected)
    d = mj.auc.auc_difference(labels, scores[0], scores[1])
    assert d["value"] == pytest.approx(auc[0] - auc[1])
    assert d["stderr"] ** 2 == pytest.approx(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert d["ci_low"] < d["value"] < d["ci_high"] and d["examples"] == 120
    half = 1.959964 * d["stderr"]
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((d["value"] - half, d["value"] + half))
    # two perfect separations: DeLong's variance is 0, the interval that of the two AUCs'
    perfect = mj.auc.auc_difference(labels, labels * 2.0, labels * 1.0)
    low, high = mj.auc.auc_interval(labels, labels * 1.0)
    assert perfect["value"] == 0 and perfect["stderr"] == 0
    assert (perfect["ci_low"], perfect["ci_high"]) == pytest.approx((low - 1, 1 - low))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_standard_error_matches_a_bootstrap_over_examples(seed):
    """4000 resamples of the examples within each class (m and n fixed, as DeLong assumes)."""
    rng = np.random.default_rng(seed)
    labels, score = _binormal(rng, 400, 50, 1.2)
    (auc,), cov = mj.auc.delong(labels, score)
    pos, neg = score[labels], score[~labels]
    draws = 4000
    x = pos[rng.integers(0, 50, (draws, 50))]
    y = neg[rng.integers(0, 350, (draws, 350))]
    ranks = rankdata(np.concatenate([x, y], axis=1), axis=1)[:, :50]
    boot = (ranks.sum(axis=1) - 50 * 51 / 2) / (50 * 350)
    assert np.sqrt(cov[0, 0]) == pytest.approx(boot.std(), rel=0.08)
    low, high = mj.auc.auc_interval(labels, score)
    assert low < auc < high
    assert (high - low) / 2 == pytest.approx(1.96 * boot.std(), rel=0.15)


@pytest.mark.slow
def test_auc_interval_covers_the_true_auc():
    """Binormal scores, true AUC Phi(shift / sqrt 2); coverage of 95% intervals over 1000
    studies per seed, median over 5 seeds. Measured over 8 seeds: 0.951 (sd 0.0089) at AUC
    0.76 and 0.946 (sd 0.0043) at AUC 0.96, so one seed came within 2.7 sds of the 0.975
    bound; the median of 5 varies about half as much. Near AUC 1 it takes hundreds of
    positives (with 20 positives at AUC 0.96 the coverage is about 0.91, as the docstring
    says)."""
    from scipy.stats import norm

    for shift, n, positives in ((1.0, 200, 40), (2.5, 1000, 200)):  # AUC 0.76 and 0.96
        truth = norm.cdf(shift / np.sqrt(2))
        coverage = []
        for seed in range(5):
            rng = np.random.default_rng([7, seed])
            hits = []
            for _ in range(1000):
                low, high = mj.auc.auc_interval(*_binormal(rng, n, positives, shift))
                hits.append(low <= truth <= high)
            coverage.append(np.mean(hits))
        assert 0.92 <= np.median(coverage) <= 0.975, (shift, coverage)


def test_auc_interval_stays_open_where_delong_vanishes():
    """Perfect separation and a constant score: the Hanley-McNeil score interval, checked
    against a grid search of its defining inequality (auc - t)^2 <= 1.96^2 V(t)."""
    labels = np.arange(60) < 10
    theta = np.linspace(0, 1, 200_001)

    def grid_interval(auc: float, m: int, n: int) -> tuple[float, float]:
        q1, q2 = theta / (2 - theta), 2 * theta**2 / (1 + theta)
        var = theta * (1 - theta) + (m - 1) * (q1 - theta**2) + (n - 1) * (q2 - theta**2)
        inside = theta[(auc - theta) ** 2 <= 1.959964**2 * var / (m * n)]
        return inside.min(), inside.max()

    for score, auc in ((labels * 1.0, 1.0), (-(labels * 1.0), 0.0), (np.zeros(60), 0.5)):
        low, high = mj.auc.auc_interval(labels, score)
        assert low < high and low <= auc <= high
        expected = grid_interval(auc, 10, 50)
        assert low == pytest.approx(expected[0], abs=1e-4)
        assert high == pytest.approx(expected[1], abs=1e-4)
    assert np.isnan(mj.auc.auc_interval(np.arange(5) < 1, np.arange(5.0))).all()


def test_spearman_interval_covers_and_matches_a_bootstrap():
    """Bivariate normal with correlation 0.6: Spearman's rho is (6/pi) asin(0.3). Coverage of
    the Bonett-Wright interval over 600 samples per seed, median over 5 seeds (measured over
    8 seeds: 0.961, sd 0.0067, a single seed within 2.1 sds of the 0.975 bound); its z-scale
    se against bootstraps."""
    rng = np.random.default_rng(3)
    truth = 6 / np.pi * np.arcsin(0.3)
    cov = [[1, 0.6], [0.6, 1]]

    def rho_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
        rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
        return (rx * ry).sum(-1) / np.sqrt((rx**2).sum(-1) * (ry**2).sum(-1))

    coverage = []
    for seed in range(5):
        seed_rng = np.random.default_rng([3, seed])
        hits = []
        for _ in range(600):
            x, y = seed_rng.multivariate_normal([0, 0], cov, 80).T
            low, high = mj.relations.spearman_interval(rho_rows(x, y), 80)
            hits.append(low <= truth <= high)
        coverage.append(np.mean(hits))
    assert 0.92 <= np.median(coverage) <= 0.975, coverage
    ratios = []  # z-scale se over the bootstrap's: sample to sample s.d. about 0.04
    for _ in range(5):
        x, y = rng.multivariate_normal([0, 0], cov, 300).T
        idx = rng.integers(0, 300, (4000, 300))
        boot = np.arctanh(rho_rows(x[idx], y[idx]))
        low, high = mj.relations.spearman_interval(rho_rows(x, y), 300)
        ratios.append((np.arctanh(high) - np.arctanh(low)) / 2 / 1.959964 / boot.std())
    assert np.median(ratios) == pytest.approx(1.0, abs=0.07) and np.ptp(ratios) < 0.3, ratios
    assert np.isnan(mj.relations.spearman_interval(1.0, 50)).all()
    assert np.isnan(mj.relations.spearman_interval(0.5, 3)).all()


def test_relations_report_intervals_around_their_values():
    masks, out, flipped = simulated_study()
    rel = relations(masks, out, flipped, n_targets=8)
    assert set(rel.spearman_ci) == set(rel.spearman)
    assert set(rel.flipped_auc_ci) == set(rel.flipped_auc) == set(rel.columns)
    for name, rho in rel.spearman.items():
        low, high = rel.spearman_ci[name]
        ok = np.isfinite(rel.columns[name].value) & np.isfinite(rel.columns["memorization"].value)
        assert (low, high) == pytest.approx(mj.relations.spearman_interval(rho, int(ok.sum())))
        assert low < rho < high
    for name, auc in rel.flipped_auc.items():
        value = rel.columns[name].value
        oriented = value if SUSPICIOUS_WHEN_HIGH[name] else -value
        ok = np.isfinite(value)
        expected = mj.auc.auc_interval(flipped[ok], oriented[ok])
        assert rel.flipped_auc_ci[name] == pytest.approx(expected)
        assert expected[0] <= auc <= expected[1] and expected[0] < expected[1]
    summary = rel.summary()
    assert summary["flipped_label_auc_ci"]["memorization"] == list(
        rel.flipped_auc_ci["memorization"]
    )
    assert summary["spearman_with_memorization_ci"]["loss"] == list(rel.spearman_ci["loss"])
