"""Kernel models on a study's masks, stored as a derived study.

``kernel_study(source, kind, out)`` fits a kernel model (``kernel_replicas``) on every
replica's subset of the ``source`` study, chunk by chunk, into a study directory at ``out``
written by ``memjax.study``'s store like any other: checksummed chunks, hashed markers, resumable
(finished chunks are skipped), readable with ``mj.open_study``. Its ``study.json`` holds the
source's config (hence the same dataset, masks and blocks) and a ``kernel`` section naming
the model, its fit and the source: name, config and fingerprint. A directory holding
another model, or the same model of a source whose fingerprint differs (another config or
dataset), is refused naming both fingerprints.

Kinds (analytic kernels of the source's MLP; gradient descent with the source's learning
rate and epochs, one full-batch step per epoch, as memjax trains on MSE):

* ``ntk``, ``nngp``: kernel ridge regression with a 1e-6 relative jitter;
* ``ntk_gd``: the NTK's gradient-descent dynamics from f0 = 0 (the mean predictor over
  initializations);
* ``ntk_gd_paired``: the same from each replica network's own outputs at initialization,
  which is what that network does in the infinite-width limit.

A kernel model has no minibatch presentations: ``forgetting_events`` are stored as 0 and
``first_learned`` as -1.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from typing import Any

import jax
import numpy as np

from memjax import data
from memjax._version import __version__
from memjax.errors import DataError
from memjax.models import MLP, build
from memjax.study import META, StoreMismatchError, Study, create_or_open, open_store, open_study
from memjax.theory.kernel_files import dataset_kernels
from memjax.theory.memorization import kernel_replicas
from memjax.train import replica_init_keys

__all__ = ["KINDS", "source_fingerprint", "initial_outputs", "kernel_study"]

KINDS = ("ntk", "nngp", "ntk_gd", "ntk_gd_paired")
GRADIENT_DESCENT = ("ntk_gd", "ntk_gd_paired")


def source_fingerprint(source: Study) -> str:
    """What a kernel study depends on in its source: config (data, model, design, seed,
    training) and the dataset's fingerprint. 32 hex digits."""
    key = {
        "config": source.meta["config"],
        "dataset_fingerprint": source.meta["dataset_fingerprint"],
        "replicas": source.store.replicas,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def initial_outputs(
    spec: MLP, ds: data.Dataset, seed: int, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Outputs at initialization of replicas ``rows`` (the trainer's init keys): train
    (R, n, C) and test (R, m, C)."""
    init, apply = build(spec, ds.input_shape, ds.num_classes)
    x_train, x_test = ds.model_inputs(ds.x_train), ds.model_inputs(ds.x_test)

    def outputs(key):
        params = init(key)
        return apply(params, x_train), apply(params, x_test)

    # lax.map: one replica at a time compiles several times faster than a vmapped init
    f0_train, f0_test = jax.lax.map(outputs, replica_init_keys(seed, rows))
    return np.asarray(f0_train), np.asarray(f0_test)


def _fit(source: Study, kind: str) -> dict[str, Any]:
    """The fit's settings, refused (ValueError) where the kind does not apply to ``source``."""
    cfg = source.config
    if not isinstance(cfg.model, MLP):
        raise DataError(f"kernel models need an MLP source study, {source.name} has {cfg.model}")
    if kind not in GRADIENT_DESCENT:
        return {"fit": "ridge"}
    t = cfg.train
    gd = (t.batch_size, t.optimizer, t.loss, t.schedule, t.weight_decay)
    if gd != (None, "sgd", "mse", "constant", 0.0) or t.warmup_epochs or t.ema_decay:
        raise DataError(
            f"{kind} follows full-batch gradient descent on MSE; {source.name} trains with "
            f"batch_size={t.batch_size}, optimizer={t.optimizer}, loss={t.loss}, "
            f"schedule={t.schedule}, weight_decay={t.weight_decay}, "
            f"warmup_epochs={t.warmup_epochs}, ema_decay={t.ema_decay}"
        )
    return {"fit": "gradient_descent", "lr": t.learning_rate, "steps": t.epochs}


def _meta(source: Study, kind: str, kernel: dict[str, Any]) -> dict[str, Any]:
    sm = source.meta
    return {
        "config": sm["config"],
        "name": f"{source.name}-{kind}",
        "about": {
            "description": f"kernel model {kind} on the masks of study {source.name}",
            "command": "",
            "expected_runtime": "",
        },
        "kernel": kernel,
        **{k: sm[k] for k in ("dataset_fingerprint", "dataset_name", "n_train", "n_test")},
        "num_classes": sm["num_classes"],
        "data_packages": data.package_versions(),
        "memjax_version": __version__,
        "replicas": source.store.replicas,
        "chunk_size": source.store.chunk_size,
        "jobs": 1,
        "job_offset": 0,
        "max_subset_size": sm["max_subset_size"],
        "record_epochs": [],
        "record_lr": [],
        "record_grad_norm": False,
    }


def _check_kernel(out: str, asked: dict[str, Any]) -> None:
    """Refuse a directory that holds another kernel model or another source's."""
    if not os.path.exists(os.path.join(out, META)):
        return
    held = open_store(out).meta.get("kernel")
    if held is None:
        raise StoreMismatchError(f"{out} holds a study, not a kernel model of one")
    if held != asked:
        have, want = held["source"], asked["source"]
        raise StoreMismatchError(
            f"{out} holds kernel model {held['kind']} of study {have['name']} (source "
            f"fingerprint {have['fingerprint']}); asked for {asked['kind']} of study "
            f"{want['name']} (source fingerprint {want['fingerprint']}). Use another "
            "directory, or the original source study"
        )


def kernel_study(source: Study, kind: str, out: str, max_chunks: int | None = None) -> Study:
    """Fit kernel model ``kind`` on the masks of every replica of ``source`` into ``out``
    (its unfinished chunks, at most ``max_chunks``); returns the derived study. The fits run
    in float64 on the analytic kernels of the source's MLP."""
    if kind not in KINDS:
        raise DataError(f"unknown kernel model {kind!r}: use one of {KINDS}")
    fit = _fit(source, kind)
    kernel = {
        "kind": kind,
        **fit,
        "source": {
            "name": source.name,
            "fingerprint": source_fingerprint(source),
            "config": source.meta["config"],
        },
    }
    kernel = json.loads(json.dumps(kernel))
    _check_kernel(out, kernel)
    ds = source.dataset  # verified against the source's fingerprint
    store = create_or_open(out, _meta(source, kind, kernel))
    done = set(store.done_chunks())
    todo = [k for k in range(store.n_chunks) if k not in done][:max_chunks]
    cfg = source.config
    km = None
    for k in todo:
        rows = store.chunk_rows(k)
        masks = source.store.masks(rows)
        if not np.array_equal(masks, store.masks(rows)):
            raise StoreMismatchError(f"{out}: chunk {k}'s masks differ from the source's")
        gd = {"lr": fit["lr"], "steps": fit["steps"]} if "lr" in fit else {}
        if kind == "ntk_gd_paired":
            # the networks' initializations as the trainer draws them: in float32
            f0_train, f0_test = initial_outputs(cfg.model, ds, cfg.seed, rows)
            gd |= {"f0_train": f0_train, "f0_test": f0_test}
        with jax.enable_x64(True):
            km = dataset_kernels(cfg.model, ds) if km is None else km
            fitted = kernel_replicas(km, ds, masks, kind=kind.split("_")[0], replica_ids=rows, **gd)
        shape = fitted.train_correct.shape
        store.write_chunk(
            k,
            replace(
                fitted,
                forgetting_events=np.zeros(shape, np.int32),
                first_learned=np.full(shape, -1, np.int32),
            ),
        )
    return open_study(out)
