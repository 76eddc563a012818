"""Does kernel theory predict which examples a network memorizes, and better as width grows?

The networks are a study family (config.yaml): MLPs in NTK parameterization (ReLU,
W_std = sqrt 2, b_std = 0.1) at several widths, and their linearizations, every member on
the same seeded subset of MNIST-1D with the same seed and balanced design, hence the same
masks, trained by full-batch gradient descent on MSE (one step per epoch). Run with
``memjax run``, the family resumes, splits over ``--jobs`` and merges like any study.
Beside them, kernel models are fit on the same masks and stored as derived studies
(``memjax.theory.kernel_study``, keyed by their source's fingerprint):

* ``ntk_gd_paired``: the analytic NTK's gradient-descent dynamics (same learning rate and
  steps, memjax's mean loss) started from each replica network's own initial outputs f0.
  An infinitely wide network is exactly this (Lee et al. 2019); at finite width the NTK
  differs from the analytic one and moves during training, which is what is measured.
  One per width (its source is that width's network study).
* ``ntk_gd``: the same from f0 = 0: the mean predictor over initializations (the outputs are
  linear in f0, whose mean is 0), width independent. Its memorization is that of the mean
  predictor (the correctness of argmax E_init[f]), not the mean over initializations of
  the memorization (which would average the correctness of each initialization's model).
* ``nngp``: the NNGP posterior mean, kernel ridge with a 1e-6 jitter (width independent).

``analyze`` is a pure function of the stored studies. Memorization (Feldman & Zhang, from
correctness) of every training example is estimated from each model's replicas. Per width,
it gives the Pearson and Spearman correlation and the mean absolute difference between the
memorization of the network (or linearized network) and of a kernel model, and the same for
the accuracy on each test example (mean over replicas). Errors: bootstrap over the design's
blocks (complementary pairs of replicas under the balanced design at ratio 1/2, the unit of
independence: whole blocks resampled with replacement, the same rows for both models so the
pairing is kept; examples never IN or never OUT in a resample are dropped from that
resample), as a standard error and a 95% interval centred on the value (see
``agreement.compare``). The summary also holds each
model's per-example memorization (network, linearized and paired NTK per width; the
width-independent kernel models once), so figures can draw the examples themselves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

import memjax as mj
from experiments.theory_vs_width.agreement import PAIRS, accuracy, compare
from memjax.study import (
    Family,
    FamilyConfig,
    Study,
    family_status,
    load_family,
    open_family,
    run_family,
)

__all__ = [
    "CONFIG",
    "BOOTSTRAP",
    "load_config",
    "width_of",
    "kernel_studies",
    "analyze",
    "run",
]

CONFIG = str(Path(__file__).resolve().parent / "config.yaml")
MODES = ("quick", "full")
BOOTSTRAP = {"quick": 200, "full": 1000}  # bootstrap resamples of the analysis, per mode
WIDTH_DEPENDENT = ("network", "linearized", "ntk_gd_paired")
SHARED = ("ntk_gd", "nngp")  # width independent in NTK parameterization: fit once
FAMILY_DIR, KERNEL_DIR = "family", "kernels"


def load_config(mode: str, sets: tuple[str, ...] = ()) -> FamilyConfig:
    """The experiment's family in mode ``mode`` (quick or full), with ``--set`` overrides."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")
    return load_family(CONFIG, mode, sets)


def width_of(values: dict[str, Any]) -> int:
    """A member's hidden width, from its swept ``model.widths`` (one width per layer)."""
    widths = values["model.widths"]
    if len(set(widths)) != 1:
        raise ValueError(f"expected equal hidden widths in every layer, got {widths}")
    return int(widths[0])


def _networks(family: Family) -> dict[int, dict[str, Study]]:
    """width -> {"network": Study, "linearized": Study}, widths in sweep order."""
    out: dict[int, dict[str, Study]] = {}
    for values, study in family.members.values():
        model = "linearized" if values.get("train.linearize", False) else "network"
        out.setdefault(width_of(values), {})[model] = study
    return out


