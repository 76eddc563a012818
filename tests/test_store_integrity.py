"""Verified chunks, verify/repair, stray markers and job partitions, on real study directories.

A tiny study is trained once; each test damages a copy the way a disk, a user or a second job
would, then checks that every reader refuses to turn the damage into numbers, that the error
names the chunk and the repair, and that `memjax verify --repair` + `memjax run` give back
exactly the original bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import jax
import numpy as np
import pytest
import zarr

import memjax
from memjax.cli import main
from memjax.study import (
    CorruptChunkError,
    ForeignChunkError,
    JobPartitionError,
    StoreMismatchError,
    StudyConfig,
    StudyEditedError,
    merge,
    open_store,
    run_study,
    study_status,
    verify_study,
)

SMALL = {
    "name": "small",
    "dataset": {"name": "longtail", "n_train": 200, "n_test": 50, "seed": 0},
    "model": {"type": "MLP", "widths": [16]},
    "subsets": {"replicas": 6, "ratio": 0.5, "design": "balanced"},
    "train": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "learning_rate": 0.01},
    "seed": 1,
    "chunk_size": 2,
}


@pytest.fixture(scope="module")
def cfg() -> StudyConfig:
    return StudyConfig.from_dict(SMALL)


@pytest.fixture(scope="module")
def original(cfg, tmp_path_factory) -> Path:
    """A finished study of 3 chunks (2 replicas each); tests damage copies of it."""
    out = tmp_path_factory.mktemp("original") / "s"
    run_study(cfg, str(out), progress=False)
    return out


def raw_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every stored array, read with zarr alone (no memjax verification)."""
    group = zarr.open_group(str(path / "arrays.zarr"), mode="r")
    return {name: group[name][:] for name in sorted(group.array_keys())}


def markers(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((path / "done").iterdir())}


def assert_bit_identical(path: Path, original: Path) -> None:
    got, want = raw_arrays(path), raw_arrays(original)
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        assert got[name].dtype == want[name].dtype
    assert markers(path) == markers(original)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def study(original, tmp_path) -> Path:
    copy = tmp_path / "s"
    shutil.copytree(original, copy)
    return copy


@pytest.mark.slow
def test_chunk_files_are_checksummed_and_markers_record_versions(original):
    for name in raw_arrays(original):
        meta = json.loads((original / "arrays.zarr" / name / "zarr.json").read_text())
        codecs = {c["name"]: c.get("configuration", {}) for c in meta["codecs"]}
        assert codecs["zstd"]["checksum"] is True and "crc32c" in codecs, name
        assert [c["name"] for c in meta["codecs"]][-1] == "crc32c"  # over the compressed bytes
    marker = json.loads((original / "done" / "chunk-000001").read_text())
    assert marker["rows"] == [2, 4] and marker["chunk"] == 1
    assert marker["memjax_version"] == memjax.__version__
    assert marker["jax_version"] == jax.__version__
    assert set(marker["sha256"]) == set(raw_arrays(original))


def _canonical_sha256(value) -> str:
    return hashlib.sha256(
        json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def test_markers_record_the_study_and_study_json_its_seal(original):
    meta = json.loads((original / "study.json").read_text())
    study = {"config": meta["config"], "dataset_fingerprint": meta["dataset_fingerprint"]}
    assert study["config"]["train"]["learning_rate"] == 0.01 and study["config"]["seed"] == 1
    for k in range(3):
        marker = json.loads((original / "done" / f"chunk-00000{k}").read_text())
        assert marker["study"] == study
        assert marker["study_sha256"] == _canonical_sha256(study)
    sealed = {k: v for k, v in meta.items() if k not in ("memjax_version", "memjax_versions")}
    assert meta["store_format"] == 3
    assert sealed.pop("seal_sha256") == _canonical_sha256(sealed)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["flip", "delete"])
