"""Registries: each option's name sits with its implementation, and the names configs accept,
``memjax run --help`` and errors list are the registered ones."""

from __future__ import annotations

import numpy as np
import pytest

import memjax as mj
from memjax._registry import Registry
from memjax.cli import main
from memjax.data import DATASETS
from memjax.errors import ConfigError, UnknownOptionError
from memjax.models import ACTIVATIONS, PARAMETERIZATIONS, SPECS, spec_from_dict
from memjax.train import OPTIMIZERS, recipes

REGISTRIES = {
    "dataset.name": DATASETS,
    "model.type": SPECS,
    "model.activation": ACTIVATIONS,
    "model.parameterization": PARAMETERIZATIONS,
    "train.optimizer": OPTIMIZERS,
    "train.schedule": recipes.SCHEDULES,
}


def test_run_help_lists_every_registered_name(capsys):
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for key, registry in REGISTRIES.items():
        (line,) = [row for row in text.splitlines() if row.strip().startswith(f"{key}:")]
        assert line.split(":", 1)[1].split(" (")[0].strip() == ", ".join(registry)


def test_the_registries_hold_what_configs_have_always_accepted():
    assert list(ACTIVATIONS) == ["relu", "erf", "gelu", "leaky_relu"]
    assert list(PARAMETERIZATIONS) == ["ntk", "standard"]
    assert list(OPTIMIZERS) == ["sgd", "momentum", "adam"]
    assert list(recipes.SCHEDULES) == ["constant", "cosine", "linear", "one_cycle",
                                       "piecewise_linear"]  # fmt: skip
    assert set(SPECS) == {"MLP", "CNN1D", "CNN2D", "ResNet9", "ResNet18", "WideResNet"}
    assert {"mnist1d", "digits", "longtail"} <= set(DATASETS)
    for name, cls in SPECS.items():
        assert cls.__name__ == name and spec_from_dict({"type": name}) == cls()


def test_an_unknown_name_is_one_config_error_listing_the_registered_ones():
    with pytest.raises(UnknownOptionError, match=r"unknown optimizer 'lion': use one of \['sgd'"):
        OPTIMIZERS["lion"]
    assert isinstance(UnknownOptionError("x"), ConfigError) and DATASETS.get("cifar5") is None
    with pytest.raises(ConfigError, match=r"train\.optimizer: got 'lion'; allowed: one of"):
        mj.TrainConfig.from_dict({"optimizer": "lion"})
    with pytest.raises(ConfigError, match=r"model\.activation: got 'tanh'"):
        spec_from_dict({"type": "MLP", "activation": "tanh"})


def test_a_name_registers_once():
    reg: Registry[int] = Registry("thing")
    reg.register("a")(1)
    with pytest.raises(RuntimeError, match="thing 'a' is registered twice"):
        reg.register("a")(2)
    assert dict(reg) == {"a": 1} and len(reg) == 1


def test_network_and_kernel_read_one_activation_entry():
    """The network applies ``ACTIVATIONS[name].fn`` and the kernel its ``dual``: for each
    activation, the dual's E[phi(u) phi(v)] equals a Monte Carlo average of that same fn
    (400k Gaussian pairs: standard error ~2e-3)."""
    rng = np.random.default_rng(0)
    q1, c, q2 = 1.3, 0.6, 0.9
    cov = np.array([[q1, c], [c, q2]])
    u, v = (rng.multivariate_normal([0, 0], cov, 400_000).T).astype(np.float32)
    for name, entry in ACTIVATIONS.items():
        k, _ = entry.dual(0.1, np.float32(q1), np.float32(c), np.float32(q2), False)
        mc = np.mean(np.asarray(entry.fn(u, 0.1)) * np.asarray(entry.fn(v, 0.1)))
        assert abs(float(k) - mc) < 1e-2, (name, float(k), mc)