def kernel_studies(family: Family, out: str) -> dict[str, Study]:
    """The kernel models on the family's masks, computed (or resumed) into ``out``:
    "ntk_gd" and "nngp" once (from the narrowest network), "ntk_gd_paired-<width>" per width."""
    nets = _networks(family)
    kernels: dict[str, Study] = {}
    for i, (width, models) in enumerate(nets.items()):
        source = models["network"]
        for kind in (*SHARED, "ntk_gd_paired") if i == 0 else ("ntk_gd_paired",):
            key = kind if kind in SHARED else f"{kind}-{width}"
            kernels[key] = mj.theory.kernel_study(source, kind, os.path.join(out, key))
    return kernels


def per_example_memorization(study: Study) -> list[float | None]:
    """Each training example's memorization by one model (None where undefined)."""
    value = mj.estimators.memorization(study.masks, study.outputs.train_correct).value
    return [None if not np.isfinite(v) else float(v) for v in value]


def _check_same_masks(studies: dict[str, Study]) -> np.ndarray:
    """The masks every study shares (all must be complete and agree): (R, n) bool."""
    first = None
    for name, study in studies.items():
        if not study.complete:
            raise ValueError(f"{name} ({study.path}) is unfinished: run it first")
        if first is None:
            first = study
        elif not np.array_equal(study.masks, first.masks):
            raise ValueError(f"{name} was trained on other masks than {first.name}")
    assert first is not None
    return first.masks


def analyze(family: Family, kernels: dict[str, Study], bootstrap: int) -> dict[str, Any]:
    """The summary (module doc) of a finished family and its kernel studies."""
    nets = _networks(family)
    masks = _check_same_masks(
        {name: study for name, (_, study) in family.members.items()} | kernels
    )
    first = next(iter(family.members.values()))[1]
    cfg = first.config
    blocks = first.blocks
    shared = {name: kernels[name] for name in SHARED}
    per_width = []
    for width, models in nets.items():
        studies = {**shared, **models, "ntk_gd_paired": kernels[f"ntk_gd_paired-{width}"]}
        outputs = {name: s.outputs for name, s in studies.items()}
        per_width.append(
            {
                "width": width,
                "accuracy": {name: accuracy(out) for name, out in outputs.items()},
                "pairs": {
                    f"{a}~{b}": compare(masks, outputs[a], outputs[b], bootstrap, cfg.seed, blocks)
                    for a, b in PAIRS
                },
                "memorization": {
                    name: per_example_memorization(studies[name]) for name in WIDTH_DEPENDENT
                },
            }
        )
    ds = first.dataset
    return {
        "question": "does kernel theory predict network memorization better as width grows?",
        "settings": {
            "n_train": ds.n_train,
            "n_test": ds.n_test,
            "replicas": cfg.replicas,
            "widths": list(nets),
            "depth": len(cfg.model.widths),
            "epochs": cfg.train.epochs,
            "learning_rate": cfg.train.learning_rate,
            "bootstrap": bootstrap,
            "seed": cfg.seed,
        },
        "dataset": {"name": ds.name, "fingerprint": ds.fingerprint},
        "studies": {
            "family": family.name,
            "members": {name: os.path.basename(s.path) for name, (_, s) in family.members.items()},
            "kernels": {name: os.path.basename(s.path) for name, s in kernels.items()},
        },
        "stderr": "bootstrap over blocks of replicas (paired resampling of whole blocks); "
        "ci_low/ci_high: 95% interval centred on the value with the bootstrap's spread "
        "(Fisher scale for correlations)",
        "widths": per_width,
        "examples": {
            "train_label": ds.y_train.tolist(),
            "memorization": {name: per_example_memorization(s) for name, s in shared.items()},
        },
    }


def run(
    mode: str,
    out: str,
    sets: tuple[str, ...] = (),
    job: int = 0,
    jobs: int = 1,
    bootstrap: int | None = None,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Run (or resume) this job's share of the family in ``out``/family; once the whole
    family is finished, fit the kernel studies into ``out``/kernels and return the analysis
    (None while other jobs' chunks are unfinished)."""
    cfg = load_config(mode, sets)
    family_dir = os.path.join(out, FAMILY_DIR)
    run_family(cfg, family_dir, job=job, jobs=jobs, progress=progress)
    if not family_status(family_dir)["complete"]:
        return None
    family = open_family(family_dir)
    kernels = kernel_studies(family, os.path.join(out, KERNEL_DIR))
    return analyze(family, kernels, BOOTSTRAP[mode] if bootstrap is None else bootstrap)
