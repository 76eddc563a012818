"""Operational failures end in one line and a distinct exit code, and leave a study that the
same command resumes: Ctrl-C, SIGTERM, a read-only or full filesystem, a killed creation,
another memjax version. Estimates say which columns they could not compute, in strict JSON."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

import memjax
import memjax.cli
from memjax.analysis.relations import relations
from memjax.cli import EXIT_CODES
from memjax.outputs import ReplicaOutputs
from memjax.study import (
    NonFiniteTrainingError,
    StudyConfig,
    check_finite,
    check_writable,
    merge,
    open_store,
    run_study,
)
from tests.studies import TINY

# Chunks of 2 replicas that train for about a second each: a signal lands inside one.
SLOW = {**TINY, "train": {**TINY["train"], "epochs": 60}, "chunk_size": 2}


def memjax_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "memjax", *args]


def strict_loads(text: str):
    """json.loads that refuses NaN, Infinity and -Infinity."""

    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def stored_arrays(path: str) -> dict[str, np.ndarray]:
    root = open_store(path)._zarr_root()
    return {name: root[name][:] for name in root.array_keys()}


def can_mount() -> bool:
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(
    shutil.which("unshare") is None or not can_mount(),
    reason="needs `unshare -m` (root) for a private read-only or tiny mount",
)


def in_private_mount(setup: str, *cmd: str) -> subprocess.CompletedProcess:
    """Run cmd in a private mount namespace after the shell commands ``setup``."""
    script = f'{setup} && exec "$@"'
    return subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *cmd],
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory):
    """The SLOW study run without interruption (in this process): the bytes to reproduce."""
    out = str(tmp_path_factory.mktemp("reference") / "s")
    run_study(StudyConfig.from_dict(SLOW), out, progress=False)
    return stored_arrays(out)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "after", "kind"),
    [
        (signal.SIGINT, "done/chunk-000000", "interrupted by SIGINT"),  # mid-study
        (signal.SIGTERM, "study.json", "terminated by SIGTERM"),  # compiling chunk 0
    ],
)
def test_signal_stops_with_one_line_and_resumes_bit_identically(
    tmp_path, slow_reference, signum, after, kind
):
    cfg_path = tmp_path / "slow.yaml"
    cfg_path.write_text(yaml.safe_dump(SLOW))
    out = tmp_path / "s"
    cmd = memjax_cmd("run", str(cfg_path), "--out", str(out), "--quiet")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / after).exists():
        assert proc.poll() is None and time.time() < deadline, "study ended before the signal"
        time.sleep(0.02)
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum == EXIT_CODES[kind.split()[0]]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert kind in lines[0] and str(out) in lines[0] and "re-run the same command" in lines[0]
    assert stdout == ""
    # progress/ (the heartbeat) exists once the job got to its first chunk
    assert sorted(set(os.listdir(out)) - {"progress"}) == ["arrays.zarr", "done", "study.json"]
    store = open_store(str(out))
    done = store.done_chunks()
    assert done == list(range(len(done))) and len(done) < store.n_chunks  # chunk k unmarked
    resumed = subprocess.run(cmd, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    again = stored_arrays(str(out))
    assert again.keys() == slow_reference.keys()
    for name, value in slow_reference.items():
        np.testing.assert_array_equal(again[name], value, err_msg=name)


UNCUT_STEP = """
import os, signal, sys, time
from memjax.cli._main import _catch_signals
from memjax.study.uncut import uncut
_catch_signals("run")
with uncut():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.5)
    open(sys.argv[1], "w").write("step finished")
