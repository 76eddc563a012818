"""paper_figures: files, numbers, index and caching, on stored studies.

The fast tests write small studies straight into study stores with planted effects (no
training): flipped labels are right only when trained on, a few training examples decide a
few test examples, singleton subpopulations are memorized. The figures must show those
effects in their JSON, write PNG/PDF/JSON and an index, and refuse bad names. The slow test
trains two tiny digits studies through the real runner, end to end, twice (the second run
must reuse them).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
import yaml
from scipy.stats import t as t_dist

import memjax as mj
from experiments.attribution import experiment as attribution_experiment
from experiments.privacy_preservation import experiment as privacy_experiment
from experiments.theory_vs_width import experiment as theory_experiment
from memjax.outputs import ReplicaOutputs
from memjax.report import estimate_study
from memjax.study import StudyConfig, build_dataset, open_or_create, open_store
from paper_figures import figure_names, figure_spec, figures, make_figures
from paper_figures.__main__ import figure_table
from paper_figures.__main__ import main as figures_main
from paper_figures.context import MODES, Context
from paper_figures.fig04_influence import block_permutation
from paper_figures.fig05_convergence import block_groups
from paper_figures.fig08_mislabeled import LABELS
from paper_figures.registry import collect
from paper_figures.runner import FiguresFailedError
from paper_figures.spec import FigureSpec
from paper_figures.stats import difference_statement, example_average

MLP = {"type": "MLP", "widths": [8], "activation": "relu", "parameterization": "standard"}
DIGITS = {"name": "digits"}
NOISY = {"name": "digits", "label_noise": 0.1, "noise_seed": 0}
LONGTAIL = {"name": "longtail", "n_train": 400, "n_test": 400, "subpops_per_class": 12}
RETRAINING = "marginal_utility"  # trains new replicas: only the slow end-to-end test makes it
FAST_FIGURES = [name for name in figure_names() if name != RETRAINING]
REPO = Path(__file__).resolve().parents[1]
PLANTED_PAIRS = 5  # train example i decides test example i
MAX_WIDTH_IN = 7.0  # a two-column paper's text width
PNG_DPI = 300


def _study(dataset: dict, replicas: int, ratio: float = 0.5, design: str = "balanced", **train):
    return {
        "name": "synthetic",
        "dataset": dataset,
        "model": MLP,
        "subsets": {"replicas": replicas, "ratio": ratio, "design": design},
        "train": {"epochs": 6, "batch_size": 64, **train},
        "seed": 0,
        "chunk_size": replicas,
    }


SYNTHETIC = {
    "mnist1d_clean": _study(DIGITS, 16),
    "mnist1d_noise": _study(NOISY, 32, record_every=2, record_grad_norm=True, queries="shift"),
    "digits_clean": _study(DIGITS, 32),
    "digits_noise": _study(NOISY, 16),
    "digits_fixed": _study(DIGITS, 32, design="fixed"),
    "digits_bernoulli": _study(DIGITS, 32, design="bernoulli"),
    "digits_ratio_10": _study(DIGITS, 10, ratio=0.1),
    "digits_ratio_25": _study(DIGITS, 8, ratio=0.25),
    "digits_ratio_75": _study(DIGITS, 8, ratio=0.75),
    "digits_ratio_90": _study(DIGITS, 10, ratio=0.9),
    "longtail": _study(LONGTAIL, 16),
}


RUNTIMES = {"quick": {"expected_runtime": "seconds (test)"}, "full": {"expected_runtime": "long"}}


def _write_configs(directory: Path, studies: dict[str, dict], figures: dict | None = None):
    """Study configs (and figures.yaml) with both modes; the modes change only the stated
    runtimes, so that the planted stores match either."""
    (directory / "studies").mkdir(parents=True)
    for name, d in studies.items():
        text = yaml.safe_dump({**d, "modes": RUNTIMES})
        (directory / "studies" / f"{name}.yaml").write_text(text)
    if figures is not None:
        text = yaml.safe_dump({**figures, "modes": {"quick": {}, "full": {}}})
        (directory / "figures.yaml").write_text(text)


def _planted_outputs(
    masks: np.ndarray, ds, epochs: int, record_epochs: list[int], grad: bool, seed: int, views: int
):
    """Outputs with known structure: flipped (or rare) examples are right only when IN, and
    are learned in the second half of training and forgotten more often; ``views`` query
    views add their own noise to the margins (the middle one is the identity)."""
    rng = np.random.default_rng(seed)
    r, n = masks.shape
    hard = ds.train_info.get("flipped", np.zeros(n, bool))
    if "subpop_train_count" in ds.train_info:
        hard = ds.train_info["subpop_train_count"] == 1
    p_out = np.where(hard, 0.05, 0.9)
    train_correct = masks | (rng.random((r, n)) < p_out)
    margin = np.where(train_correct, 3.0, -1.0) + np.where(masks, 1.0, 0.0)
    margin = (margin + 0.5 * rng.standard_normal((r, n))).astype(np.float32)
    test_correct = rng.random((r, ds.n_test)) < 0.85
    test_correct[:, :PLANTED_PAIRS] = masks[:, :PLANTED_PAIRS]
    if "subpop" in ds.test_info:  # rare test examples are right only with their subpopulation
        for j in np.flatnonzero(ds.test_info["subpop_train_count"] == 1):
            test_correct[:, j] = masks[:, ds.train_info["subpop"] == ds.test_info["subpop"][j]][
                :, 0
            ]
    test_margin = np.where(test_correct, 2.0, -2.0).astype(np.float32)
    kw = {
        "first_learned": np.where(
            masks, rng.integers(0, epochs // 2, (r, n)) + np.where(hard, epochs // 2, 0), -1
        ).astype(np.int32),
        "forgetting_events": np.where(
            masks, rng.poisson(np.where(hard, 3.0, 0.5), (r, n)), 0
        ).astype(np.int32),
    }
    if record_epochs:
        t = len(record_epochs)
        learned = rng.integers(0, t, (r, 1, n)) + np.where(hard, t // 2, 0)[None, None]
        traj_correct = np.arange(t)[None, :, None] >= learned
        traj_correct[:, -1] = train_correct
        kw |= {
            "traj_correct": traj_correct,
            "traj_margin": np.repeat(margin[:, None], t, axis=1),
            "traj_loss": np.repeat(np.logaddexp(0, -margin)[:, None], t, axis=1),
            "traj_el2n": rng.random((r, t, n)).astype(np.float32) + hard,
        }
        if grad:
            kw["traj_grad_sq"] = rng.random((r, t, n)).astype(np.float32) + hard
    if views:
        for name, m in (("train_margin_views", margin), ("test_margin_views", test_margin)):
            v = m[..., None] + 0.5 * rng.standard_normal((*m.shape, views))
            v[..., views // 2] = m
            kw[name] = v.astype(np.float32)
    return dict(
        train_correct=train_correct,
        train_margin=margin,
        train_loss=np.logaddexp(0, -margin).astype(np.float32),
        test_correct=test_correct,
        test_margin=test_margin,
        test_loss=np.logaddexp(0, -test_margin).astype(np.float32),
        **kw,
    )


def _fill_store(config: dict, directory: Path, seed: int) -> None:
    cfg = StudyConfig.from_dict(config)
    ds = build_dataset(cfg.dataset)
    store = open_or_create(cfg, str(directory), ds)
    for k in range(store.n_chunks):
        rows = store.chunk_rows(k)
        arrays = _planted_outputs(
            store.masks(rows),
            ds,
            cfg.train.epochs,
            store.meta["record_epochs"],
            cfg.train.record_grad_norm,
            seed,
            store.meta["query_views"],
        )
        store.write_chunk(k, ReplicaOutputs(replica_ids=rows, **arrays))


THEORY_WIDTHS = [64, 1024]
THEORY_EXAMPLES = 30


def _theory_memorization(k: int) -> dict[str, list]:
    """Per-example memorization of the paired NTK model and of a network that follows it
    more closely at the wider width (k=1); one example is undefined (None)."""
    rng = np.random.default_rng(k)
    kernel = rng.uniform(0, 1, THEORY_EXAMPLES)
    network = kernel + (0.5 - 0.4 * k) * rng.standard_normal(THEORY_EXAMPLES)
    values = {"ntk_gd_paired": kernel.tolist(), "network": network.tolist()}
    values["network"][0] = None
    return values


def _theory_summary() -> dict:
    """A theory-vs-width summary whose network~kernel agreement rises with width."""
    settings = {"n_train": 192, "n_test": 192, "replicas": 12, "depth": 1, "epochs": 200}

    def metrics(k: int) -> dict:
        return {
            m: {
                "value": (v := 0.4 + 0.5 * k if m != "mad" else 0.3 - 0.2 * k),
                "stderr": 0.05,
                "ci_low": v - 0.1,
                "ci_high": v + 0.1,
            }
            for m in ("pearson", "spearman", "mad")
        }

    pairs = ("network~ntk_gd_paired", "network~ntk_gd", "network~nngp", "linearized~ntk_gd_paired")
    return {
        "dataset": {"name": "mnist1d[192/192]"},
        "settings": settings,
        "stderr": "bootstrap over replicas",
        "widths": [
            {
                "width": w,
                "pairs": {
                    p: {q: metrics(k) for q in ("memorization", "test_accuracy")} for p in pairs
                },
                "memorization": _theory_memorization(k),
            }
            for k, w in enumerate(THEORY_WIDTHS)
        ],
    }


def _span(value: float, half: float = 0.02) -> dict:
    return {"value": value, "low": value - half, "high": value + half}


def _privacy_rows() -> dict:
    """Planted rows of experiments/privacy_preservation (figures 13 and 14): memorization
    and attack success falling with epsilon; random labels fit, test accuracy at chance."""
    dp = []
    for k, (sigma, eps) in enumerate(((None, math.inf), (0.5, 40.0), (1.0, 8.0), (4.0, 0.9))):
        dp.append(
            {
                "member": f"dp-sgd-dp_{k}",
                "noise_multiplier": sigma,
                "clip_norm": None if sigma is None else 1.0,
                "epsilon": eps,
                "delta": 1e-5,
                "sampling_rate": None if sigma is None else 0.07,
                "steps": None if sigma is None else 210,
                "audit": {"epsilon_lb": 1.5 / (k + 1)},
                "test_accuracy": _span(0.9 - 0.1 * k),
                "mean_memorization": _span(0.3 / (k + 1)),
                "lira_tpr_at_fpr_0.01": _span(0.2 / (k + 1), 0.01),
                "lira_auc": _span(0.8 - 0.1 * k),
            }
        )
    labels = []
    for width in (32, 512):
        for rate in (0.0, 0.5, 1.0):
            labels.append(
                {
                    "member": f"random-labels-{rate}-{width}",
                    "random_labels": rate,
                    "width": width,
                    "train_accuracy": _span(1.0 - 0.03 * rate * (width == 32)),
                    "test_accuracy": _span(0.95 - 0.85 * rate),
                    "epochs_to_fit": _span(10 + 40 * rate, 3.0),
                    "replicas_fitted": 16,
                    "replicas": 16,
                    "fraction_memorized": _span(0.6 * rate),
                    "memorization_flipped": _span(0.8),
                    "memorization_clean": _span(0.05 + 0.5 * rate),
                }
            )
    return {"dp": dp, "labels": labels}


def _attribution_summary() -> dict:
    """A planted experiments/attribution summary (figure 12): LDS rising with replicas,
    subset memorization tracking exact LOO, the control saving more replicas when wider."""
    lds = {}
    for name in ("mnist1d", "digits"):
        rows = [
            {
                "estimator": e,
                "replicas": r,
                "value": v,
                "ci_low": v - 0.03,
                "ci_high": v + 0.03,
                "note": "",
            }
            for e, top in (("influence", 0.3), ("datamodels-ridge", 0.4))
            for r, v in ((8, top / 4), (16, top / 2), (32, top))
        ]
        rows += [
            {
                "estimator": "kernel-ntk",
                "replicas": 0,
                "value": 0.2,
                "ci_low": 0.18,
                "ci_high": 0.22,
                "note": "representer weights, no replicas",
            },
            {
                "estimator": "tracin",
                "replicas": 8,
                "value": 0.1,
                "ci_low": 0.07,
                "ci_high": 0.13,
                "note": "checkpoints at epochs [2, 4]",
            },
            {
                "estimator": "datamodels-lasso",
                "replicas": 32,
                "value": None,
                "ci_low": None,
                "ci_high": None,
                "note": "not available: too few replicas",
            },
            {
                "estimator": "random",
                "replicas": 0,
                "value": 0.0,
                "ci_low": -0.01,
                "ci_high": 0.01,
                "note": "",
            },
        ]
        lds[name] = {
            "dataset": name,
            "n_train": 100,
            "n_test": 20,
            "eval_subsets": 10,
            "eval_seeds": 2,
            "rows": rows,
        }
    loo_rows = [
        {
            "ratio": q,
            "output": o,
            "replicas": 32,
            "pearson": _span(0.9 - q / 2),
            "mean_difference": _span(0.1),
        }
        for q in (0.25, 0.5, 0.75)
        for o in ("correctness", "margin")
    ]
    control_rows = [
        {
            "width": w,
            "output": o,
            "replicas": 32,
            "extra_replicas": 512,
            "variance_ratio": _span(1 - saved),
            "replicas_saved": _span(saved),
            "shift": _span(0.0),
            "replica_correlation": _span(0.9),
            "mean_beta": 0.5,
        }
        for w, saved in ((64, 0.1), (1024, 0.8))
        for o in ("correctness", "margin")
    ]
    return {
        "mode": "quick",
        "seconds": {"lds": 1.0},
        "lds": lds,
        "loo": {
            "dataset": "mnist1d[40/100]",
            "n_train": 40,
            "seeds": 4,
            "loo_replicas": 164,
            "exact_mean": {"margin": _span(0.3)},
            "rows": loo_rows,
        },
        "control": {"dataset": {"name": "mnist1d"}, "epochs": 200, "rows": control_rows},
    }


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, Path]:
    """(config dir, output dir) with every fast figure's study stored, and those figures made
    (figure 6 from a planted theory-vs-width summary)."""
    root = tmp_path_factory.mktemp("figures")
    configs, out = root / "configs", root / "out"
    _write_configs(configs, SYNTHETIC)
    for seed, (name, config) in enumerate(SYNTHETIC.items()):
        _fill_store(config, out / "studies" / name, seed)
    with pytest.MonkeyPatch.context() as patch:  # figure 6 gets the summary without training
        patch.setattr(theory_experiment, "run", lambda *args, **kwargs: _theory_summary())
        patch.setattr(privacy_experiment, "run", lambda *args, **kwargs: _privacy_rows())
        patch.setattr(attribution_experiment, "run", lambda *a, **k: _attribution_summary())
        make_figures(FAST_FIGURES, quick=True, out=out, config_dir=configs, progress=False)
    return configs, out


def _record(out: Path, name: str) -> dict:
    (path,) = out.glob(f"fig[0-9][0-9]_{name}.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_every_figure_writes_png_pdf_json_of_paper_size(synthetic):
    _, out = synthetic
    for name in FAST_FIGURES:
        record = _record(out, name)
        assert record["name"] == name and record["mode"] == "quick"
        png, pdf = out / record["files"]["png"], out / record["files"]["pdf"]
        assert pdf.read_bytes().startswith(b"%PDF")
        height, width = matplotlib.image.imread(png).shape[:2]
        assert width / PNG_DPI <= MAX_WIDTH_IN + 0.05, (name, width)
        assert 1.0 <= height / PNG_DPI <= 6.0, (name, height)
        assert record["caption"] and record["title"] and record["data"]


def test_json_records_provenance_without_machine_paths(synthetic):
    configs, out = synthetic
    record = _record(out, "memorization")
    studies = {item["study"]: item for item in record["inputs"]}
    assert set(studies) == {"mnist1d_clean", "mnist1d_noise", "digits_clean", "digits_noise"}
    item = studies["digits_noise"]
    assert item["study_dir"] == "studies/digits_noise"
    assert item["config"] == "digits_noise.yaml"
    assert item["replicas"] == 16 and item["expected_runtime"] == "seconds (test)"
    (theory_input,) = _record(out, "theory")["inputs"]
    assert theory_input["kind"] == "experiment"
    assert theory_input["path"] == "theory_vs_width"
    for path in out.glob("*.json"):
        text = path.read_text()
        assert str(out.parent) not in text and str(configs) not in text, path.name


def test_planted_effects_are_visible_in_the_numbers(synthetic):
    _, out = synthetic
    panels = {p["study"]: p for p in _record(out, "memorization")["data"]["panels"]}
    mean = panels["digits_noise"]["mean"]
    assert mean["flipped label"]["value"] > 0.8 > 0.2 > mean["clean label"]["value"]
    assert panels["digits_noise"]["flipped_minus_clean"]["ci_low"] > 0.5
    counts = panels["digits_noise"]["counts"]
    assert sum(counts["flipped label"]) == round(0.1 * panels["digits_noise"]["n_examples"])

    curves = _record(out, "mislabeled")["data"]["curves"]
    assert curves["memorization"]["auc"] > 0.95
    per_example = ("learning_time", "forgetting_events", "el2n", "grand", "self_influence")
    recorded = ("learning_time_recorded", "forgetting_events_recorded")
    assert {*per_example, *recorded} <= set(curves)
    fpr, tpr = np.array(curves["memorization"]["fpr"]), np.array(curves["memorization"]["tpr"])
    assert np.all(np.diff(fpr) > 0) and np.all(np.diff(tpr) >= 0)

    pairs = _record(out, "influence")["data"]["pairs"]
    planted = {(p["train_index"], p["test_index"]) for p in pairs}
    assert {(i, i) for i in range(PLANTED_PAIRS)} <= planted
    assert all(p["influence"] == pytest.approx(1.0) for p in pairs[:PLANTED_PAIRS])
    # right on every IN replica, wrong on every OUT one: still an interval of nonzero width
    for p in pairs[:PLANTED_PAIRS]:
        assert 0.5 < p["ci_low"] < 1.0 and p["ci_high"] == pytest.approx(1.0)

    tail = _record(out, "long_tail")["data"]
    assert (
        tail["binned"]["mean"][0]
        > 0.8
        > 0.2
        > np.nanmax(np.array(tail["binned"]["mean"][2:], dtype=float))
    )
    single = tail["rare_test_accuracy"]["1"]
    assert single["all IN"]["mean"] == 1.0 and single["none IN"]["mean"] == 0.0

    forgetting = _record(out, "forgetting")["data"]
    for name in ("learning_time", "forgetting_events"):
        assert forgetting["proxies"][name]["flipped_minus_clean"]["ci_low"] > 0, name

    designs = _record(out, "convergence")["data"]["designs"]
    assert designs["balanced"]["missing"][0][0] == 0.0
    assert designs["bernoulli"]["R"] == [4, 8, 16]
    for d in designs.values():
        for mean, low, high in d["split_half"] + d["missing"]:
            assert low is None or low <= mean <= high

    theory = _record(out, "theory")["data"]
    assert theory["widths"] == THEORY_WIDTHS
    pearson = theory["curves"]["network~ntk_gd_paired"]["memorization"]["pearson"]["value"]
    assert pearson == [0.4, 0.9]
    assert list(theory["scatter"]) == [str(w) for w in THEORY_WIDTHS]
    for k, width in enumerate(THEORY_WIDTHS):
        points, planted = theory["scatter"][str(width)], _theory_memorization(k)
        assert points["network"][0] is None
        for model in ("network", "ntk_gd_paired"):
            stored = np.array(points[model][1:], dtype=float)
            np.testing.assert_allclose(stored, planted[model][1:], rtol=1e-5)
        assert points["pearson"]["value"] == pearson[k]

    consistency = _record(out, "consistency")["data"]
    assert consistency["ratios"] == [0.1, 0.25, 0.5, 0.75, 0.9]


def _interval(value: float, low: float, high: float, digits: int) -> str:
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def test_captions_state_the_numbers_of_their_json(synthetic):
    _, out = synthetic
    for name in FAST_FIGURES:
        assert "± 0.00" not in _record(out, name)["caption"], name

    record = _record(out, "memorization")
    for p in record["data"]["panels"]:
        for m in p["mean"].values():
            assert _interval(m["value"], m["ci_low"], m["ci_high"], 3) in record["caption"]
        # the difference is that of the stored per-example estimates' group means
        study = open_store(str(out / "studies" / p["study"]))
        masks, correct = study.masks(), study.load_outputs(np.arange(study.replicas)).train_correct
        mem = mj.estimators.memorization(masks, correct).value
        flipped = build_dataset(SYNTHETIC[p["study"]]["dataset"]).train_info.get("flipped")
        if flipped is None:
            assert "flipped_minus_clean" not in p
            continue
        d = p["flipped_minus_clean"]
        assert d["value"] == pytest.approx(mem[flipped].mean() - mem[~flipped].mean(), abs=1e-5)
        numbers = _interval(d["value"], d["ci_low"], d["ci_high"], 3).replace(
            " [", ", 95% interval ["
        )
        assert (
            f"flipped labels have a larger mean memorization than clean ones (difference {numbers})"
            in record["caption"]
        )

    record = _record(out, "extremes")
    for p in record["data"]["panels"]:
        for e in p["most"] + p["least"]:
            assert e["ci_low"] <= e["memorization"] <= e["ci_high"] and e["ci_low"] < e["ci_high"]
        top = ", ".join(
            _interval(e["memorization"], e["ci_low"], e["ci_high"], 2) for e in p["most"][:3]
        )
        assert f"top scores {top}" in record["caption"]

    record = _record(out, "consistency")
    for c in record["data"]["c_score_groups"].values():
        assert _interval(c["mean"], c["ci_low"], c["ci_high"], 2) in record["caption"]


def test_privacy_preservation_captions_state_their_json_with_intervals(synthetic):
    _, out = synthetic
    record = _record(out, "dp_sgd")
    rows = record["data"]["rows"]
    assert rows[0]["epsilon"] is None  # no DP: infinite epsilon, stored as null
    for r in rows:
        m = r["mean_memorization"]
        assert _interval(m["value"], m["low"], m["high"], 2) in record["caption"]
    assert "never exceeds the accountant's ε" in record["caption"]
    record = _record(out, "random_labels")
    for r in record["data"]["rows"]:
        if r["random_labels"] == 1.0:
            t = r["test_accuracy"]
            assert _interval(t["value"], t["low"], t["high"], 2) in record["caption"]


def test_attribution_caption_states_its_json_with_intervals(synthetic):
    _, out = synthetic
    record = _record(out, "attribution")
    data, caption = record["data"], record["caption"]
    for r in data["control"]["rows"]:
        saved = r["replicas_saved"]
        assert _interval(saved["value"], saved["low"], saved["high"], 2) in caption
    for r in data["loo"]["rows"]:
        p = r["pearson"]
        assert _interval(p["value"], p["low"], p["high"], 2) in caption
    top = data["lds"]["digits"]["rows"][5]  # datamodels-ridge at the most replicas
    assert f"datamodels-ridge (32 replicas) {_interval(0.4, 0.37, 0.43, 2)}" in caption
    assert f"tracin (8 replicas) {_interval(0.1, 0.07, 0.13, 2)}" in caption  # its own most
    # 0.8 saved at width 1024 is more than half, 0.1 at width 64 is not
    assert "above 0.5) for correctness at width 1024, margin at width 1024:" in caption
    assert top["value"] == 0.4


TRIPLE = re.compile(r"(-?\d+\.\d+) \[(-?\d+\.\d+), (-?\d+\.\d+)\]")


def _triples(caption: str) -> list[tuple[float, float, float]]:
    """Every "value [low, high]" of a caption, as numbers."""
    return [tuple(map(float, m)) for m in TRIPLE.findall(caption)]


def _rounded(value: float, low: float, high: float, digits: int, scale: float = 1.0) -> tuple:
    return tuple(round(scale * v, digits) for v in (value, low, high))


def _statement(d: dict, *args: str) -> str:
    return difference_statement(*args, d["value"], d["ci_low"], d["ci_high"])


def test_long_tail_caption_states_its_json_with_intervals(synthetic):
    _, out = synthetic
    record = _record(out, "long_tail")
    data, caption = record["data"], record["caption"]
    b = data["binned"]
    shown = [k for k, c in enumerate(b["count"]) if c]
    for k in shown:  # means over a bin's examples, intervals over replica blocks
        assert (
            b["ci_low"][k] <= b["mean"][k] <= b["ci_high"][k] and b["ci_low"][k] < b["ci_high"][k]
        )
    d = b["singletons_minus_largest"]
    top = b["labels"].index(d["largest_bin"])
    assert top == shown[-1] and d["ci_low"] > 0  # planted: singletons are memorized
    rare = data["rare_test_accuracy"]
    for c in rare.values():
        for cond in ("all IN", "none IN"):
            a = c[cond]
            assert a["ci_low"] <= a["mean"] <= a["ci_high"] and a["ci_low"] < a["ci_high"]
        diff = c["all_minus_none"]
        assert diff["value"] == pytest.approx(c["all IN"]["mean"] - c["none IN"]["mean"], abs=1e-5)
        assert (
            diff["ci_low"] <= diff["value"] <= diff["ci_high"] and diff["ci_low"] < diff["ci_high"]
        )
    single = rare["1"]
    assert 0.5 < single["all_minus_none"]["ci_low"] < 1.0 == single["all_minus_none"]["ci_high"]
    test = data["mean_test_accuracy"]
    expected = [
        _rounded(b["mean"][0], b["ci_low"][0], b["ci_high"][0], 2),
        _rounded(b["mean"][top], b["ci_low"][top], b["ci_high"][top], 2),
        _rounded(test["value"], test["ci_low"], test["ci_high"], 1, 100),
        *(
            _rounded(single[c]["mean"], single[c]["ci_low"], single[c]["ci_high"], 1, 100)
            for c in ("all IN", "none IN")
        ),
    ]
    assert _triples(caption) == expected
    more = f"examples of subpopulations of {d['largest_bin']}"
    assert _statement(d, "singletons", more, "mean memorization") in caption
    assert "singletons have a larger mean memorization" in caption
    args = ("replicas trained on the singleton", "those trained without it")
    assert _statement(single["all_minus_none"], *args, "accuracy on its test examples") in caption


def test_mislabeled_caption_states_its_json_with_intervals(synthetic):
    _, out = synthetic
    record = _record(out, "mislabeled")
    data, caption = record["data"], record["caption"]
    store = open_store(str(out / "studies" / data["study"]))
    outputs = store.load_outputs(np.arange(store.replicas))
    flipped = build_dataset(SYNTHETIC[data["study"]]["dataset"]).train_info["flipped"]
    blocks = mj.subsets.block_ids(np.arange(store.replicas), 0.5, "balanced")
    rel = mj.relations.relations(store.masks(), outputs, flipped, blocks=blocks)
    for name, c in data["curves"].items():
        low, high = c["auc_ci"]
        assert c["auc"] == pytest.approx(rel.flipped_auc[name], abs=1e-5)
        assert (low, high) == pytest.approx(rel.flipped_auc_ci[name], abs=1e-5)
        assert low <= c["auc"] <= high and low < high
        tpr, tpr_low, tpr_high = (np.array(c[k], float) for k in ("tpr", "tpr_low", "tpr_high"))
        assert (tpr_low <= tpr + 1e-6).all() and (tpr - 1e-6 <= tpr_high).all()
        assert (tpr_low < tpr_high).all()
    best = data["best_proxy"]
    assert best not in ("memorization", "held_out_accuracy")  # a single-run proxy
    assert data["curves"][best]["auc"] == max(
        c["auc"]
        for k, c in data["curves"].items()
        if k not in ("memorization", "held_out_accuracy")
    )
    mem, top = data["curves"]["memorization"], data["curves"][best]
    assert _triples(caption) == [_rounded(c["auc"], *c["auc_ci"], 3) for c in (mem, top)]
    d = data["memorization_minus_best_proxy"]
    assert d["ci_low"] <= d["value"] <= d["ci_high"] and d["ci_low"] < d["ci_high"]
    label = LABELS[best]
    assert _statement(d, "memorization scores", f"{label} scores", "AUC") in caption


def test_forgetting_caption_states_its_json_with_intervals(synthetic):
    _, out = synthetic
    record = _record(out, "forgetting")
    data, caption = record["data"], record["caption"]
    store = open_store(str(out / "studies" / data["study"]))
    outputs = store.load_outputs(np.arange(store.replicas))
    flipped = build_dataset(SYNTHETIC[data["study"]]["dataset"]).train_info["flipped"]
    masks = store.masks()
    # forgetting: per-example averages over IN replicas, a t interval over a group's examples
    per_example = np.array(
        [outputs.forgetting_events[masks[:, i], i].mean() for i in range(len(flipped))]
    )
    for g, group in (("clean label", ~flipped), ("flipped label", flipped)):
        v = per_example[group]
        half = t_dist.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
        m = data["proxies"]["forgetting_events"]["mean"][g]
        assert m["value"] == pytest.approx(v.mean(), abs=1e-5)
        assert (m["ci_low"], m["ci_high"]) == pytest.approx(
            (v.mean() - half, v.mean() + half), abs=1e-5
        )
    expected = []
    for name in ("forgetting_events", "learning_time"):
        p = data["proxies"][name]
        for g in ("clean label", "flipped label"):
            m = p["mean"][g]
            assert m["ci_low"] <= m["value"] <= m["ci_high"] and m["ci_low"] < m["ci_high"]
            expected.append(_rounded(m["value"], m["ci_low"], m["ci_high"], 2))
        d = p["flipped_minus_clean"]
        assert d["ci_low"] > 0  # planted: flipped labels are forgotten more and learned later
        what = "mean forgetting" if name == "forgetting_events" else "mean learning time"
        assert _statement(d, "flipped labels", "clean ones", what) in caption
        b = p["vs_memorization"]
        for k, c in enumerate(b["count"]):
            if c >= 2:
                assert b["ci_low"][k] <= b["mean"][k] <= b["ci_high"][k]
    for name in ("forgetting_events", "learning_time"):
        r = data["proxies"][name]["spearman_with_memorization"]
        assert r["ci"][0] < r["value"] < r["ci"][1]
        expected.append(_rounded(r["value"], *r["ci"], 2))
    rec = data["forgetting_events_recorded"]
    expected += [
        _rounded(rec["mean"][g]["value"], rec["mean"][g]["ci_low"], rec["mean"][g]["ci_high"], 2)
        for g in ("clean label", "flipped label")
    ]
    assert _triples(caption) == expected


def test_marginal_utility_summary_has_replica_intervals_and_its_caption_states_them():
    """Accuracies of 6 replicas per point: t intervals over replicas and Welch differences
    against scipy; the caption's numbers and wording come from them."""
    from scipy import stats

    from paper_figures.fig03_marginal_utility import accuracy_summary, caption

    rng = np.random.default_rng(0)
    shift = np.array([0.0, -0.05, 0.0, -0.001, 0.0])[:, None]  # threshold 1: memorized cost
    acc = 0.9 + shift + 0.01 * rng.standard_normal((5, 6))
    data = {
        "dataset": "digits",
        "replicas_per_point": 6,
        "thresholds": [0.5, 0.1],
        "removed": [10, 200],
        **accuracy_summary(acc),
    }
    full = data["full_data_accuracy"]
    ci = stats.t.interval(0.95, 5, loc=acc[0].mean(), scale=stats.sem(acc[0]))
    assert full["mean"] == pytest.approx(acc[0].mean())
    assert (full["ci_low"], full["ci_high"]) == pytest.approx(ci)
    expected = [_rounded(full["mean"], full["ci_low"], full["ci_high"], 3)]
    for i in range(2):
        mem, rnd = acc[1 + 2 * i], acc[2 + 2 * i]
        for key, a in (("memorized_removed", mem), ("random_removed", rnd)):
            m = data[key]
            ci = stats.t.interval(0.95, 5, loc=a.mean(), scale=stats.sem(a))
            assert (m["ci_low"][i], m["ci_high"][i]) == pytest.approx(ci)
            expected.append(_rounded(m["mean"][i], m["ci_low"][i], m["ci_high"][i], 3))
        welch = stats.ttest_ind(rnd, mem, equal_var=False).confidence_interval(0.95)
        d = {k: data["random_minus_memorized"][k][i] for k in ("mean", "ci_low", "ci_high")}
        assert d["mean"] == pytest.approx(rnd.mean() - mem.mean())
        assert (d["ci_low"], d["ci_high"]) == pytest.approx((welch.low, welch.high))
    text = caption(data)
    assert _triples(text) == expected
    diff = data["random_minus_memorized"]
    assert "without random examples have a larger test accuracy" in text  # threshold 0.5
    assert diff["ci_low"][0] > 0 and diff["ci_low"][1] < 0 < diff["ci_high"][1]
    assert "do not differ distinguishably in test accuracy" in text  # threshold 0.1


