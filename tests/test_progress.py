"""Progress you can trust: per-epoch reports from inside the compiled trainer (counted in
replica-epochs, padding left out, results unchanged), the bar, chunk timings and heartbeats,
and the throughput and ETA that `memjax status` computes from them, for finished, complete,
running and killed studies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

import memjax as mj
from memjax.cli import main
from memjax.study import HEARTBEAT_S, StudyConfig, run_study

SPEC = mj.models.MLP(widths=(16,), parameterization="standard")
EPOCHS = 3
STUDY = {
    "name": "progress",
    "dataset": {"name": "longtail", "n_train": 200, "n_test": 50, "seed": 0},
    "model": {"type": "MLP", "widths": [16]},
    "subsets": {"replicas": 6, "ratio": 0.5, "design": "balanced"},
    "train": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "learning_rate": 0.01},
    "seed": 1,
    "chunk_size": 2,
}


def expected_reports(replicas: int, group: int, epochs: int, devices: int) -> list[int]:
    """The reports of one call, computed from the layout: groups are consecutive runs of
    ``group`` rows, padded to a whole number of groups per device. A group holding real
    replicas reports its count of them after every epoch when a device holds fewer groups
    than there are epochs, else once at its end (count x epochs)."""
    per_call = group * devices
    rows = -(-replicas // per_call) * per_call
    groups = -(-replicas // group)
    counts = [min(group, replicas - g * group) for g in range(groups)]
    if rows // per_call < epochs:
        return sorted(counts * epochs)
    return sorted(c * epochs for c in counts)


class Recorder:
    """A thread-safe progress sink that keeps every report."""

    def __init__(self) -> None:
        self.reports: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, replica_epochs: int) -> None:
        with self._lock:
            self.reports.append(replica_epochs)


@pytest.mark.parametrize(
    ("replicas", "group_size", "vectorize"),
    [(7, 3, "vmap"), (5, 2, "unroll"), (13, 1, "unroll")],
    ids=["vmap-g3", "unroll-g2", "unroll-g1-many-groups"],
)
@pytest.mark.slow
def test_reports_every_epoch_of_every_group_and_change_nothing(
    tiny, replicas, group_size, vectorize
):
    cfg = mj.TrainConfig(
        epochs=EPOCHS,
        batch_size=8,
        optimizer="adam",
        learning_rate=1e-2,
        group_size=group_size,
        vectorize=vectorize,
    )
    masks = mj.subsets.sample(tiny.n_train, replicas, 0.5, seed=2, design="bernoulli")
    sink = Recorder()
    with_progress = mj.train_replicas(SPEC, tiny, masks, cfg, seed=4, progress=sink)
    without = mj.train_replicas(SPEC, tiny, masks, cfg, seed=4)
    devices = len(jax.local_devices())
    assert sorted(sink.reports) == expected_reports(replicas, group_size, EPOCHS, devices)
    assert len(sink.reports) >= EPOCHS and min(sink.reports) > 0
    assert np.cumsum(sink.reports)[-1] == replicas * EPOCHS
    for name, value in without.arrays().items():
        np.testing.assert_array_equal(with_progress.arrays()[name], value, err_msg=name)


_FOUR_DEVICES = textwrap.dedent(
    """
    import json, sys, threading
    import jax
    import numpy as np
    import memjax as mj

    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 5)), rng.integers(0, 3, 40)
    ds = mj.data.from_arrays(x[:30], y[:30], x[30:], y[30:], 3)
    masks = mj.subsets.sample(30, 6, 0.5, seed=1)
    spec = mj.models.MLP(widths=(8,))
    cfg = mj.TrainConfig(epochs=3, batch_size=4, optimizer="sgd", learning_rate=0.1,
                         group_size=1, vectorize="unroll")
    reports, lock = [], threading.Lock()
    def sink(k):
        with lock:
            reports.append(k)
    a = mj.train_replicas(spec, ds, masks, cfg, seed=2, progress=sink)
    b = mj.train_replicas(spec, ds, masks, cfg, seed=2)
    same = all(np.array_equal(v, b.arrays()[k]) for k, v in a.arrays().items())
    print(json.dumps({"reports": reports, "identical": same}))
    """
)


@pytest.mark.slow
def test_reports_on_four_devices(tmp_path):
    """Sharded over 4 forced host devices, one replica per group (6 replicas padded to 8)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", _FOUR_DEVICES], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(got["reports"]) == expected_reports(6, 1, 3, devices=4)
    assert got["identical"]


