"""`memjax lds`: a training study scored on an evaluation study, end to end."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
from scipy import stats

import memjax as mj
from memjax import data
from memjax.cli import main
from memjax.estimators import influence
from memjax.study import StudyConfig, run_study


def config(path: str, name: str, subsets: dict) -> StudyConfig:
    return StudyConfig.from_dict(
        {
            "name": name,
            "dataset": path,
            "model": {"type": "MLP", "widths": [32]},
            "subsets": subsets,
            "train": {
                "epochs": 10,
                "batch_size": None,
                "optimizer": "adam",
                "learning_rate": 0.02,
                "vectorize": "vmap",
            },
            "seed": 1,
            "chunk_size": 16,  # both studies share one compiled program
        }
    )


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    d = data.load("digits")
    root = tmp_path_factory.mktemp("lds")
    path = str(root / "digits60.npz")
    np.savez(
        path,
        x_train=d.x_train[:60],
        y_train=d.y_train[:60],
        x_test=d.x_test[:12],
        y_test=d.y_test[:12],
        num_classes=10,
    )
    train = config(path, "train", {"replicas": 32, "ratio": 0.5, "design": "balanced"})
    evaluation = config(path, "eval", {"replicas": 20, "ratio": 0.5, "design": "eval", "seeds": 2})
    run_study(train, str(root / "train"), progress=False)
    run_study(evaluation, str(root / "eval"), progress=False)
    return str(root / "train"), str(root / "eval")


def test_eval_study_averages_each_subsets_seeds(studies):
    ev = mj.open_study(studies[1], data_root=os.path.dirname(studies[1]))  # digits60.npz
    masks, values = ev.eval_subsets("test_margin")
    assert masks.shape == (10, 60) and values.shape == (10, 12)
    raw = ev.outputs.test_margin
    np.testing.assert_allclose(values, (raw[0::2] + raw[1::2]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(ev.blocks, np.arange(20) // 2)


@pytest.mark.slow
def test_memjax_lds_table(studies, tmp_path, capsys):
    train, ev = studies
    out = str(tmp_path / "out")
    chosen = "influence,datamodels-ridge,kernel-ntk,tracin,random"  # lasso: test_datamodels
    args = ["lds", train, "--eval", ev, "--n-boot", "200", "--out", out, "--estimators", chosen]
    args += ["--data-root", os.path.dirname(train)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "datamodels-ridge" in printed and "not available" in printed
    with open(f"{out}/lds.json") as f:
        table = json.load(f)
    rows = {(r["estimator"], r["replicas"]): r for r in table["rows"]}
    assert {r["replicas"] for r in table["rows"] if r["estimator"] == "influence"} == {
        4,
        8,
        16,
        32,
    }
    assert {r["replicas"] for r in table["rows"] if r["estimator"] == "tracin"} == {1, 2, 4, 8}
    # the study's own runs, retrained with checkpoints at epochs 2, 4, ..., 10
    assert "epochs [2, 4, 6, 8, 10]" in rows[("tracin", 8)]["note"]
    drift = float(rows[("tracin", 8)]["note"].rsplit(" ", 1)[1])
    assert drift < 1e-4  # float rounding of another program shape, not another run
    for row in table["rows"]:
        if row["value"] is not None:
            assert row["ci_low"] <= row["value"] <= row["ci_high"]
    # the influence row at all replicas equals an independent computation of the LDS
    root = os.path.dirname(train)
    study, evs = mj.open_study(train, data_root=root), mj.open_study(ev, data_root=root)
    attr = influence(study.masks, study.outputs.test_margin, study.blocks).value
    masks, values = evs.eval_subsets("test_margin")
    pred = masks.astype(float) @ attr.astype(float)
    ref = np.nanmean([stats.spearmanr(pred[:, j], values[:, j]).statistic for j in range(12)])
    assert rows[("influence", 32)]["value"] == pytest.approx(ref, abs=1e-9)
    with open(f"{out}/lds.csv") as f:
        assert len(list(csv.DictReader(f))) == len(table["rows"])
    assert rows[("random", 0)]["ci_low"] < 0.3  # the floor


def test_memjax_lds_refuses_a_non_eval_study(studies, capsys):
    train, _ = studies
    assert main(["lds", train, "--eval", train, "--data-root", os.path.dirname(train)]) == 2
    assert "is not an evaluation design" in capsys.readouterr().err


def test_memjax_lds_refuses_no_bootstrap_replicates_by_name(studies, capsys):
    train, evaluation = studies
    root = os.path.dirname(train)
    assert main(["lds", train, "--eval", evaluation, "--n-boot", "0", "--data-root", root]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--n-boot" in err and "got 0" in err