def test_marginal_utility_families_remove_the_memorized_or_as_many_random_examples(digits):
    """Members of figure 3's retraining: the all-data baseline, one member per distinct set
    of examples above a threshold (design all), one per distinct count removed at random
    (design fixed: each replica leaves out its own k); datasets and masks checked directly."""
    from memjax.study import FamilyConfig
    from paper_figures.fig03_marginal_utility import removed_sets, retraining_families

    n = digits.n_train
    mem = np.linspace(-0.2, 0.9, n)
    mem[[3, 900]] = np.nan
    thresholds = [0.95, 0.8, 0.79999, 0.5]  # nothing removed; two thresholds, one set
    removed = removed_sets(mem, thresholds)
    assert removed[0] == [] and removed[1] == removed[2]
    assert removed[3] == [i for i in range(n) if np.isfinite(mem[i]) and mem[i] > 0.5]
    source = StudyConfig.from_dict({**_study(DIGITS, 8), "name": "source"})
    memorized, random = retraining_families(source, removed, n, 4, 7)
    assert isinstance(random, FamilyConfig)
    assert [m.values["dataset.exclude"] for m in memorized.members] == [[], removed[1], removed[3]]
    assert [m.values["subsets.ratio"] for m in random.members] == [
        (n - len(removed[1])) / n,
        (n - len(removed[3])) / n,
    ]
    fingerprints = set()
    for m in memorized.members:
        cfg = m.config
        assert (cfg.seed, cfg.replicas, cfg.model, cfg.train) == (7, 4, source.model, source.train)
        ds = build_dataset(cfg.dataset)
        fingerprints.add(ds.fingerprint)
        kept = np.setdiff1d(np.arange(n), m.values["dataset.exclude"])
        np.testing.assert_array_equal(ds.train_info["original_index"], kept)
        np.testing.assert_array_equal(ds.x_train, digits.x_train[kept])
        np.testing.assert_array_equal(ds.y_train, digits.y_train[kept])
        masks = mj.subsets.sample(ds.n_train, 4, cfg.ratio, cfg.seed, cfg.design)
        assert cfg.design == "all" and masks.all()
    assert len(fingerprints) == 3
    for m, r in zip(random.members, (removed[1], removed[3]), strict=True):
        cfg = m.config
        assert build_dataset(cfg.dataset).fingerprint == digits.fingerprint
        masks = mj.subsets.sample(n, 4, cfg.ratio, cfg.seed, cfg.design)
        assert cfg.design == "fixed" and ((~masks).sum(axis=1) == len(r)).all()
        assert len({row.tobytes() for row in masks}) == 4  # each replica its own removal
    nothing, none = retraining_families(source, [[], []], n, 4, 7)
    assert none is None and [m.values for m in nothing.members] == [{"dataset.exclude": []}]