time.sleep(30)
open(sys.argv[1], "a").write(", then went on")
"""


@pytest.mark.slow
def test_a_stop_waits_for_an_uncut_step_then_ends_the_process(tmp_path):
    """SIGTERM inside ``uncut()`` (e.g. between creating and removing a probe file): the
    step runs to its end, then the process ends at once with its one line."""
    out = tmp_path / "step.txt"
    res = subprocess.run(
        [sys.executable, "-c", UNCUT_STEP, str(out)], capture_output=True, text=True, timeout=25
    )
    assert res.returncode == EXIT_CODES["terminated"], res.stderr
    assert out.read_text() == "step finished"
    assert len(res.stderr.strip().splitlines()) == 1 and "terminated by SIGTERM" in res.stderr


@pytest.mark.slow
def test_check_writable_fails_on_a_read_only_filesystem(tmp_path):
    check_writable_script = (
        "from memjax.study import check_writable; import sys; check_writable(sys.argv[1])"
    )
    for sub in ("arrays.zarr", "done"):
        (tmp_path / sub).mkdir()
    check_writable(str(tmp_path))  # writable: passes and leaves nothing behind
    assert sorted(os.listdir(tmp_path)) == ["arrays.zarr", "done"]
    if shutil.which("unshare") is None or not can_mount():
        pytest.skip("needs `unshare -m` (root) for a read-only mount")
    res = in_private_mount(
        f"mount --bind {tmp_path} {tmp_path} && mount -o remount,bind,ro {tmp_path}",
        sys.executable,
        "-c",
        check_writable_script,
        str(tmp_path),
    )
    assert f"OSError: [Errno 30] Read-only file system: '{tmp_path}/arrays.zarr'" in res.stderr


@needs_mount
@pytest.mark.slow
def test_read_only_study_fails_before_training(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "s"
    run_study(StudyConfig.from_dict(TINY), str(out), progress=False, max_chunks=1)
    before = stored_arrays(str(out))
    res = in_private_mount(
        f"mount --bind {out} {out} && mount -o remount,bind,ro {out}",
        *memjax_cmd("run", str(cfg_path), "--out", str(out), "--quiet"),
    )
    assert res.returncode == EXIT_CODES["os"], res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Read-only file system (EROFS)" in lines[0] and str(out) in lines[0]
    assert "use a writable directory" in lines[0] and "re-run the same command" in lines[0]
    assert open_store(str(out)).done_chunks() == [0]
    after = stored_arrays(str(out))
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)


@needs_mount
@pytest.mark.slow
def test_full_disk_is_one_line_and_leaves_no_half_study(tmp_path):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))
    disk = tmp_path / "disk"
    disk.mkdir()
    res = in_private_mount(
        f"mount -t tmpfs -o size=64k tmpfs {disk}",
        *memjax_cmd("run", str(cfg_path), "--out", str(disk / "s"), "--quiet", "--allow-large"),
    )
    assert res.returncode == EXIT_CODES["os"], res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "No space left on device (ENOSPC)" in lines[0] and "free some space" in lines[0]


def test_diverged_training_is_one_line_naming_the_replica_and_never_stored(tmp_path, capsys):
    """A learning rate that overflows the logits trains NaN margins: the chunk is refused
    (exit 2, the replica, the epoch and the likely cause named), never marked finished
    (vmapped replicas: one chain of ops compiles faster than unrolled ones)."""
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "s"
    sets = ("--set", "train.learning_rate=1e30", "--set", "train.vectorize=vmap")
    code = memjax.cli.main(["run", str(cfg_path), "--out", str(out), "--quiet", *sets])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_CODES["bad input"] and len(lines) == 1, lines
    assert re.search(r"replica \d+ .*non-finite losses or margins by epoch 2 \(the end", lines[0])
    assert "train.learning_rate 1e+30 is likely too high" in lines[0]
    assert "NaN or inf" in lines[0] and "not stored" in lines[0]
    assert os.listdir(out / "done") == []


def test_non_finite_outputs_name_the_first_replica_and_recorded_epoch():
    """check_finite names the first bad replica and the first recorded epoch it is NaN at;
    finite outputs pass."""
    zeros = np.zeros((3, 4), np.float32)
    out = ReplicaOutputs(
        np.array([7, 8, 9]), zeros > 0, zeros, zeros, zeros > 0, zeros, zeros,
        traj_loss=np.zeros((3, 3, 4)), traj_margin=np.zeros((3, 3, 4)),
        record_epochs=np.array([0, 2, 4]),
    )  # fmt: skip
    cfg = memjax.TrainConfig(epochs=4, learning_rate=0.5)
    check_finite(out, cfg, 0)
    out.traj_margin[1, 2, 3] = out.traj_loss[2, 1, 0] = out.test_loss[1, 0] = np.nan
    with pytest.raises(NonFiniteTrainingError) as err:
        check_finite(out, cfg, 5)
    assert str(err.value).startswith(
        "replica 8 (and 1 other replica(s) of chunk 5) trained to non-finite losses or margins "
        "at recorded epoch 4: train.learning_rate 0.5 is likely too high"
    )


def test_killed_creation_leftovers_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    leftovers = {
        "dead": f".s.creating-{host}-{dead.pid}-abcd1234",
        "live": f".s.creating-{host}-{os.getpid()}-efgh5678",
        "old": ".s.creating-k2j4h_x1",  # no owner in the name: removed once a day old
        "other study": f".t.creating-{host}-{dead.pid}-ijkl9012",
    }
    for name in leftovers.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "study.json").write_text("{}")
    day_ago = time.time() - 2 * 86400
    os.utime(tmp_path / leftovers["old"], (day_ago, day_ago))
    run_study(StudyConfig.from_dict(TINY), str(tmp_path / "s"), progress=False, max_chunks=0)
    kept = sorted(n for n in os.listdir(tmp_path) if n.startswith("."))
    assert kept == sorted([leftovers["live"], leftovers["other study"]])


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_study_files_honour_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        run_study(StudyConfig.from_dict(TINY), str(tmp_path / "s"), progress=False, max_chunks=1)
    finally:
        os.umask(previous)
    for path in (tmp_path / "s", tmp_path / "s" / "done", tmp_path / "s" / "arrays.zarr"):
        assert path.stat().st_mode & 0o777 == 0o777 & ~umask, path
    for path in (tmp_path / "s" / "study.json", tmp_path / "s" / "done" / "chunk-000000"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def _pretend_written_by(path: Path, version: str) -> None:
    meta_path = path / "study.json"
    meta = json.loads(meta_path.read_text())
    meta["memjax_version"], meta["memjax_versions"] = version, [version]
    meta_path.write_text(json.dumps(meta))


def test_other_memjax_version_warns_and_is_recorded(tmp_path):
    cfg = StudyConfig.from_dict(TINY)
    a, b = tmp_path / "a", tmp_path / "b"
    run_study(cfg, str(a), job=0, jobs=3, progress=False)
    run_study(cfg, str(b), job=1, jobs=3, progress=False)
    _pretend_written_by(a, "0.0.1")
    with pytest.warns(UserWarning, match=rf"memjax 0\.0\.1; this is memjax {memjax.__version__}"):
        run_study(cfg, str(a), job=0, jobs=3, progress=False, max_chunks=1)
    versions = sorted(["0.0.1", memjax.__version__])
    assert json.loads((a / "study.json").read_text())["memjax_versions"] == versions
    assert json.loads((a / "study.json").read_text())["memjax_version"] == "0.0.1"  # creator
    with pytest.warns(UserWarning, match=r"0\.0\.1"):
        merged = merge([str(a), str(b)], str(tmp_path / "m"))
    assert merged.meta["memjax_versions"] == versions
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_study(cfg, str(b), job=1, jobs=3, progress=False)  # same version: no warning


@pytest.mark.slow
def test_cli_warns_in_one_line(tmp_path, tiny_study):
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "s"
    shutil.copytree(tiny_study, out)
    _pretend_written_by(out, "0.0.1")
    res = subprocess.run(
        memjax_cmd("run", str(cfg_path), "--out", str(out), "--quiet"),
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0
    assert res.stderr.strip().splitlines() == [
        f"memjax: warning: {out} holds results written by memjax 0.0.1; this is memjax "
        f"{memjax.__version__}: results of different versions may differ (all versions are "
        "recorded in study.json as memjax_versions)"
    ]


@pytest.mark.slow
def test_partial_estimate_names_missing_columns_in_strict_json(tmp_path):
    out = tmp_path / "s"
    run_study(StudyConfig.from_dict(TINY), str(out), progress=False, max_chunks=1)
    res = subprocess.run(
        memjax_cmd("estimate", str(out), "--partial"), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    summary = strict_loads((out / "summary.json").read_text())
    assert summary["replicas_finished"] == 4 and not summary["complete"]
    missing = summary["missing"]
    for name in ("lira_online", "lira_offline", "loss_attack"):
        assert "only 4 replicas" in missing[name]
        assert f"missing column {name}: only 4 replicas" in res.stdout
    assert "(needs train.record_every > 0)" in missing["el2n"]
    table = np.genfromtxt(out / "memorization.csv", delimiter=",", names=True)
    assert "memorization" in table.dtype.names and "lira_online" not in table.dtype.names
    for name in summary["suspicious_when"]:  # every column is present or explained
        assert name in table.dtype.names and name not in missing
    assert summary["top_memorized"]
    for row in summary["top_memorized"]:  # each with the table's design-aware interval
        i = row["index"]
        assert row["n_in"] >= 2 and row["n_out"] >= 2
        assert row["ci_low"] == pytest.approx(table["memorization_ci_low"][i], abs=1e-5)
        assert row["ci_high"] == pytest.approx(table["memorization_ci_high"][i], abs=1e-5)
        assert row["ci_low"] <= row["memorization"] <= row["ci_high"]


@pytest.mark.slow
def test_ranking_skips_examples_without_an_interval(tmp_path):
    """With bernoulli subsets of 6 replicas, some examples are IN or OUT only once: they have
    no standard error and must not lead the ranking however large their point estimate."""
    cfg = {**TINY, "subsets": {"replicas": 6, "ratio": 0.5, "design": "bernoulli"}}
    out = tmp_path / "s"
    run_study(StudyConfig.from_dict(cfg), str(out), progress=False)
    res = subprocess.run(memjax_cmd("estimate", str(out)), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    summary = strict_loads((out / "summary.json").read_text())
    table = np.genfromtxt(out / "memorization.csv", delimiter=",", names=True)
    ok = (
        (table["n_in"] >= 2)
        & (table["n_out"] >= 2)
        & np.isfinite(table["memorization_stderr"])
        & np.isfinite(table["memorization"])
    )
    assert (~ok & np.isfinite(table["memorization"])).any()  # the case is exercised
    assert summary["examples_ranked"] == ok.sum()
    best = np.sort(table["memorization"][ok])[::-1][: len(summary["top_memorized"])]
    got = [row["memorization"] for row in summary["top_memorized"]]
    np.testing.assert_allclose(got, best, atol=1e-5)


def test_non_finite_margins_drop_only_the_columns_that_need_them():
    """Diverged replicas (NaN margins) still give memorization; margin-based columns are
    missing with the reason, and the summary stays strict JSON."""
    rng = np.random.default_rng(0)
    r, n = 16, 50
    masks = memjax.subsets.sample(n, r, 0.5, seed=0)
    margin = rng.standard_normal((r, n)) + masks
    margin[3, 7] = np.nan
    out = ReplicaOutputs(
        np.arange(r), margin > 0, margin, np.log1p(np.exp(-margin)), margin > 0, margin, margin
    )
    rel = relations(masks, out, n_targets=4)
    assert "memorization" in rel.columns and "held_out_accuracy" in rel.columns
    for name in ("lira_online", "lira_offline", "cf_memorization_margin"):
        assert name not in rel.columns and "NaN or inf" in rel.missing[name]
    summary = rel.summary()
    assert summary["missing"] == rel.missing
    strict_loads(json.dumps(summary, allow_nan=False))


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("command", ["status", "estimate", "verify", "report"])
@pytest.mark.parametrize("record", ["study.json", "family.json"])
def test_a_truncated_study_or_family_json_is_named_with_exit_3(tmp_path, capsys, command, record):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / record).write_text('{"name": "tiny", "seed"')
    assert memjax.cli.main([command, str(tmp_path / "s")]) == EXIT_CODES["store"]
    err = one_line(capsys)
    assert f"{tmp_path / 's' / record} is not valid JSON (truncated or damaged" in err


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"num_classes": np.array([10, 10])}, "num_classes must be one integer"),
        ({"x_train": np.full((8, 3), np.nan)}, "x_train contains NaN"),
        ({"y_test": np.arange(4)}, "y_test must have shape (5,)"),
    ],
)
def test_data_errors_name_the_file_before_anything_is_written(tmp_path, capsys, arrays, message):
    rng = np.random.default_rng(0)
    xy = {"x_train": rng.random((8, 3)), "y_train": np.arange(8) % 2}
    xy.update(x_test=rng.random((5, 3)), y_test=np.arange(5) % 2)
    np.savez(tmp_path / "data.npz", **{**xy, **arrays})
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({**TINY, "dataset": {"name": str(tmp_path / "data.npz")}}))
    out = tmp_path / "s"
    assert memjax.cli.main(["run", str(config), "--out", str(out), "--quiet"]) == 2
    err = one_line(capsys)
    assert f"{tmp_path / 'data.npz'}: {message}" in err
    assert not out.exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("credentials", [False, True], ids=["no-credentials", "closed-port"])
def test_an_object_store_refusing_is_one_line_with_exit_4(monkeypatch, capsys, credentials):
    """Without credentials, or with an endpoint where nothing listens (a closed loopback
    port: no traffic leaves this machine), the command ends in one line naming the URL."""
    s3fs = pytest.importorskip("s3fs")
    for name in [v for v in os.environ if v.startswith("AWS_")]:
        monkeypatch.delenv(name)
    port = _closed_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance service
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    if credentials:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "memjax-test")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "memjax-test")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        assert memjax.cli.main(["status", "s3://memjax-none/s"]) == EXIT_CODES["os"]
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    err = one_line(capsys)
    assert "the object store refused at s3://memjax-none/s" in err
    why = f"127.0.0.1:{port}" if credentials else "Unable to locate credentials"
    assert why in err
