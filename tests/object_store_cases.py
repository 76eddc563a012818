"""The life of a study at an s3:// URL, on moto's S3 server over loopback.

Run by tests/test_object_store.py inside a private network namespace (skipped elsewhere).
Every case compares the study on S3, array by array and bit for bit, with the same study run
uninterrupted in a local directory; S3 is read back with zarr and fsspec alone (no memjax),
and every memjax command runs as users run it (subprocesses for the runs that are killed or
race, the CLI's main() in this process for the others).
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr
from zarr.storage import FsspecStore

from memjax.cli import EXIT_CODES, main
from memjax.report import estimate_study
from memjax.study import StudyConfig, locate, open_study, run_study
from tests.studies import TINY

BUCKET = "memjax-tests"
# 5 chunks of 2 replicas, each trained for well under a second: a kill lands inside one.
STUDY = {**TINY, "name": "s3life", "train": {**TINY["train"], "epochs": 30}, "chunk_size": 2}
N_CHUNKS = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server on a free loopback port, the standard AWS variables pointing at it
    (inherited by the memjax subprocesses), and an fsspec filesystem over it."""
    if os.environ.get("MEMJAX_PRIVATE_NETWORK") != "1":
        pytest.skip("run through tests/test_object_store.py (in a private network namespace)")
    import fsspec

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = dict(os.environ)
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="memjax-test",
        AWS_SECRET_ACCESS_KEY="memjax-test",
        AWS_DEFAULT_REGION="us-east-1",
        NO_PROXY="127.0.0.1",
    )
    try:
        deadline = time.time() + 60
        while True:
            assert server.poll() is None and time.time() < deadline, "moto server did not start"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        fs = fsspec.filesystem("s3", use_listings_cache=False)
        fs.mkdir(BUCKET)
        yield fs
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "s3life.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    return path


def raw_local(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path / "arrays.zarr"), mode="r")
    return {name: group[name][:] for name in sorted(group.array_keys())}


