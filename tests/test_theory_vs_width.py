"""The theory-vs-width experiment: its block bootstrap; its family resumes without retraining
finished members and splits over jobs; kernel models stored as derived studies (refused for a
changed source, bit-identical when recomputed, resumable); end to end on a tiny setting of
its quick mode."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest

import memjax as mj
from experiments.theory_vs_width import agreement, experiment
from memjax.study import StoreMismatchError, family_status, open_family, run_family, seal

# a tiny quick mode: 2 members (2 widths, not linearized) of 2 chunks of 2 replicas each
TINY = (
    "dataset.n_train=32",
    "dataset.n_test=16",
    "subsets.replicas=4",
    "chunk_size=2",
    "sweep.model.widths=[[8],[16]]",
    "sweep.train.linearize=[false]",
    "train.epochs=5",
)


@pytest.mark.parametrize("ratio", [0.5, 0.25])
def test_bootstrap_resamples_whole_blocks(ratio):
    replicas = 24
    blocks = mj.subsets.block_ids(np.arange(replicas), ratio, "balanced")
    sizes = np.bincount(blocks)
    draws = set()
    for seed in range(20):
        rows = agreement.bootstrap_rows(blocks, replicas, np.random.default_rng(seed))
        assert len(rows) == replicas
        # every block drawn contributes all its replicas, as many times as it was drawn
        drawn = np.bincount(blocks[rows], minlength=len(sizes))
        assert (drawn % sizes == 0).all()
        for b in np.flatnonzero(drawn):
            times = drawn[b] // sizes[b]
            np.testing.assert_array_equal(
                np.sort(rows[blocks[rows] == b]), np.repeat(np.flatnonzero(blocks == b), times)
            )
        draws.add(tuple(rows))
    assert len(draws) > 1
    single = agreement.bootstrap_rows(None, 7, np.random.default_rng(0))
    assert len(single) == 7 and set(single) <= set(range(7))
    with pytest.raises(ValueError, match="one id per replica"):
        agreement.bootstrap_rows(blocks[:5], replicas, np.random.default_rng(0))


def test_compare_reports_intervals_from_the_block_bootstrap():
    """Two models that agree up to noise: the bootstrap stderr and the interval (Fisher
    scale, centred on the value) come from the same block resamples computed by hand."""
    rng = np.random.default_rng(0)
    replicas, n, m = 16, 40, 30
    masks = mj.subsets.sample(n, replicas, 0.5, seed=0)
    blocks = mj.subsets.block_ids(np.arange(replicas), 0.5, "balanced")

    def model(noise: float) -> mj.ReplicaOutputs:
        p_train = np.where(masks, 0.95, np.linspace(0.1, 0.9, n))
        shape = (replicas, m)
        return mj.ReplicaOutputs(
            replica_ids=np.arange(replicas),
            train_correct=rng.random((replicas, n)) < np.clip(p_train + noise, 0, 1),
            train_margin=np.zeros((replicas, n), np.float32),
            train_loss=np.zeros((replicas, n), np.float32),
            test_correct=rng.random(shape) < 0.7,
            test_margin=np.zeros(shape, np.float32),
            test_loss=np.zeros(shape, np.float32),
        )

    a, b = model(0.0), model(0.02)
    res = agreement.compare(masks, a, b, boots=50, seed=3, blocks=blocks)
    boot = np.random.default_rng(3)
    pearson = []
    for _ in range(50):
        rows = agreement.bootstrap_rows(blocks, replicas, boot)
        x, y = (
            mj.estimators.memorization(masks[rows], o.train_correct[rows]).value for o in (a, b)
        )
        pearson.append(agreement.correlations(x, y)["pearson"])
    mem = res["memorization"]["pearson"]
    assert mem["stderr"] == pytest.approx(np.std(pearson, ddof=1))
    spread = 1.959963984540054 * np.std(np.arctanh(pearson), ddof=1)
    centre = np.arctanh(mem["value"])
    assert mem["ci_low"] == pytest.approx(np.tanh(centre - spread))
    assert mem["ci_high"] == pytest.approx(np.tanh(centre + spread))
    assert 0.3 < mem["value"] < 1 and mem["ci_low"] < mem["value"] < mem["ci_high"] < 1


def _markers(family_dir) -> dict[str, tuple[int, str]]:
    """member/chunk -> (mtime in ns, content) of every chunk marker of a family."""
    out = {}
    for member in sorted(os.listdir(family_dir)):
        done = os.path.join(family_dir, member, "done")
        for name in sorted(os.listdir(done)) if os.path.isdir(done) else []:
            path = os.path.join(done, name)
            with open(path) as fh:
                out[f"{member}/{name}"] = (os.stat(path).st_mtime_ns, fh.read())
    return out


def _arrays(study: mj.Study) -> dict[str, np.ndarray]:
    return {"masks": study.masks, **study.outputs.arrays()}


@pytest.fixture(scope="module")
def tiny_family(tmp_path_factory):
    """The experiment's family on TINY: stopped after 3 of its 4 chunks (a kill between
    chunks), the markers then, and the family after it was run again to the end."""
    out = tmp_path_factory.mktemp("family") / "family"
    cfg = experiment.load_config("quick", TINY)
    run_family(cfg, str(out), progress=False, max_chunks=3)
    before = _markers(out)
    run_family(cfg, str(out), progress=False)
    return cfg, out, before


@pytest.mark.slow
def test_family_members_share_masks_and_resume_without_retraining(tiny_family):
    cfg, out, before = tiny_family
    assert [m.dir for m in cfg.members] == ["widths_8-linearize_false", "widths_16-linearize_false"]
    # the first member finished and one chunk of the second before the "kill"
    assert sorted(before) == [
        "widths_16-linearize_false/chunk-000000",
        "widths_8-linearize_false/chunk-000000",
        "widths_8-linearize_false/chunk-000001",
    ]
    after = _markers(out)
    assert len(after) == 4 and family_status(str(out))["complete"]
    for key, marker in before.items():  # finished chunks were not trained again
        assert after[key] == marker
    family = open_family(str(out))
    studies = [study for _, study in family.members.values()]
    for study in studies[1:]:
        np.testing.assert_array_equal(study.masks, studies[0].masks)
    ds, full = studies[0].dataset, mj.data.load("mnist1d")
    assert (ds.n_train, ds.n_test, ds.name) == (32, 16, "mnist1d[32/16]")
    for part in ("train", "test"):  # distinct rows of MNIST-1D's own split, with their labels
        x, y = getattr(full, f"x_{part}"), getattr(full, f"y_{part}")
        rows = [np.flatnonzero((x == row).all(axis=1)) for row in getattr(ds, f"x_{part}")]
        picked = np.array([r[0] for r in rows])
        assert len(set(picked)) == len(picked)
        np.testing.assert_array_equal(y[picked], getattr(ds, f"y_{part}"))


@pytest.mark.slow
def test_two_jobs_split_the_family_and_equal_one_job(tiny_family, tmp_path):
    cfg, out, _ = tiny_family
    split = tmp_path / "family"
    run_family(cfg, str(split), job=0, jobs=2, progress=False)
    status = family_status(str(split))
    assert status["chunks_finished"] == 2 and not status["complete"]
    run_family(cfg, str(split), job=1, jobs=2, progress=False)
    assert family_status(str(split))["complete"]
    one, two = open_family(str(out)), open_family(str(split))
    for (_, a), (_, b) in zip(one.members.values(), two.members.values(), strict=True):
        for name, value in _arrays(a).items():
            np.testing.assert_array_equal(_arrays(b)[name], value, err_msg=name)


@pytest.mark.slow
def test_kernel_study_is_a_verified_resumable_study_of_the_source_masks(tiny_family, tmp_path):
    _, out, _ = tiny_family
    source = open_family(str(out)).members["theory-vs-width-widths_16-linearize_false"][1]
    first = mj.theory.kernel_study(source, "ntk_gd_paired", str(tmp_path / "a"), max_chunks=1)
    assert first.replicas == 2 and not first.complete  # stopped after one chunk
    resumed = mj.theory.kernel_study(source, "ntk_gd_paired", str(tmp_path / "a"))
    again = mj.theory.kernel_study(source, "ntk_gd_paired", str(tmp_path / "b"))
    assert resumed.complete and again.complete
    reopened = mj.open_study(str(tmp_path / "a"))
    assert reopened.config.result_dict() == source.config.result_dict()
    assert reopened.meta["kernel"]["source"]["fingerprint"] == mj.theory.source_fingerprint(source)
    for name, value in _arrays(reopened).items():  # recomputed: bit-identical
        np.testing.assert_array_equal(_arrays(again)[name], value, err_msg=name)
    np.testing.assert_array_equal(reopened.masks, source.masks)
    assert np.isfinite(reopened.memorization.value).any()
    # kernel ridge with a tiny jitter interpolates: every IN example is fit
    nngp = mj.theory.kernel_study(source, "nngp", str(tmp_path / "nngp"))
    assert nngp.outputs.train_correct[nngp.masks].all()


def test_kernel_study_refuses_a_changed_source_or_another_model(tiny_family, tmp_path):
    _, out, _ = tiny_family
    path = out / "widths_8-linearize_false"
    source = mj.open_study(str(path))
    kernel_dir = str(tmp_path / "kernel")
    mj.theory.kernel_study(source, "ntk_gd", kernel_dir)
    changed = tmp_path / "changed"
    shutil.copytree(path, changed)
    meta = json.loads((changed / "study.json").read_text())
    meta["config"]["train"]["epochs"] += 1
    (changed / "study.json").write_text(json.dumps(seal(meta)))  # sealed: a study of its own
    changed_study = mj.open_study(str(changed))
    old, new = (mj.theory.source_fingerprint(s) for s in (source, changed_study))
    assert old != new
    with pytest.raises(StoreMismatchError, match=f"{old}.*{new}"):
        mj.theory.kernel_study(changed_study, "ntk_gd", kernel_dir)
    with pytest.raises(StoreMismatchError, match="holds kernel model ntk_gd.*asked for nngp"):
        mj.theory.kernel_study(source, "nngp", kernel_dir)
    with pytest.raises(StoreMismatchError, match="not a kernel model"):
        mj.theory.kernel_study(source, "nngp", str(path))
    with pytest.raises(ValueError, match="unknown kernel model"):
        mj.theory.kernel_study(source, "ntk_paired", str(tmp_path / "x"))


@pytest.mark.slow
@pytest.mark.optimized
def test_quick_mode_tiny_setting_correlation_rises_with_width(tmp_path):
    from experiments.theory_vs_width.__main__ import main
    from experiments.theory_vs_width.agreement import METRICS, PAIRS, QUANTITIES, correlations

    # learning rate 0.5 for 120 epochs: the same gradient-flow time as 1.0 for 60, at which one
    # linearized width-16 replica diverged (squared errors past float32: a chunk memjax refuses)
    tiny = ["dataset.n_train=64", "dataset.n_test=64", "subsets.replicas=8",
            "sweep.model.widths=[[16],[1024]]", "train.epochs=120",
            "train.learning_rate=0.5"]  # fmt: skip
    argv = ["--mode", "quick", "--out", str(tmp_path), "--bootstrap", "30", "--quiet"]
    summary = main(argv + [a for t in tiny for a in ("--set", t)])

    assert json.loads((tmp_path / "summary.json").read_text())["settings"]["widths"] == [16, 1024]
    with open(tmp_path / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(PAIRS) * len(QUANTITIES) * len(METRICS)
    assert "| 1024 | network | ntk_gd_paired |" in (tmp_path / "table.md").read_text()
    assert sorted(os.listdir(tmp_path / "kernels")) == [
        "nngp", "ntk_gd", "ntk_gd_paired-1024", "ntk_gd_paired-16"
    ]  # fmt: skip

    narrow, wide = (w["pairs"]["network~ntk_gd_paired"]["memorization"] for w in summary["widths"])
    assert wide["pearson"]["value"] > narrow["pearson"]["value"] + 0.2
    assert wide["pearson"]["value"] > 0.5
    assert 0 < wide["pearson"]["stderr"] < 0.3
    assert wide["pearson"]["ci_low"] < wide["pearson"]["ci_high"]
    assert wide["mad"]["value"] < narrow["mad"]["value"]
    # a wide network and its linearization memorize the same examples
    lin = summary["widths"][1]["pairs"]["network~linearized"]["memorization"]
    assert lin["pearson"]["value"] > 0.9

    # the per-example memorization it saves is what the agreement numbers were computed from
    for row in summary["widths"]:
        mem = {k: np.array(v, dtype=float) for k, v in row["memorization"].items()}
        assert all(len(v) == 64 for v in mem.values())
        for a, b in (("network", "ntk_gd_paired"), ("network", "linearized")):
            expected = row["pairs"][f"{a}~{b}"]["memorization"]["pearson"]["value"]
            assert correlations(mem[a], mem[b])["pearson"] == pytest.approx(expected, abs=1e-12)
    shared = summary["examples"]["memorization"]
    assert set(shared) == {"ntk_gd", "nngp"} and len(summary["examples"]["train_label"]) == 64

    # run again: nothing is retrained or refit, and the analysis is the same
    family = tmp_path / "family"
    markers = {**_markers(family), **_markers(tmp_path / "kernels")}
    assert main(argv + [a for t in tiny for a in ("--set", t)]) == summary
    assert {**_markers(family), **_markers(tmp_path / "kernels")} == markers
