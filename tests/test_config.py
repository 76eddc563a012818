"""The strict config schema: every silently coerced setting is refused naming the setting,
YAML numbers such as 1e-2 are numbers, and absurd studies are refused before anything is
written."""

from __future__ import annotations

import copy
import math
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from memjax import schema, study
from memjax.models import MLP, spec_from_dict
from memjax.study import StudyConfig, StudyTooLargeError, build_dataset, load_config, run_study
from memjax.train import TrainConfig
from tests.studies import TINY


def with_setting(setting: str, value) -> dict:
    """TINY with one dotted setting replaced."""
    d = copy.deepcopy(TINY)
    *sections, last = setting.split(".")
    target = d
    for key in sections:
        target = target[key]
    target[last] = value
    return d


def write_yaml(tmp_path, text: str):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


TINY_YAML = """\
name: tiny
dataset: {name: digits, label_noise: 0.1}
model: {type: MLP, widths: [32]}
subsets: {replicas: 10, ratio: 0.5, design: balanced}
train: {epochs: 2, batch_size: 64, optimizer: adam, learning_rate: 0.01}
seed: 3
"""


@pytest.mark.parametrize(
    ("old", "new", "setting"),
    [
        ("widths: [32]", 'widths: "32"', "model.widths"),  # was an MLP of widths [3, 2]
        ("widths: [32]", "widths: [32, 8.5]", "model.widths"),
        ("widths: [32]", "widths: [0]", "model.widths"),
        ("widths: [32]", "widths: [true]", "model.widths"),
        ("optimizer: adam", 'optimizer: adam, drop_last: "no"', "train.drop_last"),  # truthy
        ("optimizer: adam", "optimizer: adam, drop_last: 1", "train.drop_last"),
        ("learning_rate: 0.01", "learning_rate: .inf", "train.learning_rate"),  # NaN study
        ("learning_rate: 0.01", "learning_rate: .nan", "train.learning_rate"),
        ("learning_rate: 0.01", 'learning_rate: "1e-2"', "train.learning_rate"),  # a string
        ("replicas: 10", "replicas: 8.9", "subsets.replicas"),  # was 8
        ("replicas: 10", 'replicas: "10"', "subsets.replicas"),
        ("epochs: 2", "epochs: true", "train.epochs"),
        ("batch_size: 64", "batch_size: 6.4e1.5", "train.batch_size"),
        ("seed: 3", "seed: -1", "seed"),
        ("seed: 3", 'seed: "3"', "seed"),
        ("ratio: 0.5", "ratio: .nan", "subsets.ratio"),
        ("label_noise: 0.1", 'label_noise: "0.1"', "dataset.label_noise"),
        ("name: tiny", "name: ../../x", "name"),  # would escape results/
        ("name: tiny", "name: /tmp/x", "name"),
        ("name: tiny", "name: ..", "name"),
        ("name: tiny", "name: 12", "name"),
        ("type: MLP", "type: MLP, W_std: .inf", "model.W_std"),
    ],
)
def test_coerced_settings_are_refused_naming_the_setting(tmp_path, old, new, setting):
    assert old in TINY_YAML
    path = write_yaml(tmp_path, TINY_YAML.replace(old, new))
    with pytest.raises(schema.ConfigError) as info:
        load_config(str(path))
    assert info.value.setting.split("[")[0] == setting  # model.widths[1] names the entry
    message = str(info.value)
    assert f"setting {info.value.setting}: got " in message and "allowed: " in message
    assert str(path) in message


def test_yaml_numbers_are_numbers(tmp_path):
    text = TINY_YAML.replace("learning_rate: 0.01", "learning_rate: 1e-2, weight_decay: 5E-4")
    text = text.replace("replicas: 10", "replicas: 1e1")
    cfg = load_config(str(write_yaml(tmp_path, text)))
    assert cfg.train.learning_rate == 0.01 and type(cfg.train.learning_rate) is float
    assert cfg.train.weight_decay == 0.0005
    assert cfg.replicas == 10 and type(cfg.replicas) is int
    expected = with_setting("train.weight_decay", 5e-4)
    del expected["chunk_size"]
    assert cfg == StudyConfig.from_dict(expected)