def test_dataset_exclude_and_design_all_are_checked_early():
    from memjax.schema import ConfigError

    def config(dataset: dict, subsets: dict) -> StudyConfig:
        return StudyConfig.from_dict({**_study(dataset, 4), "subsets": subsets})

    assert config(DIGITS, {"replicas": 4, "design": "all"}).ratio == 1.0
    for bad in ([3, 1], [1, 1], [-1], "1,2", [0.5]):
        with pytest.raises(ConfigError, match="dataset.exclude"):
            config({**DIGITS, "exclude": bad}, {"replicas": 4})
    with pytest.raises(ConfigError, match="subsets.ratio"):
        config(DIGITS, {"replicas": 4, "design": "all", "ratio": 0.5})
    with pytest.raises(ValueError, match=r"must lie in \[0, 1437\)"):
        build_dataset(config({**DIGITS, "exclude": [0, 1437]}, {"replicas": 4}).dataset)
    noisy = build_dataset({**NOISY, "exclude": [0, 5]})
    whole = build_dataset(NOISY)  # labels are flipped before examples are removed
    for key in ("flipped", "clean_label"):
        np.testing.assert_array_equal(
            noisy.train_info[key], np.delete(whole.train_info[key], [0, 5])
        )
    np.testing.assert_array_equal(noisy.y_train, np.delete(whole.y_train, [0, 5]))


