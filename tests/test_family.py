"""Study families and the config file: sweep expansion, resume, job splits, merge, status,
estimate and verify on every member; modes and --set overrides; statements that never
block a resume. Real (tiny) studies: digits, an MLP, 6 replicas in 3 chunks, 1 epoch."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

import memjax as mj
from memjax.cli import main as cli
from memjax.outputs import ReplicaOutputs
from memjax.schema import ConfigError
from memjax.study import (
    FamilyConfig,
    JobPartitionError,
    StoreMismatchError,
    StudyConfig,
    job_chunks,
    load,
    load_config,
    load_family,
    merge_families,
    open_store,
    run_family,
    run_study,
)

BASE = {
    "name": "fam",
    "description": "two widths by two label-noise rates",
    "command": "memjax run fam.yaml",
    "expected_runtime": "seconds",
    "dataset": {"name": "digits"},
    "model": {"type": "MLP", "widths": [8]},
    "subsets": {"replicas": 6, "ratio": 0.5, "design": "balanced"},
    "train": {"epochs": 1, "batch_size": 128, "optimizer": "adam", "learning_rate": 0.01},
    "seed": 3,
    "chunk_size": 2,
}
FAMILY = {**BASE, "sweep": {"model.widths": [[8], [4, 4]], "dataset.label_noise": [0.0, 0.2]}}
# member subdirectory -> (widths, label noise), in sweep order: the first key varies slowest
MEMBERS = {
    "widths_8-label_noise_0.0": ((8,), 0.0),
    "widths_8-label_noise_0.2": ((8,), 0.2),
    "widths_4x4-label_noise_0.0": ((4, 4), 0.0),
    "widths_4x4-label_noise_0.2": ((4, 4), 0.2),
}
CHUNKS = 3  # per member: 6 replicas in chunks of 2


def write(tmp_path: Path, doc: dict, name: str = "fam.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def member_outputs(path: str) -> dict[str, dict[str, np.ndarray]]:
    """Every stored array of every member (masks and outputs), read and verified."""
    out = {}
    for name, (_, study) in mj.open_family(path).members.items():
        arrays = {"masks": study.masks}
        for f in dataclasses.fields(ReplicaOutputs):
            value = getattr(study.outputs, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = value
        out[name] = arrays
    return out


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for member in a:
        assert list(a[member]) == list(b[member])
        for name, value in a[member].items():
            np.testing.assert_array_equal(value, b[member][name], err_msg=f"{member} {name}")


def markers(path: str) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in Path(path).glob("*/done/*")}


@pytest.fixture(scope="module")
def cfg() -> FamilyConfig:
    return FamilyConfig.from_dict(FAMILY)


@pytest.fixture(scope="module")
def single(cfg, tmp_path_factory) -> str:
    """The family run by one job: the reference."""
    out = str(tmp_path_factory.mktemp("single") / "fam")
    run_family(cfg, out, progress=False)
    return out


def test_sweep_expands_to_the_cartesian_product_in_written_order(cfg):
    assert [m.dir for m in cfg.members] == list(MEMBERS)
    assert [m.name for m in cfg.members] == [f"fam-{d}" for d in MEMBERS]
    for member, (widths, noise) in zip(cfg.members, MEMBERS.values(), strict=True):
        assert member.values == {"model.widths": list(widths), "dataset.label_noise": noise}
        expected = StudyConfig.from_dict(
            {
                **BASE,
                "name": member.name,
                "expected_runtime": "",
                "dataset": {"name": "digits", "label_noise": noise},
                "model": {"type": "MLP", "widths": list(widths)},
            }
        )
        assert member.config == expected
    again = FamilyConfig.from_dict(json.loads(json.dumps(FAMILY)))
    assert [(m.dir, m.config) for m in again.members] == [(m.dir, m.config) for m in cfg.members]


def test_member_names_fall_back_to_positions_and_full_keys():
    doc = {**BASE, "sweep": {"train.optimizer": ["sgd", "adam"], "dataset": ["digits", "a b"]}}
    assert [m.dir for m in FamilyConfig.from_dict(doc).members] == [
        "optimizer_sgd-dataset_0",
        "optimizer_sgd-dataset_1",
        "optimizer_adam-dataset_0",
        "optimizer_adam-dataset_1",
    ]
    doc = {**BASE, "sweep": {"seed": [1, 2], "dataset.noise_seed": [0], "train.loss": ["mse"]}}
    assert FamilyConfig.from_dict(doc).members[1].dir == "seed_2-noise_seed_0-loss_mse"


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"seed": []}, r"sweep\.seed: got \[\]; allowed: a non-empty list"),
        ({"seed": [1, 1]}, r"sweep\.seed: .* distinct values"),
        ({"train.epoch": [1, 2]}, r"family member epoch_1: unknown setting train\.epoch "),
        ({"subsets.ratio": [0.5, 1.5]}, r"member ratio_1.5: setting subsets\.ratio: got 1\.5"),
        ({"description": ["a", "b"]}, r"sweep\.description: .* a setting that shapes results"),
        ({"train..x": [1]}, r"unknown setting train\.\.x"),
    ],
)
def test_bad_sweeps_are_refused_naming_the_setting(sweep, message):
    with pytest.raises(ConfigError, match=message):
        FamilyConfig.from_dict({**BASE, "sweep": sweep})


@pytest.mark.slow
def test_family_directory_records_members_and_reads_back(cfg, single):
    record = json.loads((Path(single) / "family.json").read_text())
    assert [m["dir"] for m in record["members"]] == list(MEMBERS)
    assert [m["job_offset"] for m in record["members"]] == [0, 3, 6, 9]
    family = mj.open_family(single)
    assert family.config == cfg and [m.config for m in family.config.members] == [
        m.config for m in cfg.members
    ]
    assert list(family.members) == [m.name for m in cfg.members]
    for (values, study), member in zip(family.members.values(), cfg.members, strict=True):
        assert values == member.values and study.complete and study.replicas == 6
        assert study.config == dataclasses.replace(member.config, chunk_size=None)
        assert study.config.description == BASE["description"]
        flipped = study.flipped
        noise = member.values["dataset.label_noise"]
        assert (flipped is None) == (noise == 0.0)
        if flipped is not None:
            assert abs(flipped.mean() - noise) < 0.05


def test_stopped_family_resumes_without_retraining_finished_members(cfg, single, tmp_path):
    out = str(tmp_path / "fam")
    run_family(cfg, out, progress=False, max_chunks=4)
    status = [open_store(os.path.join(out, d)).done_chunks() for d in list(MEMBERS)[:2]]
    assert status == [[0, 1, 2], [0]] and not os.path.exists(os.path.join(out, list(MEMBERS)[2]))
    before = markers(out)
    run_family(cfg, out, progress=False)
    after = markers(out)
    assert {k: after[k] for k in before} == before and len(after) == 4 * CHUNKS
    assert_bitwise_equal(member_outputs(out), member_outputs(single))
    run_family(cfg, out, progress=False)
    assert markers(out) == after


def _owned(job: int, jobs: int) -> dict[str, list[int]]:
    """The chunks a job owns: positions job, job + jobs, ... of all members' chunks listed
    member after member."""
    owned: dict[str, list[int]] = {d: [] for d in MEMBERS}
    for position in range(job, len(MEMBERS) * CHUNKS, jobs):
        owned[list(MEMBERS)[position // CHUNKS]].append(position % CHUNKS)
    return owned


def test_two_jobs_split_the_family_into_one_directory(cfg, single, tmp_path):
    out = str(tmp_path / "fam")
    run_family(cfg, out, job=0, jobs=2, progress=False)
    done = {d: open_store(os.path.join(out, d)).done_chunks() for d in MEMBERS}
    assert done == _owned(0, 2) == {d: [0, 2] if i % 2 == 0 else [1] for i, d in enumerate(MEMBERS)}
    with pytest.raises(JobPartitionError, match="shared by 2 jobs .* --jobs 1"):
        run_family(cfg, out, progress=False)
    run_family(cfg, out, job=1, jobs=2, progress=False)
    assert_bitwise_equal(member_outputs(out), member_outputs(single))


@pytest.mark.slow
def test_two_jobs_in_separate_directories_merge_member_wise(cfg, single, tmp_path, capsys):
    a, b, merged = (str(tmp_path / n) for n in ("a", "b", "merged"))
    run_family(cfg, a, job=0, jobs=2, progress=False)
    run_family(cfg, b, job=1, jobs=2, progress=False)
    assert cli(["merge", a, b, "--out", merged]) == 0
    assert f"{merged}: 24/24 replicas; 0 of 12 chunks unfinished" in capsys.readouterr().out
    assert_bitwise_equal(member_outputs(merged), member_outputs(single))
    assert json.loads((Path(merged) / "family.json").read_text())["jobs"] == 1
    other = str(tmp_path / "other")
    run_family(FamilyConfig.from_dict({**FAMILY, "seed": 4}), other, max_chunks=1, progress=False)
    with pytest.raises(StoreMismatchError, match=r"member widths_8-label_noise_0.0: seed \(3 vs 4"):
        merge_families([a, other], str(tmp_path / "m2"))


def test_a_different_family_is_refused_naming_the_difference(cfg, single, tmp_path):
    before = markers(single)
    epochs = {**FAMILY, "train": {**FAMILY["train"], "epochs": 2}}
    with pytest.raises(StoreMismatchError, match=r"member widths_8-label_noise_0.0: train\.epochs"):
        run_family(FamilyConfig.from_dict(epochs), single, progress=False)
    wider = {**FAMILY, "sweep": {**FAMILY["sweep"], "dataset.label_noise": [0.0, 0.2, 0.3]}}
    with pytest.raises(StoreMismatchError, match=r"sweep\.dataset\.label_noise .*member widths_8"):
        run_family(FamilyConfig.from_dict(wider), single, progress=False)
    assert markers(single) == before


def test_statements_do_not_block_a_resume(cfg, single, tmp_path):
    edited = {**FAMILY, "description": "new words", "command": "make x", "expected_runtime": "1 h"}
    before = markers(single)
    run_family(FamilyConfig.from_dict(edited), single, progress=False)
    assert markers(single) == before
    study = {k: v for k, v in edited.items() if k != "sweep"}
    out = str(tmp_path / "s")
    run_study(StudyConfig.from_dict(study), out, progress=False, max_chunks=1)
    renamed = StudyConfig.from_dict({**study, "description": "other", "expected_runtime": "2 h"})
    store = run_study(renamed, out, progress=False)
    assert store.is_complete() and mj.open_study(out).config.description == "new words"


@pytest.mark.slow
def test_cli_status_estimate_verify_on_a_family(single, tmp_path, capsys):
    assert cli(["status", single]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["members_complete"], status["members_planned"]) == (4, 4)
    assert (status["replicas_finished"], status["chunks_finished"]) == (24, 12)
    assert [m["member"] for m in status["members"]] == list(MEMBERS)
    assert all(m["complete"] and m["replicas_finished"] == 6 for m in status["members"])
    assert status["eta_s"] == 0 and status["eta_unknown"] == []
    assert cli(["verify", single]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if "3 verified, 0 damaged" in line] == lines
    assert len(lines) == 4
    out = tmp_path / "estimates"
    assert cli(["estimate", single, "--out", str(out)]) == 0
    for d in MEMBERS:
        summary = json.loads((out / d / "summary.json").read_text())
        table = np.genfromtxt(out / d / "memorization.csv", delimiter=",", names=True)
        study = mj.open_study(os.path.join(single, d))
        np.testing.assert_allclose(
            table["memorization"], study.memorization.value, rtol=1e-5, equal_nan=True
        )
        assert summary["replicas_finished"] == 6
    capsys.readouterr()
    reports = tmp_path / "reports"
    assert cli(["report", single, "--out", str(reports)]) == 0  # a page per member
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {reports / d / 'report.html'}" for d in MEMBERS
    ]


def test_cli_runs_a_family_and_reports_unstarted_members(tmp_path, capsys):
    path = write(tmp_path, FAMILY)
    out = str(tmp_path / "fam")
    run_family(load_family(path), out, progress=False, max_chunks=1)
    assert cli(["status", out]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["chunks_finished"] == 1 and status["members"][1]["started"] is False
    # the unstarted members have no timing yet, so the family's ETA is not claimed
    unstarted = [m["study"] for m in status["members"] if not m.get("started", True)]
    assert status["eta_s"] is None and set(unstarted) <= set(status["eta_unknown"])
    assert cli(["estimate", out]) == 2
    assert "were never started" in capsys.readouterr().err
    assert cli(["run", path, "--out", out, "--quiet", "--job", "1", "--jobs", "2"]) == 3
    assert "shared by 1 jobs (recorded when it was created) but this run has --jobs 2" in (
        capsys.readouterr().err
    )


MODES_DOC = {
    **BASE,
    "modes": {
        "quick": {"subsets.replicas": 4, "expected_runtime": "1 s"},
        "full": {"train.epochs": 5, "model.widths": [16, 16], "name": "fam-full"},
    },
}


def _settings(cfg: StudyConfig) -> dict:
    return {"name": cfg.name, **cfg.about(), **cfg.result_dict(), "chunk": cfg.chunk_size}


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested settings by dotted name."""
    out = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def _changed(a: StudyConfig, b: StudyConfig) -> dict:
    """The settings (and statements) in which b differs from a, with b's values."""
    flat = [_flat(_settings(c)) for c in (a, b)]
    assert set(flat[0]) <= set(flat[1])
    return {k: v for k, v in flat[1].items() if flat[0].get(k, "absent") != v}


