"""`memjax plan`: FLOPs against hand counts, memory-fitted group sizes, per-device output, and
the CPU time prediction against the measured time of the study it plans."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

import memjax as mj
from memjax import cli, models
from memjax.models import layer_census
from memjax.study import ASSUMED_EFFICIENCY, DEVICES, StudyConfig, plan_study
from memjax.train import ACCELERATOR_GROUP_FRACTION, TrainConfig, output_bytes, replica_bytes


def resnet18_cifar_flops(w: int, classes: int) -> int:
    """Forward FLOPs (2 per multiply-add) of the CIFAR ResNet-18 on 32x32x3, by hand: 3x3
    stem, four stages of two basic blocks (widths w, 2w, 4w, 8w; strides 1, 2, 2, 2; a 1x1
    projection where the shape changes), global pooling, linear readout."""
    macs = 32 * 32 * 9 * 3 * w  # stem
    macs += 4 * 32 * 32 * 9 * w * w  # stage 1
    side, cin = 32, w
    for c in (2 * w, 4 * w, 8 * w):
        side //= 2
        hw = side * side
        macs += hw * 9 * cin * c + 3 * hw * 9 * c * c + hw * cin * c  # convs + projection
        cin = c
    return 2 * (macs + 8 * w * classes)


def images(n: int, side: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, side, side, 3), np.float32)


def image_data(n_train: int, n_test: int, side: int = 32, classes: int = 10) -> mj.data.Dataset:
    rng = np.random.default_rng(1)
    return mj.data.from_arrays(
        images(n_train, side),
        rng.integers(0, classes, n_train),
        images(n_test, side, seed=2),
        rng.integers(0, classes, n_test),
        classes,
    )


def study(model, replicas=8, epochs=3, ratio=0.5, design="fixed", **train) -> StudyConfig:
    train = {"batch_size": 32, "optimizer": "momentum", "learning_rate": 0.05, **train}
    return StudyConfig(
        dataset={"name": "arrays"},
        model=model,
        replicas=replicas,
        ratio=ratio,
        design=design,
        train=TrainConfig(epochs=epochs, **train),
        name="planned",
    )


def test_layer_census_matches_hand_counts():
    counted = layer_census(models.ResNet18(width=64), (32, 32, 3), 10)
    assert counted.flops["dense"] == 2 * 512 * 10
    assert counted.forward_flops == pytest.approx(resnet18_cifar_flops(64, 10), rel=1e-9)
    assert counted.layers == {"conv": 20, "dense": 1, "norm": 20}
    mlp = layer_census(models.MLP(widths=(256, 256)), (40,), 10)
    assert mlp.flops == {"conv": 0, "dense": 2 * (40 * 256 + 256 * 256 + 256 * 10), "norm": 0}
    assert mlp.activation_elements == 256 + 256 + 10


def test_plan_flops_of_resnet18_on_32x32_within_5_percent():
    ds = image_data(100, 20)
    cfg = study(models.ResNet18(width=64), replicas=2000, ratio=0.7, batch_size=16, drop_last=True)
    p = plan_study(cfg, ds, device="H200")
    trained = (70 // 16) * 16  # fixed design: round(0.7 n) examples, drop_last
    expected = 3 * resnet18_cifar_flops(64, 10) * trained / 1e9
    assert p["examples_per_replica_epoch"] == trained
    assert p["gflop_per_replica_epoch"] == pytest.approx(expected, rel=0.05)
    by_layer = p["gflop_per_replica_epoch_by_layer"]
    assert by_layer["dense"] == pytest.approx(3 * 2 * 512 * 10 * trained / 1e9, abs=1e-4)
    assert by_layer["conv"] + by_layer["dense"] == pytest.approx(expected, rel=1e-3)
    # the evaluation: one forward pass over every train and test example
    assert p["gflop_eval_per_replica"] == pytest.approx(
        120 * resnet18_cifar_flops(64, 10) / 1e9, rel=1e-3
    )
    # time on a data-sheet device: all FLOPs at the assumed fraction of the TF32 peak, of
    # 16 chunks of 128 replicas (the last padded to the chunk size: 2048 trained)
    assert (p["chunk_size"], p["chunks"], p["replicas_trained"]) == (128, 16, 2048)
    total = 2048 * (3 * expected + p["gflop_eval_per_replica"]) * 1e9
    assert p["predicted_s"] == pytest.approx(
        total / (DEVICES["H200"].float32_flops * ASSUMED_EFFICIENCY), rel=1e-3
    )
    assert "assumed" in p["efficiency_source"]


def test_group_and_chunk_fit_each_device_memory():
    """A model whose working set fills a v5e's 16 GB gets the largest power-of-two group
    that fits the group budget; an H200 holds a larger one."""
    ds = image_data(64, 16, side=8)
    cfg = study(models.MLP(widths=(4096, 4096), parameterization="standard"), replicas=500)
    p = plan_study(cfg, ds, device="TPU-v5e")
    per = replica_bytes(cfg.model, ds, cfg.train)
    assert p["bytes_per_replica"]["total"] == per
    params = 192 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 10 + 10
    assert p["bytes_per_replica"]["parameters"] == 4 * params
    assert p["bytes_per_replica"]["optimizer_state"] == 4 * params  # momentum: one slot
    for name, plan in p["per_device"].items():
        budget = DEVICES[name].memory_bytes * ACCELERATOR_GROUP_FRACTION
        g = plan["group_size"]
        assert g & (g - 1) == 0 and g * per <= budget
        assert g == 128 or 2 * g * per > budget
        assert plan["chunk_size"] % g == 0 and plan["fits"]
        assert plan["chunks"] == math.ceil(500 / plan["chunk_size"])
    assert p["group_size"] == p["per_device"]["TPU-v5e"]["group_size"] < 128
    assert p["per_device"]["H200"]["group_size"] > p["group_size"]


def test_plan_counts_padded_replicas_in_time_and_memory():
    """16 replicas in chunks of 2 with a group of 8 train 8 chunks of 8 replicas: 64 trained
    for 16, four times the time of chunks of 8, and the plan says so."""
    ds = image_data(100, 20)
    base = study(models.ResNet18(width=64), replicas=16, group_size=8)
    small = plan_study(dataclasses.replace(base, chunk_size=2), ds, device="H100")
    per_replica = 3 * small["gflop_per_replica_epoch"] + small["gflop_eval_per_replica"]
    peak = DEVICES["H100"].float32_flops * ASSUMED_EFFICIENCY / 1e9
    assert (small["chunks"], small["padded_chunk_size"], small["replicas_trained"]) == (8, 8, 64)
    assert small["predicted_s"] == pytest.approx(64 * per_replica / peak, rel=1e-2)
    assert small["chunk_s"] == pytest.approx(8 * per_replica / peak, rel=1e-2)
    outputs = output_bytes(ds, base.train)
    per = replica_bytes(base.model, ds, base.train)
    data = sum(a.nbytes for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test))
    assert small["memory_used_bytes"] == 8 * per + data + 8 * outputs
    assert len(small["warnings"]) == 1 and "wastes 75% of the work" in small["warnings"][0]
    full = plan_study(dataclasses.replace(base, chunk_size=8), ds, device="H100")
    assert (full["replicas_trained"], full["warnings"]) == (16, [])
    assert small["predicted_s"] == pytest.approx(4 * full["predicted_s"], rel=1e-2)
    # 10 replicas in chunks of 4 (group 4): the last chunk is padded to 4 too, 12 for 10
    ten = study(models.ResNet18(width=64), replicas=10, group_size=4)
    p = plan_study(dataclasses.replace(ten, chunk_size=4), ds, device="H100")
    assert (p["padded_chunk_size"], p["replicas_trained"], p["warnings"]) == (4, 12, [])
    assert p["predicted_s"] == pytest.approx(12 * per_replica / peak, rel=1e-2)


def test_plan_never_plans_a_group_larger_than_the_chunk(tmp_path, capsys):
    """On an H100 the automatic group of a small MLP is 128; for chunks of 2 the plan plans
    a group of 2, and says the run needs train.group_size=2 to use it."""
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: p\ndataset: digits\nmodel: {type: MLP, widths: [32]}\n"
        "subsets: {replicas: 16}\ntrain: {epochs: 2}\nchunk_size: 2\n"
    )
    assert cli.main(["plan", str(path), "--device", "H100"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["per_device"]["H100"]["group_size"] == 2 == out["group_size"]
    assert (out["padded_chunk_size"], out["replicas_trained"]) == (2, 16)
    assert len(out["warnings"]) == 1 and "train.group_size=2" in out["warnings"][0]
    assert captured.err == f"memjax plan: warning: {out['warnings'][0]}\n"


def test_cli_plan_prints_one_json_object(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: p\ndataset: digits\nmodel: {type: MLP, widths: [32]}\n"
        "subsets: {replicas: 64}\ntrain: {epochs: 2}\n"
    )
    assert cli.main(["plan", str(path), "--device", "H100", "--set", "train.epochs=4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epochs"] == 4 and out["device"] == DEVICES["H100"].name
    for key in ("gflop_per_replica_epoch", "bytes_per_replica", "group_size", "chunk_size"):
        assert key in out
    assert set(out["per_device"]) == set(DEVICES)
    assert cli.main(["plan", str(path), "--device", "V100"]) == 2
    err = capsys.readouterr().err
    assert "unknown device 'V100'" in err and "H200" in err


@pytest.mark.slow
@pytest.mark.parametrize(
    "model, side",
    [
        (models.MLP(widths=(128, 128), parameterization="standard"), 8),
        (models.ResNet9(widths=(4, 8, 8, 16), norm="batch"), 16),
    ],
    ids=["mlp", "resnet9"],
)
def test_cpu_plan_measures_its_efficiency_and_the_study(model, side):
    """``--measure`` on the local backend: a measured efficiency and both times, finite and
    positive. How close they come to the real run is a benchmark's question, not a timed
    assertion's (README, `memjax plan`, gives the figures measured on a 2-core machine)."""
    ds = image_data(512, 128, side=side)
    cfg = study(model, replicas=2, epochs=8)
    p = plan_study(cfg, ds, measure=True)
    assert "measured" in p["efficiency_source"] and 0 < p["efficiency"] < 1
    assert np.isfinite(p["predicted_s"]) and p["predicted_s"] > 0
    assert np.isfinite(p["measured_s"]) and p["measured_s"] > 0


