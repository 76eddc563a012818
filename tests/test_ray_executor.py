"""Many workers on one study: a chunk's bytes are a pure function of (config, seed, replica
ids), so duplicated or retried chunks are harmless, and `--executor ray` on a real Ray
cluster (a head and a worker node, on loopback in a private network namespace) completes a
study although one of its worker processes is killed mid-chunk."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import yaml

from memjax.cli import main
from memjax.study import (
    JobProgress,
    Location,
    StudyConfig,
    build_dataset,
    locate,
    open_or_create,
    open_store,
    run_study,
    train_chunk,
    verify_study,
)
from memjax.study import _ray as ray_executor
from tests.object_store_cases import BUCKET, s3  # noqa: F401 (a fixture)
from tests.private_network import ROOT, in_private_network
from tests.studies import TINY


def chunk_bytes(path: str, k: int) -> dict[str, bytes]:
    """Every data object of chunk k, and its marker, by path relative to the study."""
    store = open_store(path)
    return {f: store.loc.read_bytes(f) for f in [*store.chunk_files(k), f"done/chunk-{k:06d}"]}


def train(cfg: StudyConfig, path: str, k: int) -> None:
    store = open_or_create(cfg, path)
    with JobProgress(path, 0, 1, len(store.chunk_rows(k)), cfg.train.epochs, False, "") as bar:
        train_chunk(cfg, build_dataset(cfg.dataset), store, k, bar)


@pytest.mark.slow
def test_a_chunk_written_twice_or_concurrently_has_the_same_bytes(tmp_path):
    cfg = StudyConfig.from_dict(TINY)
    first, shared = str(tmp_path / "first"), str(tmp_path / "shared")
    train(cfg, first, 1)
    expected = chunk_bytes(first, 1)
    assert len(expected) == len(open_store(first).specs) + 1
    # two writers of chunk 1 at once into another store (a retried task and its original)
    open_or_create(cfg, shared)
    writers = [threading.Thread(target=train, args=(cfg, shared, 1)) for _ in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    assert chunk_bytes(shared, 1) == expected
    assert os.listdir(os.path.join(shared, "done")) == ["chunk-000001"]
    assert verify_study(open_store(shared)).ok


# The `ray` command of this Python's environment (its scripts directory need not be on PATH).
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def ray(*args: str, env: dict[str, str]) -> None:
    res = subprocess.run([RAY, *args], env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, f"ray {' '.join(args)}: {res.stdout}{res.stderr}"


def training_worker(study: Location, timeout: float) -> tuple[int, int]:
    """(pid, chunk) of a Ray worker process that is training a chunk now: its heartbeat says
    epochs are done in a chunk that has no marker yet, and its process is a Ray task."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            beat = json.loads(study.read_text("progress/job-0000.json"))
        except (OSError, ValueError):
            beat = {}
        k = beat.get("chunk")
        if beat.get("state") == "training" and beat.get("replica_epochs_done") and k is not None:
            title = Path(f"/proc/{beat['pid']}/cmdline").read_bytes()
            if not study.exists(f"done/chunk-{k:06d}"):
                assert title.startswith(b"ray::memjax-chunk"), title
                return beat["pid"], k
        time.sleep(0.05)
    raise AssertionError("no Ray worker was seen training a chunk")


