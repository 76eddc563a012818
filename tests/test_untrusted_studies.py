"""A study directory from someone else: estimate, report and verify read it without running
anything it ships, and follow its dataset path only inside the data root."""

from __future__ import annotations

import numpy as np
import pytest

from memjax.cli import main
from memjax.study import StudyConfig, run_study
from tests.cifar_cases import cifar_batch, crafted_batches, write_pickle

STUDY = {
    "name": "pixels",
    "dataset": "cifar",  # relative: resolved against the current directory, as run read it
    "model": {"type": "MLP", "widths": [4]},
    "subsets": {"replicas": 4, "ratio": 0.5, "design": "balanced"},
    "train": {
        "epochs": 1,
        "batch_size": 8,
        "optimizer": "adam",
        "learning_rate": 0.01,
        "vectorize": "vmap",
    },
    "chunk_size": 4,
}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """ROOT/cifar (8 + 4 tiny CIFAR-10 images) and ROOT/study trained on it from ROOT."""
    root = tmp_path_factory.mktemp("shipped")
    rng = np.random.default_rng(0)
    (root / "cifar").mkdir()
    write_pickle(root / "cifar" / "data_batch_1", cifar_batch(rng, 8, b"labels", 10))
    write_pickle(root / "cifar" / "test_batch", cifar_batch(rng, 4, b"labels", 10))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        run_study(StudyConfig.from_dict(STUDY), "study", progress=False)
    return root


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_own_study_reads_its_relative_dataset_from_the_same_directory(shipped, monkeypatch):
    monkeypatch.chdir(shipped)
    assert main(["estimate", "study", "--out", "estimates"]) == 0
    assert (shipped / "estimates" / "summary.json").exists()


def test_a_dataset_outside_the_data_root_is_refused_by_name(shipped, monkeypatch, capsys):
    (shipped / "other").mkdir(exist_ok=True)
    monkeypatch.chdir(shipped)
    for argv in (["estimate", "study"], ["report", "study"]):
        assert main([*argv, "--data-root", "other"]) == 2
        err = one_error_line(capsys)
        assert f"study: dataset.name 'cifar' leads to {shipped / 'cifar'}, outside" in err


@pytest.mark.parametrize("case", range(4))
def test_a_crafted_pickle_in_a_study_never_runs(shipped, tmp_path, monkeypatch, capsys, case):
    """estimate and report refuse the batch by name (exit 2), verify never reads data."""
    import shutil

    shutil.copytree(shipped / "study", tmp_path / "study")
    shutil.copytree(shipped / "cifar", tmp_path / "cifar")
    sentinel = tmp_path / "pwned"
    write_pickle(tmp_path / "cifar" / "data_batch_1", crafted_batches(sentinel)[case])
    monkeypatch.chdir(tmp_path)
    for argv in (["estimate", "study"], ["report", "study"]):
        assert main(argv) == 2
        assert "cifar/data_batch_1: refusing to unpickle" in one_error_line(capsys)
    assert main(["verify", "study"]) == 0
    assert "1 verified, 0 damaged" in capsys.readouterr().out
    assert not sentinel.exists()
    assert not (tmp_path / "study" / "report.html").exists()