def write_cifar(directory, n_train: int, n_test: int, classes: int) -> None:
    """A CIFAR python-format directory of random images (CIFAR-10 or CIFAR-100 layout)."""
    import pickle

    rng = np.random.default_rng(0)
    directory.mkdir()
    key = b"labels" if classes == 10 else b"fine_labels"
    files = {"data_batch_1": n_train, "test_batch": n_test}
    if classes == 100:
        files = {"train": n_train, "test": n_test}
    for name, n in files.items():
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            key: [int(c) for c in np.arange(n) % classes],
        }
        with open(directory / name, "wb") as fh:
            pickle.dump(batch, fh)


FULL_CONFIGS = {
    "fz-cifar10-resnet18.yaml": (10, models.ResNet18(width=64, norm="batch"), 2000),
    "fz-cifar100-resnet18.yaml": (100, models.ResNet18(width=64, norm="batch"), 2000),
    "lira-cifar10-wrn16-4.yaml": (10, models.WideResNet(depth=16, width_factor=4), 256),
}


@pytest.mark.parametrize("name", sorted(FULL_CONFIGS))
def test_full_configs_load_and_plan_per_device(tmp_path, name):
    from importlib import resources

    from memjax.study import build_dataset, load_config

    classes, model, replicas = FULL_CONFIGS[name]
    write_cifar(tmp_path / "cifar", 200, 100, classes)
    path = str(resources.files("memjax") / "configs" / name)
    cfg = load_config(path, sets=(f"dataset.name={tmp_path / 'cifar'}",))
    assert cfg.model == model and cfg.replicas == replicas
    assert cfg.train.augment == "crop_flip" and cfg.train.compute_dtype == "bfloat16"
    assert cfg.design == ("balanced" if "lira" in name else "fixed")
    ds = build_dataset(cfg.dataset)
    assert (ds.num_classes, ds.n_train, ds.input_shape) == (classes, 200, (32, 32, 3))
    p = plan_study(cfg, ds, device="A100")
    assert p["compute_dtype"] == "bfloat16"
    views = 1 + (18 if "lira" in name else 0)  # the identity and LiRA's 18 queries
    assert p["gflop_eval_per_replica"] == pytest.approx(
        views * 300 * model.matmul_flops((32, 32, 3), classes) / 1e9, rel=1e-3
    )
    for device, plan in p["per_device"].items():
        assert plan["memory_used_bytes"] > plan["group_size"] * p["bytes_per_replica"]["total"]
        assert plan["fits"] and plan["predicted_s"] > plan["chunk_s"] > 0
        assert plan["peak_gflops"] * 1e9 == pytest.approx(DEVICES[device].bfloat16_flops)