@pytest.mark.optimized
@pytest.mark.slow
@in_private_network
def test_ray_cluster_finishes_an_s3_study_when_a_worker_is_killed_mid_chunk(tmp_path, request):
    request.getfixturevalue("s3")  # the S3 server, started inside the private network
    spec = {**TINY, "subsets": {**TINY["subsets"], "replicas": 12}}
    spec["train"] = {**TINY["train"], "epochs": 150}
    cfg = StudyConfig.from_dict(spec)
    reference = str(tmp_path / "reference")  # the single-process run, in a local directory
    run_study(cfg, reference, progress=False)
    url = f"s3://{BUCKET}/ray-study"
    study = locate(url)
    run_study(cfg, url, progress=False, max_chunks=1)  # chunk 0 by a static job
    timed = study.read_bytes("progress/chunk-000000.json")
    cfg_path = tmp_path / "study.yaml"
    cfg_path.write_text(yaml.safe_dump(spec))
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths
    env = {
        **os.environ,  # with the S3 server's endpoint and keys: Ray's workers inherit them
        "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",  # every node and the driver share this cluster's token
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    node = ["--num-cpus", "1", "--object-store-memory", str(80 * 2**20), "--disable-usage-stats"]
    try:
        ray("start", "--head", "--port", "6399", "--include-dashboard=false", "--temp-dir", temp,
            *node, env=env)  # fmt: skip
        ray("start", "--address", "127.0.0.1:6399", *node, env=env)
        driver = subprocess.Popen(
            [sys.executable, "-m", "memjax", "run", str(cfg_path), "--out", url]
            + ["--executor", "ray", "--address", "127.0.0.1:6399"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        pid, killed = training_worker(study, timeout=300)
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = driver.communicate(timeout=400)
        # a bad-input error inside a worker (training diverges) is the driver's exit 2
        diverging = tmp_path / "diverging.yaml"
        train = {**TINY["train"], "optimizer": "sgd", "learning_rate": 1e30}
        diverging.write_text(yaml.safe_dump({**TINY, "train": train}))
        diverged = subprocess.run(
            [sys.executable, "-m", "memjax", "run", str(diverging), "--out", str(tmp_path / "d")]
            + ["--executor", "ray", "--address", "127.0.0.1:6399"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
    assert driver.returncode == 0, stderr
    assert "12/12 replicas finished; 0 of 3 chunks unfinished" in stdout
    assert killed in (1, 2)
    assert sorted(study.listdir("done")) == [f"chunk-{k:06d}" for k in range(3)]
    assert study.read_bytes("progress/chunk-000000.json") == timed  # chunk 0 never rerun
    assert verify_study(open_store(url)).ok
    ref, got = open_store(reference)._zarr_root(), open_store(url)._zarr_root()
    assert sorted(got.array_keys()) == sorted(ref.array_keys())
    for name in ref.array_keys():
        np.testing.assert_array_equal(got[name][:], ref[name][:], err_msg=name)
    assert diverged.returncode == 2, diverged.stderr
    last = diverged.stderr.strip().splitlines()[-1]
    assert "non-finite" in last and "train.learning_rate 1e+30" in last, diverged.stderr
    assert not (tmp_path / "d" / "done").exists() or not os.listdir(tmp_path / "d" / "done")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--executor", "ray", "--job", "1", "--jobs", "2"],
            "drop --job, --jobs and --distributed",
        ),
        (["--executor", "ray", "--distributed"], "drop --job, --jobs and --distributed"),
        (["--address", "127.0.0.1:6379"], "--address and --ray-timeout are the Ray cluster's"),
        (["--ray-timeout", "5"], "--address and --ray-timeout are the Ray cluster's"),
    ],
)
def test_static_job_flags_and_ray_flags_do_not_mix(tmp_path, capsys, flags, message):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "s"
    assert main(["run", str(config), "--out", str(out), "--quiet", *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # refused before anything was written


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_closed_port_fails_at_once_in_one_line_and_writes_nothing(tmp_path, capsys):
    """Nothing listens at the address (a closed loopback port: no traffic leaves this
    machine): one line naming it, exit 4, no study directory; Ray would retry for minutes."""
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out, address = tmp_path / "s", f"127.0.0.1:{closed_port()}"
    start = time.monotonic()
    code = main(["run", str(config), "--out", str(out), "--quiet", "--executor", "ray",
                 "--address", address, "--ray-timeout", "5"])  # fmt: skip
    assert code == 4 and time.monotonic() - start < 60
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Ray cluster answers" in err and address in err
    assert not out.exists()


def test_connecting_is_bounded_and_never_joins_another_jobs_cluster(monkeypatch):
    """Without an address Ray is started here (address "local"), not looked up among the
    clusters recorded on this host; a connection that hangs ends at the deadline."""
    calls = []
    fake = types.SimpleNamespace(init=lambda **kw: calls.append(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_executor._connect(fake, None, 5)
    assert calls[0]["address"] == "local"
    fake.init = lambda **kw: time.sleep(10)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="within --ray-timeout 0.2 s") as err:
        ray_executor._connect(fake, None, 0.2)
    assert time.monotonic() - start < 2 and err.value.filename.startswith("a new Ray instance")
    with pytest.raises(ValueError, match="--ray-timeout must be a positive"):
        ray_executor._connect(fake, None, 0)


@pytest.mark.parametrize(
    ("nodes", "gpus", "need"),
    [
        ([{"CPU": 4.0, "memory": 1e9}], 0, None),
        ([{"CPU": 8.0, "GPU": 2.0}, {"CPU": 2.0}], 1, None),
        ([{"CPU": 0.0, "memory": 1e9}], 0, "1 CPU a chunk task needs"),
        ([{"CPU": 0.0, "GPU": 1.0}, {"CPU": 4.0}], 1, "1 CPU and 1 GPU a chunk task needs"),
    ],
)
def test_a_cluster_without_the_resources_of_a_task_is_refused(nodes, gpus, need):
    if need is None:
        assert ray_executor._task_gpus(nodes, "10.0.0.1:6379") == gpus
        return
    with pytest.raises(OSError, match=need) as err:
        ray_executor._task_gpus(nodes, "10.0.0.1:6379")
    assert err.value.filename == "10.0.0.1:6379"


def test_a_tasks_bad_input_error_stops_the_driver_with_that_error():
    """Bad input inside a task (a MemjaxError, a ValueError) is raised at the driver (exit 2
    there); a crash of another kind leaves its chunk unfinished (exit 1) with the error's last
    line."""
    import ray

    from memjax.errors import DataError

    lost = RuntimeError("device lost")
    crash = ray.exceptions.RayTaskError("f", "Traceback: ...\nRuntimeError: device lost", lost)
    errors = iter([crash, ray.exceptions.RayTaskError("f", "tb", DataError("x_train has NaN"))])

    def get(ref):
        raise next(errors)

    fake = types.SimpleNamespace(
        wait=lambda pending, num_returns: (pending[:1], pending[1:]),
        get=get,
        exceptions=ray.exceptions,
    )
    with pytest.raises(ValueError, match="x_train has NaN"):
        ray_executor._wait(fake, {"a": 0, "b": 1}, progress=False)
    errors = iter([crash])
    assert ray_executor._wait(fake, {"a": 3}, progress=False) == {3: "RuntimeError: device lost"}