def test_difference_statement_wording_follows_the_interval():
    args = ("flipped labels", "clean ones", "mean memorization")
    assert "have a larger" in difference_statement(*args, 0.5, 0.4, 0.6)
    assert "have a smaller" in difference_statement(*args, -0.5, -0.6, -0.4)
    same = difference_statement(*args, 0.05, -0.01, 0.11)
    assert "do not differ distinguishably" in same and "includes 0" in same
    assert "[-0.010, 0.110]" in same


@pytest.mark.parametrize("ratio", [0.5, 0.25])
def test_example_average_is_the_estimators_linearization_over_blocks(ratio):
    """One example's weight: the average is its memorization (held-out accuracy) with the
    estimators' own design-aware standard error; a group mean is the mean of the estimates."""
    rng = np.random.default_rng(3)
    replicas, n = 24, 9
    masks = mj.subsets.sample(n, replicas, ratio, seed=1)
    blocks = mj.subsets.block_ids(np.arange(replicas), ratio, "balanced")
    values = rng.standard_normal((replicas, n)) + masks + rng.standard_normal((replicas, 1))
    mem = mj.estimators.memorization(masks, values, blocks)
    held = mj.estimators.held_out_accuracy(masks, values, blocks)
    for i in range(n):
        one = np.eye(n)[i]
        e = example_average(masks, values, blocks, one)
        assert e["value"] == pytest.approx(mem.value[i]) and e["stderr"] == pytest.approx(
            mem.stderr[i]
        )
        assert e["ci_low"] == pytest.approx(mem.ci_low[i]) and e["ci_high"] == pytest.approx(
            mem.ci_high[i]
        )
        h = example_average(masks, values, blocks, one, held_out=True)
        assert h["value"] == pytest.approx(held.value[i]) and h["stderr"] == pytest.approx(
            held.stderr[i]
        )
    group = example_average(masks, values, blocks, np.full(n, 1 / n))
    assert group["value"] == pytest.approx(mem.value.mean())
    # blocks are the unit: averaging with each replica independent ignores their dependence
    assert example_average(masks, values, None, np.full(n, 1 / n))["stderr"] != pytest.approx(
        group["stderr"], rel=1e-3
    )