def test_modes_and_sets_change_exactly_the_named_settings(tmp_path):
    path = write(tmp_path, MODES_DOC)
    plain = StudyConfig.from_dict(BASE)
    assert _changed(plain, load_config(path, "quick")) == {
        "subsets.replicas": 4,
        "expected_runtime": "1 s",
    }
    assert _changed(plain, load_config(path, "full")) == {
        "train.epochs": 5,
        "model.widths": [16, 16],
        "name": "fam-full",
    }
    sets = ("train.learning_rate=1e-3", "dataset.label_noise=0.1", "subsets.replicas=8")
    assert _changed(plain, load_config(path, "quick", sets)) == {
        "train.learning_rate": 0.001,
        "dataset.label_noise": 0.1,
        "subsets.replicas": 8,
        "expected_runtime": "1 s",
    }
    shorthand = write(tmp_path, {**BASE, "dataset": "digits"}, "short.yaml")
    assert load_config(shorthand, sets=("dataset.label_noise=0.2",)).dataset == {
        "name": "digits",
        "label_noise": 0.2,
    }
    family = load(write(tmp_path, {**FAMILY, **MODES_DOC}, "f.yaml"), "full", ("sweep.seed=[1]",))
    assert [m.dir for m in family.members] == [f"{d}-seed_1" for d in MEMBERS]
    assert [m.config.seed for m in family.members] == [1] * 4
    assert all(m.config.train.epochs == 5 for m in family.members)


