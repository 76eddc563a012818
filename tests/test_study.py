"""Studies and stores: chunking, resume after a kill, mismatch refusal, merge, estimate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from memjax import subsets, train_replicas
from memjax.estimators import memorization
from memjax.study import (
    StoreMismatchError,
    StudyConfig,
    build_dataset,
    load_config,
    merge,
    open_or_create,
    open_store,
    run_study,
)
from tests.studies import TINY

FIELDS = (
    "train_correct",
    "train_margin",
    "train_loss",
    "test_margin",
    "test_loss",
    "forgetting_events",
    "first_learned",
)


@pytest.fixture(scope="module")
def cfg() -> StudyConfig:
    return StudyConfig.from_dict(TINY)


@pytest.fixture(scope="module")
def direct(cfg):
    """All replicas trained in one call, without any store: the reference."""
    ds = build_dataset(cfg.dataset)
    masks = subsets.sample(ds.n_train, cfg.replicas, cfg.ratio, cfg.seed, cfg.design)
    return masks, train_replicas(cfg.model, ds, masks, cfg.train, seed=cfg.seed)


@pytest.fixture(scope="module")
def finished(tiny_study):
    """TINY, run by ``run_study`` once for the whole test run."""
    return open_store(tiny_study)


def assert_same_outputs(store, masks, reference) -> None:
    out = store.load_outputs()
    np.testing.assert_array_equal(out.replica_ids, np.arange(len(masks)))
    np.testing.assert_array_equal(store.masks(), masks)
    for name in FIELDS:
        np.testing.assert_allclose(
            getattr(out, name), getattr(reference, name), rtol=1e-5, atol=1e-5
        )


@pytest.mark.slow
def test_chunked_study_equals_one_call(finished, direct):
    masks, reference = direct
    assert finished.is_complete() and finished.n_chunks == 3
    assert_same_outputs(finished, masks, reference)


def test_rerun_of_finished_study_trains_nothing(cfg, finished):
    before = {k: os.path.getmtime(finished._marker(k)) for k in finished.done_chunks()}
    run_study(cfg, finished.path, progress=False)
    after = {k: os.path.getmtime(finished._marker(k)) for k in finished.done_chunks()}
    assert before == after


def test_torn_chunk_is_recomputed(cfg, direct, tmp_path):
    """Data written without its marker (a crash before the marker) is not counted, then redone."""
    out = str(tmp_path / "s")
    store = run_study(cfg, out, progress=False, max_chunks=1)
    assert store.done_chunks() == [0] and not store.is_complete()
    first = store.load_outputs(store.chunk_rows(0))
    garbage = replace(
        first, replica_ids=store.chunk_rows(1), train_margin=first.train_margin + 100.0
    )
    store.write_chunk(1, garbage)
    os.remove(store._marker(1))
    assert list(store.done_rows()) == [0, 1, 2, 3]
    store = run_study(cfg, out, progress=False)
    assert_same_outputs(store, *direct)


def test_other_config_is_refused_and_nothing_written(cfg, finished):
    listing = sorted(os.listdir(finished.path))
    meta_path = Path(finished.path) / "study.json"
    meta = meta_path.read_text()
    other = replace(cfg, train=replace(cfg.train, learning_rate=0.02))
    with pytest.raises(StoreMismatchError, match=r"train\.learning_rate"):
        run_study(other, finished.path, progress=False)
    other_data = replace(cfg, dataset={"name": "digits", "label_noise": 0.2})
    with pytest.raises(StoreMismatchError, match="dataset"):
        run_study(other_data, finished.path, progress=False)
    assert sorted(os.listdir(finished.path)) == listing
    assert meta_path.read_text() == meta


def test_jobs_and_merge(cfg, direct, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    run_study(cfg, a, job=0, jobs=2, progress=False)
    run_study(cfg, b, job=1, jobs=2, progress=False)
    assert open_store(a).done_chunks() == [0, 2] and open_store(b).done_chunks() == [1]
    merged = merge([a, b], str(tmp_path / "m"))
    assert_same_outputs(merged, *direct)
    with pytest.raises(StoreMismatchError, match="both"):
        merge([a, a], str(tmp_path / "m2"))
    assert not os.path.exists(tmp_path / "m2")


def test_merge_refuses_other_study(cfg, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    run_study(cfg, a, progress=False, max_chunks=1)
    run_study(replace(cfg, seed=4), b, job=1, jobs=2, progress=False, max_chunks=1)
    with pytest.raises(StoreMismatchError, match="seed"):
        merge([a, b], str(tmp_path / "m"))


def test_config_errors_name_the_problem(tmp_path):
    bad = {**TINY, "subsets": {"replicas": 10, "ratio": 1.5}}
    with pytest.raises(ValueError, match=r"subsets\.ratio: got 1\.5; allowed: .* > 0 and < 1"):
        StudyConfig.from_dict(bad)
    with pytest.raises(ValueError, match="unknown setting epochs"):
        StudyConfig.from_dict({**TINY, "epochs": 3})
    with pytest.raises(ValueError, match=r"unknown setting train\.epoch "):
        StudyConfig.from_dict({**TINY, "train": {"epoch": 3}})
    unknown = StudyConfig.from_dict({**TINY, "dataset": {"name": "imagenet"}})
    out = tmp_path / "s"
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        run_study(unknown, str(out), progress=False)
    assert not out.exists() and os.listdir(tmp_path) == []


RESNET = {"type": "ResNet9", "widths": [4, 4, 4, 4], "norm": "batch"}
DP = {"clip_norm": 1.0, "noise_multiplier": 1.0}


@pytest.mark.parametrize(
    ("images", "refused", "message", "corrected"),
    [
        (True, {"train": {**TINY["train"], "dp": DP}}, r"dp with ResNet9\(norm='batch'\)",
         {"train": {**TINY["train"], "dp": DP}, "model": {**RESNET, "norm": "group"}}),
        (False, {"train": {**TINY["train"], "augment": "crop"}}, "augment='crop'", {}),
        (False, {"train": {**TINY["train"], "cutout": 2}}, "cutout=2", {}),
        (False, {"train": {**TINY["train"], "queries": "mirror"}}, r"train\.queries", {}),
    ],
)  # fmt: skip
def test_a_refused_config_writes_nothing_and_its_correction_starts_there(
    tmp_path, images, refused, message, corrected
):
    """Checks that training would make run before the study directory exists: nothing is
    half-written, in a new directory or an empty one made beforehand."""
    base = dict(TINY)
    if images:
        x = np.random.default_rng(0).random((24, 8, 8, 1), np.float32)
        np.savez(tmp_path / "images.npz", x_train=x, y_train=np.arange(24) % 2, x_test=x[:4],
                 y_test=np.arange(4) % 2)  # fmt: skip
        base = {**TINY, "dataset": str(tmp_path / "images.npz"), "model": RESNET}
    bad = StudyConfig.from_dict({**base, **refused})
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new", empty):
        with pytest.raises(ValueError, match=message):
            run_study(bad, str(out), progress=False)
    assert not (tmp_path / "new").exists() and os.listdir(empty) == []
    good = StudyConfig.from_dict({**base, **corrected})
    open_or_create(good, str(empty))
    assert (empty / "study.json").exists()


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "memjax", *args], capture_output=True, text=True, cwd=cwd
    )


@pytest.mark.slow
def test_cli_errors_exit_2_and_write_nothing(tmp_path):
    cfg_path = tmp_path / "bad.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "dataset": {"name": "nope"}}))
    res = _cli("run", str(cfg_path), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and "unknown dataset 'nope'" in res.stderr
    assert not (tmp_path / "out").exists()
    res = _cli("status", str(tmp_path / "missing"))
    assert res.returncode == 2 and "not a memjax study directory" in res.stderr


@pytest.mark.slow
def test_cli_status_and_estimate(finished, tmp_path):
    res = _cli("status", finished.path)
    assert res.returncode == 0, res.stderr
    status = json.loads(res.stdout)
    assert status["replicas_finished"] == 10 and status["complete"]
    res = _cli("estimate", finished.path, "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    summary = json.loads(
        (tmp_path / "summary.json").read_text(),
        parse_constant=lambda c: pytest.fail(f"summary.json holds {c}: not strict JSON"),
    )
    table = np.genfromtxt(tmp_path / "memorization.csv", delimiter=",", names=True)
    assert len(table) == 1437 and summary["replicas_finished"] == 10
    assert sum(summary["histogram"]["counts"]) == np.isfinite(table["memorization"]).sum()
    top = summary["top_memorized"][0]
    assert top["memorization"] == pytest.approx(np.nanmax(table["memorization"]), abs=1e-5)
    assert (tmp_path / "memorization_hist.png").stat().st_size > 1000
    # the balanced design's pairs are the unit of independence, and the table says so
    masks, out = finished.masks(), finished.load_outputs()
    blocked = memorization(masks, out.train_correct, blocks=np.arange(10) // 2)
    for name in ("stderr", "ci_low", "ci_high"):
        np.testing.assert_allclose(
            table[f"memorization_{name}"], getattr(blocked, name), rtol=1e-5, atol=1e-6
        )
    assert (table["memorization_ci_low"] < table["memorization_ci_high"]).all()
    assert "(needs train.record_every > 0)" in summary["missing"]["el2n"]
    assert "lira_online" in table.dtype.names and "lira_online" not in summary["missing"]


@pytest.mark.slow
def test_cli_refuses_another_study_with_exit_3(finished, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**TINY, "seed": 4}))
    res = _cli("run", str(other), "--out", finished.path, "--quiet")
    assert res.returncode == 3
    assert res.stderr.strip().splitlines() == [
        f"memjax run: error: {finished.path} already holds a different study; differing "
        "settings: config.seed (3 vs 4). Use another --out directory or the original config."
    ]


@pytest.mark.slow
def test_estimate_refuses_unfinished_study(cfg, tmp_path):
    out = str(tmp_path / "s")
    run_study(cfg, out, progress=False, max_chunks=1)
    res = _cli("estimate", out)
    assert res.returncode == 2 and "unfinished (4/10 replicas)" in res.stderr
    assert not os.path.exists(os.path.join(out, "summary.json"))
    assert _cli("estimate", out, "--partial").returncode == 0


@pytest.mark.slow
def test_killed_study_resumes_to_the_same_result(direct, tmp_path):
    """SIGKILL a running `memjax run` after its first chunk; the resumed run equals the direct."""
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump({**TINY, "chunk_size": 2}))
    out = tmp_path / "results" / TINY["name"]  # the default study directory, under the cwd
    cmd = [sys.executable, "-m", "memjax", "run", str(cfg_path), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.time() + 240
    while not (out / "done" / "chunk-000000").exists():
        assert proc.poll() is None and time.time() < deadline, "study ended before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = open_store(str(out))
    assert 1 <= len(store.done_chunks()) < store.n_chunks
    assert subprocess.run(cmd, capture_output=True, cwd=tmp_path).returncode == 0
    assert_same_outputs(open_store(str(out)), *direct)


def test_default_config_loads():
    from memjax.study import default_config

    cfg = default_config()
    assert cfg.dataset["name"] == "mnist1d" and cfg.replicas >= 128


def test_load_config_from_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(TINY))
    assert load_config(str(path)) == StudyConfig.from_dict(TINY)


@pytest.mark.slow
def test_two_process_jax_run_equals_direct(direct, tmp_path):
    """Two JAX processes (2 forced host devices each) on localhost share one study directory."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "s"
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "memjax",
                "run",
                str(cfg_path),
                "--out",
                str(out),
                "--quiet",
                "--distributed",
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    assert_same_outputs(open_store(str(out)), *direct)