def test_held_out_group_mean_of_all_right_replicas_has_an_open_interval():
    masks = mj.subsets.sample(6, 8, 0.5, seed=0)
    blocks = mj.subsets.block_ids(np.arange(8), 0.5, "balanced")
    e = example_average(masks, np.ones((8, 6), bool), blocks, np.full(6, 1 / 6), held_out=True)
    assert e["value"] == 1.0 and e["stderr"] == 0.0
    assert 0.5 < e["ci_low"] < 1.0 and e["ci_high"] == 1.0


def test_influence_null_permutes_whole_blocks():
    blocks = mj.subsets.block_ids(np.arange(24), 1 / 3, "balanced")  # 8 blocks of 3
    for seed in range(5):
        rows = block_permutation(blocks, 24, seed)
        assert sorted(rows) == list(range(24))
        targets = set()
        for g in range(8):
            mine = np.flatnonzero(blocks == g)
            (source,) = set(blocks[rows[mine]])  # a block's rows come from one block ...
            assert source != g  # ... never its own
            np.testing.assert_array_equal(rows[mine], np.flatnonzero(blocks == source))  # in order
            targets.add(source)
        assert len(targets) == 8
    independent = block_permutation(None, 10, 0)
    assert sorted(independent) == list(range(10)) and (independent != np.arange(10)).all()
    # several seeds give different derangements
    assert len({tuple(block_permutation(blocks, 24, s)) for s in range(5)}) > 1
    with pytest.raises(ValueError, match="unequal sizes"):
        block_permutation(np.array([0, 0, 1, 1, 2]), 5, 0)