@pytest.mark.parametrize(
    "mode, sets, message",
    [
        (None, (), r"declares modes \['quick', 'full'\]: choose one with --mode"),
        ("fast", (), r"unknown mode 'fast': its modes are \['quick', 'full'\]"),
        ("quick", ("train.epoch=3",), r"unknown setting train\.epoch "),
        ("quick", ("train.epochs=three",), r"train\.epochs: got 'three'; allowed: an integer"),
        ("quick", ("subsets.replicas=1",), r"subsets\.replicas: got 1; allowed: an integer >= 2"),
        ("quick", ("train.epochs=[1",), r"train\.epochs: got '\[1'; allowed: a YAML value"),
        ("quick", ("train.epochs",), r"expected dotted\.setting=value"),
        ("quick", ("seed.x=1",), r"setting seed: got 3; allowed: a mapping"),
    ],
)
def test_bad_modes_and_sets_are_refused_naming_them(tmp_path, mode, sets, message):
    path = write(tmp_path, MODES_DOC)
    with pytest.raises(ValueError, match=message):
        load_config(path, mode, sets)


def test_cli_mode_and_set_errors_exit_2_and_write_nothing(tmp_path, capsys):
    path = write(tmp_path, MODES_DOC)
    out = tmp_path / "out"
    args = ["run", path, "--out", str(out), "--quiet", "--mode", "quick"]
    assert cli([*args, "--set", "train.optimizer=adamw"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"memjax run: error: {path}: setting train.optimizer: got 'adamw'")
    assert cli(["run", path, "--out", str(out), "--mode", "slow"]) == 2
    assert "unknown mode 'slow': its modes are ['quick', 'full']" in capsys.readouterr().err
    assert not out.exists()
    assert cli([*args, "--set", "subsets.replicas=2", "--set", "train.epochs=1"]) == 0
    asked = load_config(path, "quick", ("subsets.replicas=2", "train.epochs=1"))
    assert mj.open_study(str(out)).config == dataclasses.replace(asked, chunk_size=None)


def test_job_chunks_with_an_offset_partition_the_chunk_list():
    for jobs in (1, 2, 3):
        for offset in (0, 1, 5):
            owned = [job_chunks(7, j, jobs, offset) for j in range(jobs)]
            assert sorted(sum(owned, [])) == list(range(7))
            assert all((offset + k) % jobs == j for j, ks in enumerate(owned) for k in ks)


@pytest.mark.parametrize("tamper", ["dotdot", "absolute", "symlink"])
def test_family_members_outside_the_family_are_refused_untouched(
    single, tmp_path, capsys, file_snapshot, tamper
):
    """A family.json from someone else cannot make estimate, verify --repair, status, merge
    or run read or write a study outside the family."""
    import shutil

    fam, victim = tmp_path / "fam", tmp_path / "victim"
    shutil.copytree(single, fam)
    first = next(iter(MEMBERS))
    shutil.copytree(fam / first, victim)
    (victim / "done" / "chunk-000000").write_text("not a marker")  # repair would remove it
    record = json.loads((fam / "family.json").read_text())
    named = {"dotdot": "../victim", "absolute": str(victim), "symlink": first}[tamper]
    record["members"][0]["dir"] = named
    (fam / "family.json").write_text(json.dumps(record))
    if tamper == "symlink":
        shutil.rmtree(fam / first)
        (fam / first).symlink_to(victim, target_is_directory=True)
    before = file_snapshot(victim)
    for argv in (
        ["estimate", str(fam), "--partial"],
        ["verify", str(fam), "--repair"],
        ["status", str(fam)],
        ["merge", str(fam), str(fam), "--out", str(tmp_path / "merged")],
        ["run", write(tmp_path, FAMILY), "--out", str(fam), "--quiet"],
    ):
        assert cli(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{fam}/family.json: member directory" in err
        assert (str(victim) if tamper == "symlink" else repr(named)) in err, err
    assert file_snapshot(victim) == before
    assert not (tmp_path / "merged").exists()


def test_a_member_training_would_refuse_writes_no_family(tmp_path, capsys):
    """A sweep value that one member cannot train with (augmentation of flat digits) is
    refused, naming it (exit 2), before the family directory is created."""
    doc = {**BASE, "sweep": {"train.augment": ["none", "crop"]}}
    out = tmp_path / "fam"
    assert cli(["run", write(tmp_path, doc), "--out", str(out), "--quiet"]) == 2
    assert "augment='crop'" in capsys.readouterr().err and not out.exists()
