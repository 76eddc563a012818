"""experiments/attribution end to end at a tiny size, and figure 12 drawn from its summary.

The kernel control is checked against the stored kernel study of the same model
(``mj.theory.kernel_study``, an independent code path), and in the lazy regime it must
lower the variance of margin memorization without moving the estimate.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import memjax as mj
from experiments.attribution.analysis import tables, write
from experiments.attribution.experiment import load_config, run
from memjax.theory.control import kernel_control
from paper_figures import figure_names, figure_spec

MLP = {"type": "MLP", "widths": [16], "activation": "relu", "parameterization": "standard"}
GD = {"epochs": 40, "batch_size": None, "optimizer": "sgd", "learning_rate": 1.0, "loss": "mse"}
TINY = {
    "lds": {
        "datasets": {"mnist1d": {"name": "mnist1d", "n_train": 60, "n_test": 12}},
        "model": MLP,
        "train": {"epochs": 5, "batch_size": 32, "optimizer": "adam", "learning_rate": 0.01},
        "replicas": 32,
        "estimators": ["influence", "datamodels-ridge", "kernel-ntk", "random"],
        "eval_subsets": 8,
        "eval_seeds": 2,
        "bootstrap": 100,
    },
    "loo": {
        "dataset": {"name": "mnist1d", "n_train": 16, "n_test": 5, "subset_seed": 1},
        "model": MLP,
        "train": {"epochs": 20, "batch_size": None, "optimizer": "adam", "learning_rate": 0.01},
        "seeds": 2,
        "ratios": [0.5],
        "replicas": 32,
        "bootstrap": 100,
    },
    "control": {
        "dataset": {"name": "mnist1d", "n_train": 48, "n_test": 8, "subset_seed": 0},
        "model": {**MLP, "parameterization": "ntk"},
        "train": GD,
        "widths": [512],
        "replicas": 32,
        "extra": 4,
        "bootstrap": 100,
    },
    "seed": 0,
}


pytestmark = pytest.mark.slow  # trains 7 small studies: 111 s at low load


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    out = tmp_path_factory.mktemp("attribution")
    return out, run("quick", str(out), settings=copy.deepcopy(TINY))


def test_summary_holds_every_part_with_intervals(summary):
    out, s = summary
    rows = s["lds"]["mnist1d"]["rows"]
    assert {r["estimator"] for r in rows} >= {"influence", "datamodels-ridge", "random"}
    for r in rows:
        if r["value"] is not None:
            assert r["ci_low"] <= r["value"] <= r["ci_high"]
    assert sorted({r["replicas"] for r in rows if r["estimator"] == "influence"}) == [4, 8, 16, 32]
    (loo_margin,) = [r for r in s["loo"]["rows"] if r["output"] == "margin"]
    assert loo_margin["pearson"]["low"] <= loo_margin["pearson"]["value"] <= 1
    assert s["loo"]["loo_replicas"] == 2 * 17
    write(str(out), s)
    text = (out / "tables.md").read_text()
    assert "datamodels-ridge" in text and "variance ratio" in text and text == tables(s)


def test_kernel_control_is_the_stored_paired_kernel_model_and_lowers_variance(summary):
    out, s = summary
    study = mj.open_study(str(out / "control" / "control-width-512"))
    stored = mj.theory.kernel_study(study, "ntk_gd_paired", str(out / "kernel"))
    control = kernel_control(study, "train_margin", extra=4)
    np.testing.assert_allclose(control.values, stored.outputs.train_margin, rtol=1e-5, atol=1e-5)
    assert control.extra_masks.shape == (4 * 32, 48)
    assert abs(control.extra_masks.mean() - 0.5) < 0.05  # the study's design, new blocks
    assert not (control.extra_masks[:32] == study.masks).all(axis=1).any()
    (margin,) = [r for r in s["control"]["rows"] if r["output"] == "margin"]
    assert margin["variance_ratio"]["high"] < 0.8, margin
    assert margin["shift"]["low"] <= 0 <= margin["shift"]["high"]


def test_figure_12_is_registered_and_draws_the_summary(summary):
    _, s = summary
    names = figure_names()
    assert names.index("attribution") == names.index("consistency") + 1
    spec = figure_spec("attribution")
    assert spec.stem == "fig12_attribution"
    fig = spec.draw(s)
    assert len(fig.axes) == 3
    text = spec.caption(s)
    (margin,) = [r for r in s["control"]["rows"] if r["output"] == "margin"]
    saved = margin["replicas_saved"]
    assert f"{saved['value']:.2f} [{saved['low']:.2f}, {saved['high']:.2f}]" in text


def test_config_modes_resolve():
    quick, full = load_config("quick"), load_config("full")
    assert quick["control"]["widths"] == [64, 1024] and len(full["control"]["widths"]) == 4
    assert quick["lds"]["replicas"] < full["lds"]["replicas"]
    with pytest.raises(ValueError, match="unknown mode"):
        load_config("medium")
    with pytest.raises(ValueError, match="unknown parts"):
        run("quick", "unused", ("lds", "plots"))
