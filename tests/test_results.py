"""mj.open_study: the one way to read a study — verified data, aligned arrays, the design's
blocks, and estimates equal to the estimators run by hand on the stored arrays."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import memjax as mj
from memjax.cli import main
from memjax.study import DatasetMismatchError, StudyConfig, attack_targets, run_study, seal

TINY = {
    "name": "tiny-results",
    "dataset": {"name": "digits", "label_noise": 0.1},
    "model": {"type": "MLP", "widths": [16]},
    "subsets": {"replicas": 8, "ratio": 0.5, "design": "balanced"},
    "train": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "learning_rate": 0.01},
    "seed": 5,
    "chunk_size": 4,
}


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("results") / "s")
    run_study(StudyConfig.from_dict(TINY), out, progress=False)
    return out


@pytest.mark.slow
def test_open_study_reads_aligned_verified_arrays(study_dir):
    s = mj.open_study(study_dir)
    assert s.complete and s.replicas == 8 and s.name == "tiny-results"
    np.testing.assert_array_equal(s.rows, np.arange(8))
    np.testing.assert_array_equal(s.outputs.replica_ids, s.rows)
    expected = mj.subsets.sample(s.dataset.n_train, 8, 0.5, seed=5, design="balanced")
    np.testing.assert_array_equal(s.masks, expected)
    np.testing.assert_array_equal(s.blocks, np.arange(8) // 2)
    assert s.config.train.epochs == 2 and s.config.design == "balanced"
    assert s.flipped is not None and s.flipped.sum() > 0
    mem = mj.estimators.memorization(expected, s.outputs.train_correct, blocks=np.arange(8) // 2)
    for field in ("value", "stderr", "ci_low", "ci_high"):
        np.testing.assert_array_equal(getattr(s.memorization, field), getattr(mem, field))
    assert s.memorization is s.memorization  # memoized
    assert s.n_targets == attack_targets(8) == 2
    own = [c[m].mean() for c, m in zip(s.outputs.train_correct, s.masks, strict=True)]
    acc = mj.estimators.replica_mean(np.array(own), np.arange(8) // 2)
    assert s.accuracy["in_subset"].value == pytest.approx(acc.value)
    assert s.accuracy["in_subset"].ci_low == pytest.approx(acc.ci_low)
    assert s.accuracy["test"].value == pytest.approx(s.outputs.test_correct.mean())


def test_attack_targets_default():
    assert [attack_targets(r) for r in (4, 8, 64, 1000)] == [1, 2, 16, 16]


def _forge_fingerprint(study_dir: str, tmp_path) -> str:
    copy = tmp_path / "forged"
    shutil.copytree(study_dir, copy)
    meta_path = copy / "study.json"
    meta = json.loads(meta_path.read_text())
    meta["dataset_fingerprint"] = "0" * 32
    meta_path.write_text(json.dumps(seal(meta)))  # sealed: as if the dataset had changed since
    return str(copy)


def test_changed_fingerprint_is_refused_naming_both(study_dir, tmp_path, capsys):
    forged = _forge_fingerprint(study_dir, tmp_path)
    s = mj.open_study(forged)
    real = mj.open_study(study_dir).meta["dataset_fingerprint"]
    with pytest.raises(DatasetMismatchError) as err:
        _ = s.memorization
    assert real in str(err.value) and "0" * 32 in str(err.value)
    assert "scikit-learn" in str(err.value)
    for command in (["estimate", forged], ["report", forged]):
        assert main(command) == 2
        message = capsys.readouterr().err
        assert real in message and "0" * 32 in message, command
    assert not os.path.exists(os.path.join(forged, "summary.json"))
    assert not os.path.exists(os.path.join(forged, "report.html"))