def test_unknown_settings_are_named():
    with pytest.raises(schema.ConfigError, match=r"unknown setting train\.lr .*learning_rate"):
        StudyConfig.from_dict(with_setting("train.lr", 0.1))
    with pytest.raises(schema.ConfigError, match=r"unknown setting dataset\.n_train"):
        StudyConfig.from_dict(with_setting("dataset.n_train", 100))  # digits takes no arguments
    with pytest.raises(schema.ConfigError, match=r"subsets\.replicas: got None; allowed: a value"):
        StudyConfig.from_dict(with_setting("subsets", {"ratio": 0.5}))


def test_loader_arguments_are_typed_by_their_defaults():
    longtail = {"name": "longtail", "n_train": 200, "zipf_exponent": 1.5}
    cfg = StudyConfig.from_dict(with_setting("dataset", longtail))
    assert cfg.dataset == longtail
    with pytest.raises(schema.ConfigError, match=r"dataset\.n_train: got '200'"):
        StudyConfig.from_dict(with_setting("dataset", {**longtail, "n_train": "200"}))
    with pytest.raises(schema.ConfigError, match=r"dataset\.zipf_exponent: got inf"):
        StudyConfig.from_dict(with_setting("dataset", {**longtail, "zipf_exponent": math.inf}))


def test_schema_checks_directly():
    assert schema.integer(np.int64(8), "x") == 8 and schema.integer(8.0, "x") == 8
    for bad in (8.9, "8", True, math.nan, math.inf, None, [8]):
        with pytest.raises(schema.ConfigError, match="setting x: got"):
            schema.integer(bad, "x")
    assert schema.number(1, "x") == 1.0 and type(schema.number(1, "x")) is float
    for bad in ("0.1", math.nan, -math.inf, False, None):
        with pytest.raises(schema.ConfigError):
            schema.number(bad, "x")
    with pytest.raises(schema.ConfigError, match="> 0 and < 1"):
        schema.number(1.0, "x", 0.0, 1.0, low_open=True, high_open=True)
    assert schema.flag(False, "x") is False
    for bad in ("no", "false", 0, None):
        with pytest.raises(schema.ConfigError, match="true or false"):
            schema.flag(bad, "x")
    assert schema.positive_ints([3, 2.0], "w", 10) == (3, 2)
    with pytest.raises(schema.ConfigError, match=r"setting w\[1\]: got 11; allowed: .* <= 10"):
        schema.positive_ints([3, 11], "w", 10)


def test_direct_construction_is_strict_too():
    with pytest.raises(schema.ConfigError, match=r"setting epochs: got 8\.9"):
        TrainConfig(epochs=8.9)
    with pytest.raises(schema.ConfigError, match=r"setting train\.epochs: got 8\.9"):
        TrainConfig.from_dict({"epochs": 8.9})
    with pytest.raises(schema.ConfigError, match=r"record_every: got 5; allowed: .* <= 2"):
        TrainConfig(epochs=2, record_every=5)
    cfg = TrainConfig(epochs=np.int64(3), learning_rate=1)
    assert type(cfg.epochs) is int and type(cfg.learning_rate) is float
    assert spec_from_dict({"type": "MLP", "widths": [4.0, 2]}) == MLP(widths=(4, 2))