def status(capsys, path: Path) -> dict:
    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    return json.loads(capsys.readouterr().out)


def read(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.slow
def test_status_reports_throughput_and_eta(tmp_path, capsys):
    cfg = StudyConfig.from_dict(STUDY)
    out = tmp_path / "s"
    capsys.readouterr()
    run_study(cfg, str(out), max_chunks=1)  # with its bar
    assert "2.0/2 replicas" in capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]
    first = read(out / "progress" / "chunk-000000.json")
    assert (first["chunk"], first["replicas"], first["epochs"]) == (0, 2, 2)
    assert first["first_of_run"] and first["seconds"] > 0
    assert read(out / "progress" / "job-0000.json")["state"] == "finished"
    got = status(capsys, out)
    assert got["chunks_finished"] == 1 and got["chunks_timed"] == 1
    rate = 2 / first["seconds"]  # only the first chunk is timed: its time is all there is
    assert got["replicas_per_s_per_job"] == pytest.approx(rate)
    assert got["eta_s"] == pytest.approx(4 / rate)  # 2 chunks of 2 replicas to go
    assert got["jobs_progress"][0]["state"] == "finished"

    run_study(cfg, str(out), progress=False)  # chunks 1 and 2: chunk 2 is not its run's first
    last = read(out / "progress" / "chunk-000002.json")
    assert not last["first_of_run"]
    got = status(capsys, out)
    assert got["complete"] and got["eta_s"] == 0
    assert got["replicas_per_s_per_job"] == pytest.approx(2 / last["seconds"])

    files = {p: p.stat().st_mtime_ns for p in (out / "progress").iterdir()}
    run_study(cfg, str(out), progress=False)  # nothing left to train: nothing is written
    assert {p: p.stat().st_mtime_ns for p in (out / "progress").iterdir()} == files


@pytest.mark.slow
def test_running_and_killed_job_heartbeat(tmp_path, capsys):
    """Job 0 of 2 in a subprocess: its heartbeat shows the chunk advancing while it runs; killed
    mid-chunk, it is reported stopped, and the ETA comes from its in-chunk rate."""
    epochs = 20000  # a chunk takes far longer than a heartbeat interval
    config = {**STUDY, "subsets": {**STUDY["subsets"], "replicas": 8}}
    config["train"] = {**STUDY["train"], "epochs": epochs, "batch_size": 16}
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "s"
    cmd = [sys.executable, "-m", "memjax", "run", str(path), "--out", str(out), "--jobs", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    beat_path = out / "progress" / "job-0000.json"
    deadline = time.time() + 240 + 3 * HEARTBEAT_S
    try:
        while True:  # until the heartbeat was rewritten after the chunk's first report
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.time() < deadline, "no heartbeat during the chunk"
            beat = read(beat_path) if beat_path.exists() else {}
            if (beat.get("replica_epochs_done") or 0) > (beat.get("first_report_done") or 0):
                break
            time.sleep(0.2)
        running = status(capsys, out)
        (job,) = running["jobs_progress"]
        assert job["job"] == 0 and job["state"] == "running" and job["chunk"] == 0
        assert 0 < job["replica_epochs_done"] < job["replica_epochs_in_chunk"] == 2 * epochs
        assert running["eta_s"] > 0 and running["replicas_finished"] == 0
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    beat = read(beat_path)
    got = status(capsys, out)
    (job,) = got["jobs_progress"]
    assert job["state"] == "stopped" and job["chunk"] == 0
    assert job["replica_epochs_done"] == beat["replica_epochs_done"]
    done_since_first = (beat["replica_epochs_done"] - beat["first_report_done"]) / epochs
    rate = done_since_first / (beat["updated"] - beat["first_report"])
    assert got["replicas_per_s_per_job"] == pytest.approx(rate)
    # the killed chunk restarts from scratch: each job still has 2 chunks of 2 replicas
    assert got["eta_s"] == pytest.approx(4 / rate)