def test_damaged_chunk_fails_readers_then_repair_restores_bytes(
    damage, cfg, original, study, tmp_path, capsys
):
    chunk_file = study / "arrays.zarr" / "train_correct" / "c" / "1" / "0"
    _flip_byte(chunk_file) if damage == "flip" else chunk_file.unlink()

    code, _, err = cli(capsys, "estimate", str(study), "--out", str(tmp_path / "est"))
    assert code == 3 and "chunk 1 (replicas 2..3)" in err and "train_correct" in err
    assert f"memjax verify {study} --repair" in err
    assert not (tmp_path / "est" / "summary.json").exists()

    empty = tmp_path / "empty"
    run_study(cfg, str(empty), progress=False, max_chunks=0)
    code, _, err = cli(capsys, "merge", str(study), str(empty), "--out", str(tmp_path / "m"))
    assert code == 3 and "chunk 1 (replicas 2..3)" in err
    assert not (tmp_path / "m").exists()

    code, out, _ = cli(capsys, "verify", str(study))
    assert code == 1 and "1 damaged" in out and "chunk 1 (replicas 2..3)" in out
    assert "chunk 0 " not in out and "chunk 2 " not in out
    code, out, _ = cli(capsys, "verify", str(study), "--repair")
    assert code == 0 and "chunks [1] are now unfinished" in out
    assert open_store(str(study)).done_chunks() == [0, 2]

    untouched = {k: os.stat(study / "done" / f"chunk-00000{k}").st_mtime_ns for k in (0, 2)}
    run_study(cfg, str(study), progress=False)
    assert untouched == {k: os.stat(study / "done" / f"chunk-00000{k}").st_mtime_ns for k in (0, 2)}
    assert_bit_identical(study, original)
    assert cli(capsys, "verify", str(study))[0] == 0


def test_stray_files_are_reported_and_wrong_markers_not_counted(cfg, original, study, capsys):
    done = study / "done"
    (done / "chunk-000001~").write_text("backup made by an editor")
    (done / "chunk-000099").write_text("{}")
    (done / "chunk-1").write_text("{}")
    (done / ".tmp-x1y2").write_text('{"rows": [')  # a marker write cut short by a kill
    (done / "chunk-000002").write_text((done / "chunk-000000").read_text())  # chunk 0's rows
    code, out, _ = cli(capsys, "status", str(study))
    status = json.loads(out)
    assert code == 0 and status["stray_files"] == [
        ".tmp-x1y2",
        "chunk-000001~",
        "chunk-000099",
        "chunk-1",
    ]
    assert list(status["invalid_markers"]) == ["chunk-000002"]
    assert "[0, 2]" in status["invalid_markers"]["chunk-000002"]
    assert status["chunks_finished"] == 2 and status["replicas_finished"] == 4
    assert not status["complete"]

    store = open_store(str(study))
    assert store.done_chunks() == [0, 1] and list(store.done_rows()) == [0, 1, 2, 3]
    code, _, err = cli(capsys, "estimate", str(study))
    assert code == 2 and "unfinished (4/6 replicas)" in err

    code, out, _ = cli(capsys, "verify", str(study))
    assert code == 1 and "done/chunk-000002: invalid marker" in out
    assert "done/chunk-000001~: not a marker of this study; ignored" in out
    code, out, _ = cli(capsys, "verify", str(study), "--repair")
    assert "done/.tmp-x1y2: left by an interrupted marker write; removed" in out
    assert not (done / ".tmp-x1y2").exists() and (done / "chunk-000001~").exists()
    run_study(cfg, str(study), progress=False)  # retrains chunk 2, overwriting its bad marker
    for name in ("chunk-000001~", "chunk-000099", "chunk-1"):
        (done / name).unlink()
    assert_bit_identical(study, original)