def test_convergence_groups_are_made_of_whole_blocks():
    blocks = mj.subsets.block_ids(np.arange(20), 0.5, "balanced")  # 10 pairs
    groups = block_groups(blocks, 20, 2)
    assert len(groups) == 5
    np.testing.assert_array_equal(np.concatenate(groups), np.arange(20))
    for g in groups:
        assert len(g) == 4 and len(set(blocks[g])) == 2
        assert all((blocks == b).sum() == (blocks[g] == b).sum() for b in set(blocks[g]))
    assert [len(g) for g in block_groups(None, 10, 4)] == [4, 4]


def test_c_score_is_the_mean_of_per_ratio_held_out_accuracies(synthetic):
    """Recomputed from the stored studies by plain loops over replicas."""
    _, out = synthetic
    data = _record(out, "consistency")["data"]
    per_ratio = []
    for name in data["studies"]:
        store = open_store(str(out / "studies" / name))
        rows = np.arange(store.replicas)
        if name == "digits_clean":
            rows = rows[store.replicas // 2 : 2 * (store.replicas // 2)]
        masks = store.masks()[rows]
        correct = store.load_outputs(rows).train_correct
        per_ratio.append([correct[~masks[:, i], i].mean() for i in range(masks.shape[1])])
    expected = np.mean(per_ratio, axis=0)
    np.testing.assert_allclose(np.array(data["c_score"]["value"], float), expected, atol=1e-5)
    low, high = (np.array(data["c_score"][k], float) for k in ("ci_low", "ci_high"))
    assert (low <= expected + 1e-5).all() and (expected - 1e-5 <= high).all() and (low < high).all()
    for g, c in data["c_score_groups"].items():
        assert c["mean"] == pytest.approx(np.mean(data["curves"][g]["mean"]), abs=1e-5)


def test_privacy_figure_stops_at_resolvable_fprs_and_shows_intervals(synthetic):
    _, out = synthetic
    record = _record(out, "privacy")
    attacks = record["data"]["attacks"]
    assert attacks["lira_online"]["convention"] == "reference"
    assert attacks["lira_offline_paper"]["convention"] == "paper"
    # the study stored 3 query views: LiRA uses them, the identity query alone is beside it
    assert record["data"]["query_views"] == 3 and "lira_online_identity" in attacks
    assert "under 3 views" in record["caption"] and "identity query alone" in record["caption"]
    for a in attacks.values():
        n_neg = a["n_nonmembers"]
        start = min(a["fpr"])  # the first log-grid point (step 10^0.1) that 1/N resolves
        assert start >= 1 / n_neg > start / 10**0.1
        for fpr, tpr in a["tpr_at_fpr"].items():
            if float(fpr) * n_neg <= 1:  # unresolvable: no number, a reason
                assert tpr is None and str(n_neg) in a["undefined"][fpr]
            else:
                low, high = a["tpr_ci"][fpr]
                assert low <= tpr <= high and high > low
    assert "undefined" in record["caption"] and "Clopper-Pearson" in record["caption"]


def test_theory_scatter_shows_narrowest_middle_and_widest():
    from paper_figures.fig06_theory import scatter_widths

    assert scatter_widths([64, 256, 1024, 4096]) == [64, 1024, 4096]
    assert scatter_widths([16, 1024]) == [16, 1024]
    assert scatter_widths([128]) == [128]


def test_index_shows_every_figure_with_caption_and_inputs(synthetic):
    _, out = synthetic
    index = (out / "index.md").read_text()
    for name in FAST_FIGURES:
        record = _record(out, name)
        assert f"## Figure {record['figure']}: {record['title']}" in index
        assert f"![Figure {record['figure']}: {record['title']}]({record['files']['png']})" in index
        assert record["caption"] in index
    assert "study `studies/longtail` (16 replicas of long-tail mixture)" in index


def test_redrawing_reuses_the_stores_and_gives_the_same_numbers(synthetic):
    configs, out = synthetic
    done = sorted((out / "studies").glob("*/done/chunk-*"))
    stamps = [p.stat().st_mtime_ns for p in done]
    before = _record(out, "privacy")["data"]
    make_figures(["privacy"], quick=True, out=out, config_dir=configs, progress=False)
    assert _record(out, "privacy")["data"] == before
    assert [p.stat().st_mtime_ns for p in done] == stamps


@pytest.mark.parametrize("mode", MODES)
def test_shipped_configs_cover_every_figure_and_state_runtimes(mode, tmp_path):
    ctx = Context(mode, tmp_path)
    ctx.check_studies({s for spec in figures().values() for s in spec.studies})
    assert all(ref.expected_runtime and ref.config.description for ref in ctx.refs.values())
    assert {ref.config.design for name, ref in ctx.refs.items() if "ratio" not in name} == {
        "balanced",
        "fixed",
        "bernoulli",
    }
    assert ctx.figure_settings("marginal_utility")["replicas"] >= 8
    assert not any(tmp_path.iterdir())


def test_shipped_modes_differ_only_in_replicas_names_and_statements(tmp_path):
    """One file per study: full is quick with more replicas (and its own name, command and
    runtime); figure 3 retrains more replicas at more thresholds in full."""
    quick, full = Context("quick", tmp_path), Context("full", tmp_path)
    assert set(quick.refs) == set(full.refs)
    for name, ref in quick.refs.items():
        q, f = ref.config, full.refs[name].config
        assert f.replicas >= 10 * q.replicas and (q.name, f.name) == (
            f"{q.name[:-6]}-quick",
            f"{q.name[:-6]}-full",
        )
        assert replace(f, replicas=q.replicas, name=q.name, **q.about()) == q
    settings = [ctx.figure_settings("marginal_utility") for ctx in (quick, full)]
    assert settings[0]["replicas"] < settings[1]["replicas"]
    assert set(settings[0]["thresholds"]) < set(settings[1]["thresholds"])


def test_unknown_figure_names_fail_early_with_the_valid_names(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown figure name.*'nope'.*valid names are"):
        make_figures(["memorization", "nope"], quick=True, out=tmp_path)
    assert figures_main(["nope", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m paper_figures: error:")
    assert "'nope'" in err and ", ".join(figure_names()) in err
    assert not any(tmp_path.iterdir())


def test_every_figure_module_registers_itself_once_in_paper_order():
    """The registry is exactly the figNN_<name>.py files, read off the file names here."""
    files = sorted(
        (int(m[1]), m[2])
        for path in (REPO / "paper_figures").glob("*.py")
        if (m := re.fullmatch(r"fig(\d+)_(\w+)", path.stem))
    )
    specs = figures()
    assert [(spec.number, spec.name) for spec in specs.values()] == files
    assert list(specs) == [name for _, name in files] == list(figure_names())
    assert all(figure_spec(name) is spec for name, spec in specs.items())


def _spec(number: int, name: str) -> FigureSpec:
    return FigureSpec(number, name, "title", (), dict, lambda d: None, str)


def test_registry_refuses_misnamed_duplicate_and_missing_figures():
    one, two = _spec(1, "one"), _spec(2, "two")
    got = collect(
        {"fig02_two": SimpleNamespace(FIGURE=two), "fig01_one": SimpleNamespace(FIGURE=one)}
    )
    assert list(got.items()) == [("one", one), ("two", two)]
    with pytest.raises(ValueError, match="fig01_one holds figure fig02_two: name the module"):
        collect({"fig01_one": SimpleNamespace(FIGURE=two)})
    with pytest.raises(ValueError, match="fig01_one and fig01_two share the number 1"):
        collect(
            {
                "fig01_one": SimpleNamespace(FIGURE=one),
                "fig01_two": SimpleNamespace(FIGURE=_spec(1, "two")),
            }
        )
    with pytest.raises(ValueError, match="fig01_one and fig02_one share the name 'one'"):
        collect(
            {
                "fig01_one": SimpleNamespace(FIGURE=one),
                "fig02_one": SimpleNamespace(FIGURE=_spec(2, "one")),
            }
        )
    with pytest.raises(TypeError, match="fig03_three defines no FIGURE"):
        collect({"fig03_three": SimpleNamespace()})


@pytest.mark.slow
def test_command_line_lists_the_figures_from_the_repository_root():
    """``python -m paper_figures`` runs from a checkout's root with nothing on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    listed = subprocess.run(
        [sys.executable, "-m", "paper_figures", "--list"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split(" | ") for line in listed.splitlines()[2:]]
    assert listed.strip() == figure_table()
    assert [(int(r[0].strip("| ")), r[1].strip("`")) for r in rows] == [
        (spec.number, spec.name) for spec in figures().values()
    ]
    assert "| 6 | `theory` |" in listed and "digits_ratio_90" in listed


def test_help_names_every_figure(capsys):
    with pytest.raises(SystemExit) as exit_:
        figures_main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert text.startswith("usage: python -m paper_figures [-h] [--quick] [--out OUT]")
    assert f"figures: {', '.join(figure_names())}" in text


def test_missing_study_config_runtime_and_modes_are_refused(tmp_path):
    configs = tmp_path / "configs"
    _write_configs(configs, {"digits_clean": SYNTHETIC["digits_clean"]})
    with pytest.raises(ValueError, match=r"no study config for \['longtail'\]"):
        make_figures(["long_tail"], quick=True, out=tmp_path / "out", config_dir=configs)
    path = configs / "studies" / "digits_clean.yaml"
    only_quick = {**SYNTHETIC["digits_clean"], "modes": {"quick": RUNTIMES["quick"], "full": {}}}
    path.write_text(yaml.safe_dump(only_quick))
    with pytest.raises(ValueError, match="digits_clean.yaml: state .* in mode full .*expected_"):
        make_figures(["influence"], out=tmp_path / "out", config_dir=configs)
    path.write_text(yaml.safe_dump({**SYNTHETIC["digits_clean"], "expected_runtime": "1 s"}))
    with pytest.raises(ValueError, match="unknown mode 'quick': it declares no modes"):
        make_figures(["influence"], quick=True, out=tmp_path / "out", config_dir=configs)
    assert not (tmp_path / "out").exists()


def test_a_failing_figure_leaves_the_others_written(tmp_path):
    configs, out = tmp_path / "configs", tmp_path / "out"
    clean_as_noise = {"mnist1d_noise": SYNTHETIC["digits_clean"], "longtail": SYNTHETIC["longtail"]}
    _write_configs(configs, clean_as_noise)
    for seed, (name, config) in enumerate(clean_as_noise.items()):
        _fill_store(config, out / "studies" / name, seed)
    with pytest.raises(FiguresFailedError, match="mislabeled: ValueError: .*needs label noise"):
        make_figures(["mislabeled", "long_tail"], out=out, config_dir=configs, progress=False)
    assert (out / "fig07_long_tail.png").exists() and not (out / "fig08_mislabeled.json").exists()
    assert "Figure 7" in (out / "index.md").read_text()


@pytest.mark.slow
def test_quick_figures_end_to_end_train_then_reuse(tmp_path):
    """Two figures from a freshly trained tiny study (and a retraining), then a redraw that
    trains nothing."""
    configs, out = tmp_path / "configs", tmp_path / "out"
    tiny = _study(DIGITS, 8, epochs=8, batch_size=128, optimizer="adam", learning_rate=0.01)
    _write_configs(
        configs,
        {"digits_clean": tiny},
        {"marginal_utility": {"thresholds": [0.3], "replicas": 2, "seed": 1}},
    )
    written = make_figures(
        ["marginal_utility", "influence"], quick=True, out=out, config_dir=configs, progress=False
    )
    assert [p.name for p in written] == ["fig03_marginal_utility.json", "fig04_influence.json"]
    data = _record(out, "marginal_utility")["data"]
    assert data["removed"][0] > 0 and data["full_data_accuracy"]["mean"] > 0.5  # chance: 0.1
    full = data["full_data_accuracy"]
    assert full["ci_low"] < full["mean"] < full["ci_high"]
    families = sorted(p.name for p in (out / "studies" / "marginal_utility").iterdir())
    assert [f.split("-")[0] for f in families] == ["memorized", "random"]
    inputs = _record(out, "marginal_utility")["inputs"]
    assert [i.get("kind") for i in inputs[1:]] == ["study family"] * 2
    assert [i["replicas"] for i in inputs[1:]] == [2 * 2, 2]  # all data + 1 set; 1 count
    # the retrained replicas are ordinary studies: their accuracies are the figure's numbers
    fam = mj.open_family(str(out / "studies" / "marginal_utility" / families[0]))
    (full_values, full_study), (_, removed_study) = fam.members.values()
    assert full_values == {"dataset.exclude": []}
    assert removed_study.dataset.n_train == full_study.dataset.n_train - data["removed"][0]
    acc = full_study.outputs.test_correct.mean(axis=1)
    assert full["mean"] == pytest.approx(acc.mean())
    with pytest.raises(ValueError, match="design 'all'.*memorization is undefined"):
        estimate_study(full_study, str(tmp_path / "estimate"))
    stamps = {p: p.stat().st_mtime_ns for p in (out / "studies").rglob("*") if p.is_file()}
    os.utime(out / "index.md", ns=(0, 0))
    make_figures(["marginal_utility"], quick=True, out=out, config_dir=configs, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (out / "index.md").stat().st_mtime_ns > 0
    assert _record(out, "marginal_utility")["data"] == data