def raw_s3(fs, url: str) -> tuple[dict[str, np.ndarray], dict[str, bytes]]:
    """Every stored array and every marker of the study at ``url``, read without memjax."""
    store = FsspecStore.from_url(f"{url}/arrays.zarr", read_only=True)
    group = zarr.open_group(store, mode="r")
    arrays = {name: group[name][:] for name in sorted(group.array_keys())}
    root = url.removeprefix("s3://")
    markers = {p.rsplit("/", 1)[1]: fs.cat_file(p) for p in sorted(fs.ls(f"{root}/done"))}
    return arrays, markers


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The study run uninterrupted into a local directory (in this process), its estimate."""
    out = tmp_path_factory.mktemp("reference") / "s"
    run_study(StudyConfig.from_dict(STUDY), str(out), progress=False)
    estimate_study(open_study(str(out)))
    done = {p.name: p.read_bytes() for p in sorted((out / "done").iterdir())}
    assert len(done) == N_CHUNKS
    return {"arrays": raw_local(out), "markers": done, "dir": out}


def assert_equals_reference(fs, url: str, reference: dict) -> None:
    arrays, markers = raw_s3(fs, url)
    assert list(arrays) == list(reference["arrays"])
    for name, want in reference["arrays"].items():
        assert arrays[name].dtype == want.dtype, name
        np.testing.assert_array_equal(arrays[name], want, err_msg=name)
    assert markers == reference["markers"]  # exactly one marker per chunk, same hashes


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_cmd(cfg_path: Path, url: str) -> list[str]:
    return [sys.executable, "-m", "memjax", "run", str(cfg_path), "--out", url, "--quiet"]


def test_killed_at_random_moments_resumes_to_the_local_bytes(s3, cfg_path, reference, capsys):
    url = f"s3://{BUCKET}/life"
    rng = random.Random(13)
    for after in (0, 2):  # SIGKILL at a random moment once chunk `after` is marked
        proc = subprocess.Popen(run_cmd(cfg_path, url), stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 600
        while not s3.exists(f"{BUCKET}/life/done/chunk-{after:06d}"):
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        assert proc.wait() == -9
        code, out, err = cli(capsys, "status", url)
        assert code == 0, err
        status = json.loads(out)
        assert after + 1 <= status["chunks_finished"] < N_CHUNKS == status["chunks_planned"]
        assert status["chunks_missing_files"] == [] and status["invalid_markers"] == {}
        [job] = status["jobs_progress"]  # its process is gone: the job counts as stopped
        assert job["state"] == "stopped" and job["chunk"] <= status["chunks_finished"]
    resumed = subprocess.run(run_cmd(cfg_path, url), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert_equals_reference(s3, url, reference)

    code, out, err = cli(capsys, "verify", url)
    assert code == 0 and f"{N_CHUNKS} verified, 0 damaged" in out, out + err
    code, out, err = cli(capsys, "estimate", url)
    assert code == 0, err
    local = reference["dir"]
    root = f"{BUCKET}/life"
    assert s3.cat_file(f"{root}/memorization.csv") == (local / "memorization.csv").read_bytes()
    summary = json.loads(s3.cat_file(f"{root}/summary.json"))
    assert summary == json.loads((local / "summary.json").read_text())
    assert s3.cat_file(f"{root}/memorization_hist.png").startswith(b"\x89PNG")


def test_flipped_byte_on_s3_is_named_and_repaired(s3, cfg_path, reference, capsys):
    url = f"s3://{BUCKET}/flip"
    assert cli(capsys, "run", str(cfg_path), "--out", url, "--quiet")[0] == 0
    key = f"{BUCKET}/flip/arrays.zarr/train_margin/c/3/0"
    data = bytearray(s3.cat_file(key))
    data[len(data) // 2] ^= 0x10
    s3.pipe_file(key, bytes(data))

    code, out, err = cli(capsys, "estimate", url)
    assert code == EXIT_CODES["store"], err
    assert "chunk 3 (replicas 6..7) is damaged" in err and "train_margin" in err, err
    assert not s3.exists(f"{BUCKET}/flip/summary.json")
    code, out, err = cli(capsys, "verify", url)
    assert code == 1 and "1 damaged" in out and "chunk 3 " in out, out
    code, out, err = cli(capsys, "verify", url, "--repair")
    assert code == 0 and "repaired: chunks [3]" in out, out
    assert not s3.exists(f"{BUCKET}/flip/done/chunk-000003")
    assert cli(capsys, "run", str(cfg_path), "--out", url, "--quiet")[0] == 0
    assert_equals_reference(s3, url, reference)


def test_jobs_on_separate_urls_merge_on_s3(s3, cfg_path, reference, capsys):
    parts = [f"s3://{BUCKET}/job{j}" for j in range(2)]
    for j, url in enumerate(parts):
        args = ("run", str(cfg_path), "--out", url, "--quiet", "--jobs", "2", "--job", str(j))
        assert cli(capsys, *args)[0] == 0
    merged = f"s3://{BUCKET}/merged"
    code, out, err = cli(capsys, "merge", *parts, "--out", merged)
    assert code == 0 and f"{merged}: 10/10 replicas; 0 of 5 chunks unfinished" in out, out + err
    assert_equals_reference(s3, merged, reference)


def test_two_concurrent_runs_on_one_url_give_the_single_run(s3, cfg_path, reference, capsys):
    url = f"s3://{BUCKET}/race"
    procs = [
        subprocess.Popen(run_cmd(cfg_path, url), stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert_equals_reference(s3, url, reference)
    assert sorted(s3.ls(f"{BUCKET}/race/done")) == [
        f"{BUCKET}/race/done/chunk-{k:06d}" for k in range(N_CHUNKS)
    ]
    code, out, err = cli(capsys, "verify", url)
    assert code == 0 and f"{N_CHUNKS} verified, 0 damaged" in out, out + err


def test_a_url_with_empty_segments_names_the_same_objects(s3):
    """``s3://bucket//study/`` is ``s3://bucket/study``: a marker written through one spelling
    is listed through the other (S3 lists normalized keys; unnormalized, listing never found
    the markers, so every run retrained)."""
    locate(f"s3://{BUCKET}//spelled//").write_text("done/chunk-000000", "{}")
    assert s3.ls(f"{BUCKET}/spelled/done", detail=False) == [f"{BUCKET}/spelled/done/chunk-000000"]
    plain = locate(f"S3://{BUCKET}/spelled")
    assert plain.listdir("done") == ["chunk-000000"] and plain.files("done") == {
        "done/chunk-000000"
    }
    plain.remove_tree()
