"""`memjax bench`: one JSON line with the documented fields and a consistent FLOP model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_bench_prints_one_json_line():
    res = subprocess.run(
        [sys.executable, "-m", "memjax", "bench", "--replicas", "4", "--epochs", "1"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    rec = json.loads(lines[0])
    for key in (
        "replicas",
        "epochs",
        "replica_epochs_per_s",
        "gflops",
        "compile_s",
        "peak_memory_mb",
    ):
        assert key in rec
    assert rec["replicas"] == 4 and rec["epochs"] == 1
    # the shared workload's FLOP model: 3 x 2 x (40*256 + 256*256 + 256*10) x 15 steps x 128
    assert rec["gflop_per_replica_epoch"] == pytest.approx(0.9024, abs=1e-4)
    assert rec["gflops"] == pytest.approx(rec["replica_epochs_per_s"] * 0.9024, rel=0.02)
    assert rec["deterministic"] and rec["peak_memory_mb"] > 0
