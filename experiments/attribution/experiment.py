"""Run (or resume) the attribution experiment's studies and summarize them (figure 12).

Three parts, each ordinary memjax studies under ``OUT`` (resumable: a second run reuses
them), settings in ``config.yaml`` (quick and full modes):

* ``lds``: per dataset (MNIST-1D, digits) a balanced training study and an evaluation study
  (design ``eval``: subsets at ratio 1/2, several seeds each), scored by ``memjax lds``'s
  table (``memjax.report.lds_table``): LDS of each estimator versus the replicas used.
* ``loo``: a tiny MNIST-1D training set under design ``loo`` (the full set and every
  one-example-removed set, K seeds each) and balanced subset studies at several ratios on
  the same data; per ratio and output (correctness, margin), the Pearson correlation over
  examples between the subset memorization and exact LOO memorization and their mean
  difference, with percentile bootstrap intervals over examples.
* ``control``: per width, the paired NTK model as a control variate for memorization
  (``experiments.attribution.control``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments.attribution.control import bootstrap_mean, control_rows
from memjax.estimators import loo_memorization, memorization
from memjax.report import lds_table
from memjax.study import Study, StudyConfig, open_study, read, resolve, run_study

__all__ = ["CONFIG", "PARTS", "load_config", "run"]

CONFIG = str(Path(__file__).resolve().parent / "config.yaml")
MODES = ("quick", "full")
PARTS = ("lds", "loo", "control")
LOO_OUTPUTS = {"correctness": "train_correct", "margin": "train_margin"}


def load_config(mode: str) -> dict[str, Any]:
    """The experiment's settings in ``mode`` (quick or full)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")
    return resolve(read(CONFIG), mode)


def _study(out: str, name: str, part: dict, subsets: dict, seed: int, **over) -> Study:
    """Train (or resume) one study of ``part``'s dataset, model and training into out/name."""
    cfg = StudyConfig.from_dict(
        {
            "name": name,
            "dataset": over.get("dataset", part.get("dataset")),
            "model": over.get("model", part["model"]),
            "subsets": subsets,
            "train": part["train"],
            "seed": seed,
        }
    )
    path = os.path.join(out, name)
    run_study(cfg, path, progress=False)
    return open_study(path)


def _balanced(cfg: dict, ratio: float) -> dict[str, Any]:
    """The ``subsets`` section of a balanced study of the experiment's replica count."""
    return {"replicas": cfg["replicas"], "ratio": ratio, "design": "balanced"}


def lds_part(cfg: dict, out: str, seed: int) -> dict[str, Any]:
    """LDS table rows per dataset."""
    result = {}
    for name, dataset in cfg["datasets"].items():
        train = _study(
            out,
            f"lds-{name}-train",
            cfg,
            _balanced(cfg, 0.5),
            seed,
            dataset=dataset,
        )
        evaluation = _study(
            out,
            f"lds-{name}-eval",
            cfg,
            {
                "replicas": cfg["eval_subsets"] * cfg["eval_seeds"],
                "ratio": 0.5,
                "design": "eval",
                "seeds": cfg["eval_seeds"],
            },
            seed + 1,
            dataset=dataset,
        )
        result[name] = {
            "dataset": train.dataset.name,
            "n_train": train.dataset.n_train,
            "n_test": train.dataset.n_test,
            "eval_subsets": cfg["eval_subsets"],
            "eval_seeds": cfg["eval_seeds"],
            "rows": lds_table(
                train,
                evaluation,
                estimators=tuple(cfg["estimators"]),
                n_boot=cfg["bootstrap"],
                seed=seed,
            ),
        }
    return result


def _pearson_interval(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    """Pearson r over examples with a 95% percentile bootstrap interval over examples."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    idx = np.random.default_rng(seed).integers(0, len(x), (n_boot, len(x)))
    xb, yb = x[idx] - x[idx].mean(1, keepdims=True), y[idx] - y[idx].mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (xb * yb).sum(1) / np.sqrt((xb * xb).sum(1) * (yb * yb).sum(1))
    low, high = np.nanpercentile(boot, [2.5, 97.5])
    return {"value": float(np.corrcoef(x, y)[0, 1]), "low": float(low), "high": float(high)}


def loo_part(cfg: dict, out: str, seed: int) -> dict[str, Any]:
    """Subset memorization at each ratio against exact LOO memorization on the same data."""
    n = int(cfg["dataset"]["n_train"])
    loo = _study(
        out,
        "loo-exact",
        cfg,
        {"replicas": cfg["seeds"] * (n + 1), "ratio": 1.0, "design": "loo"},
        seed,
    )
    truth = {
        k: loo_memorization(loo.masks, getattr(loo.outputs, v)) for k, v in LOO_OUTPUTS.items()
    }
    rows = []
    for ratio in cfg["ratios"]:
        sub = _study(
            out,
            f"loo-subsets-{ratio:g}",
            cfg,
            _balanced(cfg, ratio),
            seed,
        )
        for name, output in LOO_OUTPUTS.items():
            est = memorization(sub.masks, getattr(sub.outputs, output), sub.blocks)
            exact = np.asarray(truth[name].value, np.float64)
            value = np.asarray(est.value, np.float64)
            rows.append(
                {
                    "ratio": ratio,
                    "output": name,
                    "replicas": int(len(sub.rows)),
                    "pearson": _pearson_interval(value, exact, cfg["bootstrap"], seed),
                    "mean_difference": bootstrap_mean(value - exact, None, cfg["bootstrap"], seed),
                }
            )
    return {
        "dataset": loo.dataset.name,
        "n_train": n,
        "seeds": cfg["seeds"],
        "loo_replicas": int(len(loo.rows)),
        "exact_mean": {
            k: bootstrap_mean(np.asarray(e.value, np.float64), None, cfg["bootstrap"], seed)
            for k, e in truth.items()
        },
        "rows": rows,
    }


def control_part(cfg: dict, out: str, seed: int) -> dict[str, Any]:
    """Control-variate rows per width."""
    rows = []
    for width in cfg["widths"]:
        model = {**cfg["model"], "widths": [width]}
        study = _study(
            out,
            f"control-width-{width}",
            cfg,
            _balanced(cfg, 0.5),
            seed,
            model=model,
        )
        for row in control_rows(study, cfg["extra"], cfg["bootstrap"], seed):
            rows.append({"width": width, **row})
    return {"dataset": cfg["dataset"], "epochs": cfg["train"]["epochs"], "rows": rows}


def run(
    mode: str, out: str, parts: tuple[str, ...] = PARTS, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train what is missing of ``parts`` in ``out`` and return their summary; ``settings``
    replaces the config's (e.g. a smaller experiment for a test)."""
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)}: use some of {PARTS}")
    cfg = load_config(mode) if settings is None else settings
    seed = int(cfg["seed"])
    summary: dict[str, Any] = {"mode": mode, "seconds": {}}
    for name, part in (("lds", lds_part), ("loo", loo_part), ("control", control_part)):
        if name in parts:
            start = time.perf_counter()
            summary[name] = part(cfg[name], os.path.join(out, name), seed)
            summary["seconds"][name] = round(time.perf_counter() - start, 1)
    return summary