def test_size_estimate_matches_the_stored_arrays(tmp_path):
    cfg = StudyConfig.from_dict(TINY)
    ds = build_dataset(cfg.dataset)
    size = study.estimate_size(cfg, ds, str(tmp_path / "s"))
    n, m = ds.n_train, ds.n_test
    # masks (bool), ids (int64), train/test correct (bool), margin and loss (float32),
    # per-presentation forgetting events and first-learned epochs (int32)
    per_replica = n + 8 + (n + m) * (1 + 4 + 4) + n * (4 + 4)
    assert size.disk_bytes == cfg.replicas * per_replica
    assert size.mask_cells == 10 * 1437 and size.problems() == []
    store = run_study(cfg, str(tmp_path / "s"), progress=False, max_chunks=0)
    root = store._zarr_root()
    stored = sum(root[k].nbytes for k in root.array_keys())
    assert stored == size.disk_bytes


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("subsets.replicas", 1_000_000_000, r"on disk .* are free.*1\.44e\+12 cells"),
        ("model.widths", [1_000_000_000], r"one replica needs about .* of device memory"),
    ],
)
@pytest.mark.slow
def test_huge_studies_are_refused_fast_with_nothing_written(tmp_path, setting, value, message):
    cfg_path = tmp_path / "huge.yaml"
    cfg_path.write_text(yaml.safe_dump(with_setting(setting, value)))
    start = time.time()
    res = subprocess.run(
        [sys.executable, "-m", "memjax", "run", str(cfg_path), "--quiet"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 2, res.stderr
    assert time.time() - start < 60
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "too large" in lines[0] and "--allow-large" in lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert os.listdir(tmp_path) == ["huge.yaml"]  # no results/ directory, no leftovers


def test_allow_large_overrides_the_limit(tmp_path, monkeypatch):
    cfg = StudyConfig.from_dict(TINY)
    monkeypatch.setattr(study._runner, "MAX_MASK_CELLS", 10 * 1437 - 1)  # one cell short
    with pytest.raises(StudyTooLargeError, match=r"10 x 1437 = 1\.44e\+04 cells"):
        run_study(cfg, str(tmp_path / "s"), progress=False, max_chunks=0)
    assert os.listdir(tmp_path) == []
    store = run_study(cfg, str(tmp_path / "s"), progress=False, max_chunks=0, allow_large=True)
    assert store.n_chunks == 3 and store.done_chunks() == []


# ------------------------------------------------------------------ bounded, safe YAML files

LAUGHS = ", ".join(["lol"] * 9)
# A sweep of about 400 bytes that expands to 9^9 (387 million) strings (the bomb)
ALIAS_BOMB = (
    TINY_YAML
    + "sweep:\n  train.learning_rate: [&a ["
    + LAUGHS
    + "], "
    + ", ".join(
        f"&{b} [{', '.join([f'*{a}'] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "]\n"
)


def _cli_refusal(tmp_path, capsys, text: str) -> tuple[int, str]:
    """Exit code and stderr of `memjax run` on a config file of ``text`` (nothing written)."""
    from memjax.cli import main

    path = write_yaml(tmp_path, text)
    out = tmp_path / "out"
    code = main(["run", str(path), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert not out.exists()
    assert len(err.strip().splitlines()) == 1, err
    assert str(path) in err
    return code, err


def test_a_yaml_alias_bomb_is_refused_fast_and_small(tmp_path, capsys):
    import tracemalloc

    assert len(ALIAS_BOMB) < 700
    tracemalloc.start()
    start = time.perf_counter()
    code, err = _cli_refusal(tmp_path, capsys, ALIAS_BOMB)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code == 2 and f"more than {schema.MAX_YAML_NODES} nodes with aliases expanded" in err
    assert elapsed < 10 and peak < 500e6, (elapsed, peak)


@pytest.mark.parametrize(
    "text, problem",
    [
        ('seed: !!python/object/apply:os.system ["touch {sentinel}"]\n', "python/object/apply"),
        ("seed: !!python/name:os.system\n", "could not determine a constructor"),
        ("model: {type: MLP, widths: [32\n", "line 2, column 1"),
        ("seed: 3\n  bad indentation: 4\n", "line 2, column"),
        ("seed: *nowhere\n", "undefined alias"),
        ("sweep:\n  seed: &a [1, *a]\n", "recursive alias"),
        ("seed: " + "[" * 200 + "]" * 200 + "\n", "nested deeper than 100 levels"),
        (
            "".join(f"k{i}: &a{i} [*a{i - 1}]\n" if i else "k0: &a0 [1]\n" for i in range(120)),
            "nested deeper than 100 levels with aliases expanded",
        ),
    ],
)
def test_unsafe_or_malformed_yaml_is_one_line_naming_the_file(tmp_path, capsys, text, problem):
    sentinel = tmp_path / "pwned"
    code, err = _cli_refusal(tmp_path, capsys, text.replace("{sentinel}", str(sentinel)))
    assert code == 2 and problem in err and "line " in err
    assert not sentinel.exists()
