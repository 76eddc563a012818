"""The theory-vs-width experiment: its block bootstrap, and end to end on a tiny setting of
its quick mode."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import memjax as mj
from experiments.theory_vs_width import agreement


@pytest.mark.parametrize("ratio", [0.5, 0.25])
def test_bootstrap_resamples_whole_blocks(ratio):
    replicas = 24
    blocks = mj.subsets.block_ids(np.arange(replicas), ratio, "balanced")
    sizes = np.bincount(blocks)
    draws = set()
    for seed in range(20):
        rows = agreement.bootstrap_rows(blocks, replicas, np.random.default_rng(seed))
        assert len(rows) == replicas
        # every block drawn contributes all its replicas, as many times as it was drawn
        drawn = np.bincount(blocks[rows], minlength=len(sizes))
        assert (drawn % sizes == 0).all()
        for b in np.flatnonzero(drawn):
            times = drawn[b] // sizes[b]
            np.testing.assert_array_equal(
                np.sort(rows[blocks[rows] == b]), np.repeat(np.flatnonzero(blocks == b), times)
            )
        draws.add(tuple(rows))
    assert len(draws) > 1
    single = agreement.bootstrap_rows(None, 7, np.random.default_rng(0))
    assert len(single) == 7 and set(single) <= set(range(7))
    with pytest.raises(ValueError, match="one id per replica"):
        agreement.bootstrap_rows(blocks[:5], replicas, np.random.default_rng(0))


def test_compare_reports_intervals_from_the_block_bootstrap():
    """Two models that agree up to noise: the bootstrap stderr and percentile interval are
    those of the same block resamples computed by hand."""
    rng = np.random.default_rng(0)
    replicas, n, m = 16, 40, 30
    masks = mj.subsets.sample(n, replicas, 0.5, seed=0)
    blocks = mj.subsets.block_ids(np.arange(replicas), 0.5, "balanced")

    def model(noise: float) -> mj.ReplicaOutputs:
        p_train = np.where(masks, 0.95, np.linspace(0.1, 0.9, n))
        shape = (replicas, m)
        return mj.ReplicaOutputs(
            replica_ids=np.arange(replicas),
            train_correct=rng.random((replicas, n)) < np.clip(p_train + noise, 0, 1),
            train_margin=np.zeros((replicas, n), np.float32),
            train_loss=np.zeros((replicas, n), np.float32),
            test_correct=rng.random(shape) < 0.7,
            test_margin=np.zeros(shape, np.float32),
            test_loss=np.zeros(shape, np.float32),
        )

    a, b = model(0.0), model(0.02)
    res = agreement.compare(masks, a, b, boots=50, seed=3, blocks=blocks)
    boot = np.random.default_rng(3)
    pearson = []
    for _ in range(50):
        rows = agreement.bootstrap_rows(blocks, replicas, boot)
        x, y = (
            mj.estimators.memorization(masks[rows], o.train_correct[rows]).value for o in (a, b)
        )
        pearson.append(agreement.correlations(x, y)["pearson"])
    mem = res["memorization"]["pearson"]
    assert mem["stderr"] == pytest.approx(np.std(pearson, ddof=1))
    assert mem["ci_low"] == pytest.approx(np.percentile(pearson, 2.5))
    assert mem["ci_high"] == pytest.approx(np.percentile(pearson, 97.5))
    assert 0.3 < mem["value"] < 1 and mem["ci_low"] < mem["ci_high"]


@pytest.mark.slow
def test_quick_mode_tiny_setting_correlation_rises_with_width(tmp_path):
    from experiments.theory_vs_width.__main__ import main
    from experiments.theory_vs_width.agreement import METRICS, PAIRS, QUANTITIES, correlations

    tiny = ["n_train=64", "n_test=64", "replicas=8", "widths=[16,1024]", "epochs=60",
            "bootstrap=30"]  # fmt: skip
    argv = ["--quick", "--out", str(tmp_path)] + [a for t in tiny for a in ("--set", t)]
    summary = main(argv)

    assert json.loads((tmp_path / "summary.json").read_text())["settings"]["widths"] == [16, 1024]
    with open(tmp_path / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(PAIRS) * len(QUANTITIES) * len(METRICS)
    assert "| 1024 | network | ntk_gd_paired |" in (tmp_path / "table.md").read_text()

    narrow, wide = (w["pairs"]["network~ntk_gd_paired"]["memorization"] for w in summary["widths"])
    assert wide["pearson"]["value"] > narrow["pearson"]["value"] + 0.2
    assert wide["pearson"]["value"] > 0.5
    assert 0 < wide["pearson"]["stderr"] < 0.3
    assert wide["pearson"]["ci_low"] < wide["pearson"]["ci_high"]
    assert wide["mad"]["value"] < narrow["mad"]["value"]
    # a wide network and its linearization memorize the same examples
    lin = summary["widths"][1]["pairs"]["network~linearized"]["memorization"]
    assert lin["pearson"]["value"] > 0.9

    # the per-example memorization it saves is what the agreement numbers were computed from
    for row in summary["widths"]:
        mem = {k: np.array(v, dtype=float) for k, v in row["memorization"].items()}
        assert all(len(v) == 64 for v in mem.values())
        for a, b in (("network", "ntk_gd_paired"), ("network", "linearized")):
            expected = row["pairs"][f"{a}~{b}"]["memorization"]["pearson"]["value"]
            assert correlations(mem[a], mem[b])["pearson"] == pytest.approx(expected, abs=1e-12)
    shared = summary["examples"]["memorization"]
    assert set(shared) == {"ntk_gd", "nngp"} and len(summary["examples"]["train_label"]) == 64