@pytest.mark.parametrize("lost", ["arrays.zarr", "arrays.zarr/zarr.json"])
def test_deleted_arrays_never_claim_completeness(lost, cfg, original, study, capsys):
    lost_path = study / lost
    shutil.rmtree(lost_path) if lost_path.is_dir() else lost_path.unlink()
    status = json.loads(cli(capsys, "status", str(study))[1])
    assert not status["complete"] and status["chunks_finished"] == 0
    assert status["chunks_missing_files"] == [0, 1, 2]
    with pytest.raises(CorruptChunkError, match=r"finished chunks \[0, 1, 2\] lack files"):
        run_study(cfg, str(study), progress=False)
    code, _, err = cli(capsys, "estimate", str(study))
    assert code == 3 and "arrays.zarr" in err and "--repair" in err

    code, out, _ = cli(capsys, "verify", str(study), "--repair")
    assert code == 0 and "chunks [0, 1, 2] are now unfinished" in out
    run_study(cfg, str(study), progress=False)
    assert_bit_identical(study, original)


def test_tampered_masks_are_detected(cfg, original, study, capsys):
    group = zarr.open_group(str(study / "arrays.zarr"), mode="r+")
    masks = group["masks"]
    masks[1, 7] = not masks[1, 7]  # finished chunk 0; zarr keeps the checksum valid
    store = open_store(str(study))
    with pytest.raises(CorruptChunkError, match=r"chunk 0 .*masks differ"):
        store.masks()
    code, _, err = cli(capsys, "estimate", str(study))
    assert code == 3 and "chunk 0 (replicas 0..1)" in err and "masks differ" in err
    code, out, _ = cli(capsys, "verify", str(study), "--repair")
    assert code == 0 and "chunks [0] are now unfinished" in out
    run_study(cfg, str(study), progress=False)
    assert_bit_identical(study, original)


def test_masks_of_unfinished_chunk_must_be_the_design(cfg, original, tmp_path, capsys):
    out = tmp_path / "s"
    run_study(cfg, str(out), progress=False, max_chunks=1)
    masks = zarr.open_group(str(out / "arrays.zarr"), mode="r+")["masks"]
    masks[5, 0] = not masks[5, 0]  # chunk 2, not trained yet
    with pytest.raises(CorruptChunkError, match=r"chunk 2 .*differ from the subset design"):
        run_study(cfg, str(out), progress=False)
    assert "chunk-000002" not in markers(out)
    code, text, _ = cli(capsys, "verify", str(out), "--repair")
    assert code == 0 and "chunk 2 (replicas 4..5)" in text
    run_study(cfg, str(out), progress=False)
    assert_bit_identical(out, original)


def test_replica_ids_must_be_the_chunk_rows(study):
    group = zarr.open_group(str(study / "arrays.zarr"), mode="r+")
    group["replica_ids"][4:6] = [0, 1]
    with pytest.raises(CorruptChunkError, match=r"chunk 2 .*replica_ids \[0, 1\] are not its"):
        open_store(str(study)).load_outputs()
    assert verify_study(open_store(str(study))).bad.keys() == {2}


def test_other_jobs_count_is_refused_and_runs_report_the_rest(cfg, tmp_path, capsys):
    out = tmp_path / "s"
    config = tmp_path / "small.json"  # JSON is YAML
    config.write_text(json.dumps(SMALL))
    args = ("run", str(config), "--out", str(out), "--quiet")
    code, text, _ = cli(capsys, *args, "--jobs", "2", "--job", "0")
    assert code == 0 and "1 of 3 chunks unfinished in the whole study (other jobs' shares" in text
    assert open_store(str(out)).done_chunks() == [0, 2] and open_store(str(out)).jobs == 2
    code, _, err = cli(capsys, *args, "--jobs", "3", "--job", "1")
    assert code == 3 and "shared by 2 jobs" in err and "--jobs 3" in err
    assert open_store(str(out)).done_chunks() == [0, 2]
    with pytest.raises(JobPartitionError):
        run_study(cfg, str(out), progress=False)  # --jobs 1 is another partition too
    code, text, _ = cli(capsys, *args, "--jobs", "2", "--job", "1")
    assert code == 0 and "6/6 replicas finished; 0 of 3 chunks unfinished" in text


