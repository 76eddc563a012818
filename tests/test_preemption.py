"""Preemption: SIGTERM in the middle of a chunk stops `memjax run` within seconds, names the
abandoned chunk, leaves no marker for it, and the same command resumes; `memjax status`
states a chunk's expected wall time from the measured chunk timings."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from memjax.cli import EXIT_CODES
from memjax.study import open_store, study_status

# 3 chunks of 4 replicas, each training for seconds: the signal lands inside one.
SPEC = {
    "name": "preempted",
    "dataset": {"name": "digits"},
    "model": {"type": "MLP", "widths": [32]},
    "subsets": {"replicas": 12},
    "train": {"epochs": 150, "batch_size": 64},
    "seed": 5,
    "chunk_size": 4,
}


@pytest.mark.slow
def test_sigterm_mid_chunk_abandons_that_chunk_and_the_rerun_resumes(tmp_path):
    config, out = tmp_path / "study.yaml", tmp_path / "s"
    config.write_text(yaml.safe_dump(SPEC))
    cmd = [sys.executable, "-m", "memjax", "run", str(config), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    beat_path, deadline = out / "progress" / "job-0000.json", time.time() + 300
    while True:  # until chunk 1 or later is training: its first epochs reported, no marker
        assert proc.poll() is None and time.time() < deadline, "study ended before the signal"
        try:
            beat = json.loads(beat_path.read_text())
        except (OSError, ValueError):
            beat = {}
        if (beat.get("chunk") or 0) >= 1 and beat.get("replica_epochs_done"):
            break
        time.sleep(0.02)
    k = beat["chunk"]
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    _, stderr = proc.communicate(timeout=60)
    assert time.time() - sent < 5, "took more than 5 s to stop"
    assert proc.returncode == EXIT_CODES["terminated"] == 143
    assert stderr.count("\n") == 1 and f"abandoned chunk {k} (no marker written" in stderr
    assert "re-run the same command to resume" in stderr
    done = open_store(str(out)).done_chunks()
    assert k not in done and done == list(range(k))
    resumed = subprocess.run(cmd, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    status = study_status(open_store(str(out)))
    assert status["complete"] and status["chunks_finished"] == 3
    # a full chunk's wall time: chunk size / replicas per second over the timed chunks (the
    # resumed run's later chunks; each run's first chunk includes compilation)
    timings = [json.loads(p.read_text()) for p in sorted((out / "progress").glob("chunk-*"))]
    steady = [t for t in timings if not t["first_of_run"]]
    rate = sum(t["replicas"] for t in steady) / sum(t["seconds"] for t in steady)
    wall = status["chunk_wall_s"]
    assert abs(wall["expected"] - 4 / rate) < 1e-9 * wall["expected"]
    low, high = wall["range"]
    assert low <= wall["expected"] <= high or len(steady) == 1
    assert [round(low, 9), round(high, 9)] == [
        round(f(t["seconds"] for t in steady), 9) for f in (min, max)
    ]
    assert Path(out, "done", f"chunk-{k:06d}").exists()
