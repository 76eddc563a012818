"""The theory-vs-width experiment end to end, on a tiny setting of its quick mode."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.slow
def test_quick_mode_tiny_setting_correlation_rises_with_width(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))  # the repo root
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