def test_merge_of_verified_jobs(cfg, original, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_study(cfg, str(a), job=0, jobs=2, progress=False)
    run_study(cfg, str(b), job=1, jobs=2, progress=False)
    merged = merge([str(a), str(b)], str(tmp_path / "m"))
    assert merged.jobs == 1  # a new directory: whoever resumes it chooses its jobs
    assert_bit_identical(tmp_path / "m", original)


@pytest.mark.parametrize(
    "fmt, lacks",
    [(None, "1, without chunk checksums"), (2, "2, whose chunk markers do not record the config")],
)
def test_older_store_formats_are_refused(study, fmt, lacks):
    meta = json.loads((study / "study.json").read_text())
    if fmt is None:  # format 1 recorded none
        del meta["store_format"]
    else:
        meta["store_format"] = fmt
    (study / "study.json").write_text(json.dumps(meta))
    with pytest.raises(StoreMismatchError, match=f"store format {lacks}.*run the study again"):
        open_store(str(study))


@pytest.mark.parametrize("link", ["done", "done/chunk-000000", "arrays.zarr/masks"])
def test_links_out_of_the_study_are_refused_before_verify_or_merge(
    original, study, tmp_path, capsys, file_snapshot, link
):
    """A study whose done/ (a marker, an array) is a symbolic link into another study: verify,
    verify --repair and merge refuse it by name and leave the other study untouched."""
    victim = tmp_path / "victim"
    shutil.copytree(original, victim)
    (victim / "done" / "chunk-000002").write_text("garbage")  # what a repair would remove
    entry = study / link
    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    entry.symlink_to(victim / link)
    before = file_snapshot(victim)
    for args in (
        ("verify", str(study)),
        ("verify", str(study), "--repair"),
        ("merge", str(victim), str(study), "--out", str(tmp_path / "merged")),
    ):
        code, _, err = cli(capsys, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{study / link} is a symbolic link to {victim / link}, outside the study" in err
    assert file_snapshot(victim) == before
    assert not (tmp_path / "merged").exists()


@pytest.fixture(scope="module")
def foreign(cfg, tmp_path_factory) -> dict[str, Path]:
    """Chunk 0 of studies that differ from ``cfg`` in their data (same masks) or their seed
    (other masks); neither needs another compilation."""
    others = {
        "data": replace(cfg, dataset={**cfg.dataset, "seed": 1}),
        "seed": replace(cfg, seed=2),
    }
    out = {}
    for name, other in others.items():
        out[name] = tmp_path_factory.mktemp("foreign") / name
        run_study(other, str(out[name]), progress=False, max_chunks=1)
    return out


def _copy_chunk0(source: Path, study: Path) -> None:
    """Chunk 0's files of every array and its marker, from ``source`` into ``study``."""
    for array in (source / "arrays.zarr").iterdir():
        chunk, target = array / "c" / "0", study / "arrays.zarr" / array.name / "c" / "0"
        if chunk.is_dir():  # (chunk, columns) arrays: one file per column chunk
            shutil.rmtree(target)
            shutil.copytree(chunk, target)
        elif chunk.is_file():  # replica_ids
            shutil.copy(chunk, target)
    shutil.copy(source / "done" / "chunk-000000", study / "done" / "chunk-000000")


@pytest.mark.parametrize(
    "other, differences",
    [
        ("data", ["config.dataset.seed (0 vs 1)", "dataset_fingerprint ("]),
        ("seed", ["config.seed (1 vs 2)"]),
    ],
)
def test_chunk_of_another_study_is_refused_by_every_reader(
    cfg, original, foreign, other, differences, study, tmp_path, capsys
):
    _copy_chunk0(foreign[other], study)
    named = ["chunk 0 (replicas 0..1) was written by another study", *differences]
    with pytest.raises(ForeignChunkError) as err:
        memjax.open_study(str(study)).store.load_outputs()
    assert isinstance(err.value, StoreMismatchError) and err.value.chunks == [0]
    assert all(part in str(err.value) for part in named)
    for command in (
        ["estimate", str(study), "--out", str(tmp_path / "est")],
        ["report", str(study)],
    ):
        code, _, stderr = cli(capsys, *command)
        assert code == 3 and stderr.count("\n") == 1, command
        assert all(part in stderr for part in named), command
    assert not (tmp_path / "est" / "summary.json").exists()
    empty = tmp_path / "empty"
    run_study(cfg, str(empty), progress=False, max_chunks=0)
    code, _, stderr = cli(capsys, "merge", str(study), str(empty), "--out", str(tmp_path / "m"))
    assert code == 3 and all(part in stderr for part in named)
    assert not (tmp_path / "m").exists()
    status = study_status(open_store(str(study)))
    assert status["chunks_finished"] == 2 and not status["complete"]
    assert list(status["chunks_of_another_study"]) == [0]
    assert all(part in status["chunks_of_another_study"][0] for part in differences)
    before = markers(study)
    with pytest.raises(ForeignChunkError, match=r"chunk 0 .*differing settings"):
        run_study(cfg, str(study), progress=False)  # resuming would count it as done
    assert markers(study) == before
    code, out, _ = cli(capsys, "verify", str(study))
    assert code == 1 and "3 marked finished, 2 verified, 1 damaged" in out
    assert all(part in out for part in named)
    code, out, _ = cli(capsys, "verify", str(study), "--repair")
    assert code == 0 and "chunks [0] are now unfinished" in out
    run_study(cfg, str(study), progress=False)
    assert_bit_identical(study, original)


def test_finished_chunk_with_other_masks_is_refused(cfg, original, foreign, study, capsys):
    """A chunk trained on other subsets whose marker claims this study: the masks tell."""
    _copy_chunk0(foreign["seed"], study)
    marker_path = study / "done" / "chunk-000000"
    ours = json.loads((original / "done" / "chunk-000000").read_text())
    forged = {**json.loads(marker_path.read_text())}
    forged.update(study=ours["study"], study_sha256=ours["study_sha256"])
    marker_path.write_text(json.dumps(forged))
    with pytest.raises(ForeignChunkError, match=r"chunk 0 .*not the subset design's"):
        open_store(str(study)).masks()
    code, _, stderr = cli(capsys, "estimate", str(study))
    assert code == 3 and "chunk 0 (replicas 0..1)" in stderr and "subset design" in stderr
    report = verify_study(open_store(str(study)))
    assert list(report.bad) == [0] and "not the subset design's" in report.bad[0]
    code, out, _ = cli(capsys, "verify", str(study), "--repair")
    assert code == 0 and "chunks [0] are now unfinished" in out
    run_study(cfg, str(study), progress=False)
    assert_bit_identical(study, original)


def test_study_json_edited_between_jobs_is_refused(tmp_path, capsys):
    out = tmp_path / "s"
    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL))
    args = ("run", str(config), "--out", str(out), "--quiet", "--jobs", "2")
    assert cli(capsys, *args, "--job", "0")[0] == 0
    meta_path = out / "study.json"
    text = meta_path.read_text()
    meta = json.loads(text)
    meta["config"]["train"]["learning_rate"] = 0.5
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True))
    before = markers(out)
    named = [f"{meta_path} was edited after the study was created", "learning_rate (0.01 vs 0.5)"]
    code, _, stderr = cli(capsys, *args, "--job", "1", "--set", "train.learning_rate=0.5")
    assert code == 3 and stderr.count("\n") == 1 and all(part in stderr for part in named)
    assert markers(out) == before
    for command in (["verify", str(out)], ["estimate", str(out)], ["status", str(out)]):
        code, _, stderr = cli(capsys, *command)
        assert code == 3 and all(part in stderr for part in named), command
    with pytest.raises(StudyEditedError, match="learning_rate"):
        memjax.open_study(str(out))
    meta_path.write_text(text)  # the original again
    assert cli(capsys, *args, "--job", "1")[0] == 0
    assert open_store(str(out)).is_complete()
