"""Study: a config (dataset, model, subset design, training) run chunk by chunk into a store.

Running the same study again resumes it: finished chunks are skipped, an interrupted chunk
is recomputed from scratch (its results depend only on the seed and replica ids), and a
directory holding a different study or dataset is refused before anything is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jax
import numpy as np
import yaml
from tqdm import tqdm

import memjax
from memjax import data, models, subsets
from memjax.config import TrainConfig
from memjax.store import CorruptChunkError, Store, create_or_open, open_store
from memjax.train import train_replicas
from memjax.train_memory import choose_chunk_size

__all__ = [
    "StudyConfig",
    "JobPartitionError",
    "load_config",
    "default_config",
    "build_dataset",
    "job_chunks",
    "run_study",
]

MAX_CHUNK = 256
STUDY_KEYS = {"name", "dataset", "model", "subsets", "train", "seed", "chunk_size"}


@dataclass(frozen=True)
class StudyConfig:
    """Everything that determines a study's results (chunk_size only shapes the store)."""

    dataset: dict[str, Any]
    model: models.Spec
    replicas: int
    ratio: float
    design: str
    train: TrainConfig
    seed: int = 0
    name: str = "study"
    chunk_size: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyConfig:
        unknown = set(d) - STUDY_KEYS
        if unknown:
            raise ValueError(
                f"unknown study settings {sorted(unknown)}: allowed {sorted(STUDY_KEYS)}"
            )
        for key in ("dataset", "model", "subsets", "train"):
            if key not in d:
                raise ValueError(f"study config lacks the {key!r} section")
        ds = d["dataset"] if isinstance(d["dataset"], dict) else {"name": d["dataset"]}
        if "name" not in ds:
            raise ValueError("dataset section needs a 'name'")
        sub = dict(d["subsets"])
        unknown = set(sub) - {"replicas", "ratio", "design"}
        if unknown:
            raise ValueError(f"unknown subsets settings {sorted(unknown)}")
        ratio = float(sub.get("ratio", 0.5))
        design = sub.get("design", "balanced")
        replicas = int(sub.get("replicas", 0))
        if replicas < 2:
            raise ValueError(f"subsets.replicas must be at least 2, got {replicas}")
        subsets.validate_design(ratio, design)
        return cls(
            dataset=dict(ds),
            model=models.spec_from_dict(d["model"]),
            replicas=replicas,
            ratio=ratio,
            design=design,
            train=TrainConfig.from_dict(dict(d["train"])),
            seed=int(d.get("seed", 0)),
            name=str(d.get("name", "study")),
            chunk_size=d.get("chunk_size"),
        )

    def result_dict(self) -> dict[str, Any]:
        """The settings a store must match to be resumed or merged."""
        return {
            "dataset": self.dataset,
            "model": models.spec_to_dict(self.model),
            "subsets": {"replicas": self.replicas, "ratio": self.ratio, "design": self.design},
            "train": self.train.result_dict(),
            "seed": self.seed,
        }


def load_config(path: str) -> StudyConfig:
    with open(path) as fh:
        d = yaml.safe_load(fh)
    if not isinstance(d, dict):
        raise ValueError(f"{path}: a study config must be a YAML mapping")
    return StudyConfig.from_dict(d)


def default_config() -> StudyConfig:
    """The embedded default study (memjax/configs/default.yaml)."""
    text = resources.files("memjax").joinpath("configs/default.yaml").read_text()
    return StudyConfig.from_dict(yaml.safe_load(text))


def build_dataset(spec: dict[str, Any]) -> data.Dataset:
    """Dataset from a config section: name (+ loader kwargs), optional label_noise/noise_seed."""
    spec = dict(spec)
    name = spec.pop("name")
    rate = float(spec.pop("label_noise", 0.0))
    noise_seed = int(spec.pop("noise_seed", 0))
    ds = data.load(name, **spec)
    if rate:
        ds, _ = data.with_label_noise(ds, rate, noise_seed)
    return ds


class JobPartitionError(ValueError):
    """A job was started with another --jobs than the study's recorded partition."""


def job_chunks(n_chunks: int, job: int, jobs: int) -> list[int]:
    """The chunks job ``job`` of ``jobs`` owns: job, job + jobs, job + 2 jobs, ..."""
    return list(range(job, n_chunks, jobs))


def _meta(
    cfg: StudyConfig, ds: data.Dataset, chunk_size: int, max_subset: int, jobs: int
) -> dict[str, Any]:
    t = cfg.train
    return {
        "config": cfg.result_dict(),
        "name": cfg.name,
        "dataset_fingerprint": ds.fingerprint,
        "dataset_name": ds.name,
        "memjax_version": memjax.__version__,
        "replicas": cfg.replicas,
        "n_train": ds.n_train,
        "n_test": ds.n_test,
        "num_classes": ds.num_classes,
        "chunk_size": chunk_size,
        "jobs": jobs,
        "max_subset_size": max_subset,
        "record_epochs": t.recorded_epochs().tolist(),
        "record_lr": t.recorded_learning_rates().tolist(),
        "record_grad_norm": t.record_grad_norm,
    }


def _masks_fn(cfg: StudyConfig, n: int):
    return lambda rows: subsets.sample(
        n, cfg.replicas, cfg.ratio, cfg.seed, cfg.design, replica_ids=rows
    )


def open_or_create(
    cfg: StudyConfig, out: str, ds: data.Dataset | None = None, jobs: int = 1
) -> Store:
    """The study's store at ``out``: created on first use (recording that ``jobs`` jobs share
    its chunks), checked against cfg afterwards."""
    ds = build_dataset(cfg.dataset) if ds is None else ds
    make_masks = _masks_fn(cfg, ds.n_train)
    if os.path.exists(os.path.join(out, "study.json")):
        existing = open_store(out)
        chunk = existing.chunk_size
        max_subset = int(existing.meta["max_subset_size"])
    else:
        chunk = cfg.chunk_size or min(
            MAX_CHUNK, choose_chunk_size(cfg.model, ds, cfg.train, cfg.replicas)
        )
        max_subset = max(
            int(make_masks(np.arange(s, min(s + chunk, cfg.replicas))).sum(1).max())
            for s in range(0, cfg.replicas, chunk)
        )
    return create_or_open(out, _meta(cfg, ds, chunk, max_subset, jobs))


def run_study(
    cfg: StudyConfig,
    out: str,
    job: int = 0,
    jobs: int = 1,
    progress: bool = True,
    max_chunks: int | None = None,
) -> Store:
    """Train every unfinished chunk assigned to this job (chunks job, job+jobs, ...).

    The partition is the study's: fixed by the job that created it (``jobs`` recorded in the
    store) so that jobs started with different counts cannot each skip the other's chunks;
    a different ``jobs`` is refused. Finished chunks whose files are gone are refused too
    (they would otherwise count as done).
    """
    if not 0 <= job < jobs:
        raise ValueError(f"job index {job} must be in [0, {jobs})")
    ds = build_dataset(cfg.dataset)
    store = open_or_create(cfg, out, ds, jobs)
    if store.jobs != jobs:
        raise JobPartitionError(
            f"{out} is shared by {store.jobs} jobs (recorded when it was created; chunk k "
            f"belongs to job k mod {store.jobs}) but this run has --jobs {jobs}: run every job "
            f"of this study with --jobs {store.jobs} (--job 0 .. {store.jobs - 1})"
        )
    done = set(store.done_chunks())
    damaged = store.damaged_chunks(sorted(done))
    if damaged:
        k = min(damaged)
        raise CorruptChunkError(
            out,
            sorted(damaged),
            f"finished chunks {sorted(damaged)[:8]} lack files (chunk {k}: {damaged[k][0]} "
            "is missing)",
        )
    todo = [k for k in job_chunks(store.n_chunks, job, jobs) if k not in done]
    if max_chunks is not None:
        todo = todo[:max_chunks]
    max_subset = int(store.meta["max_subset_size"])
    bar = tqdm(
        total=sum(len(store.chunk_rows(k)) for k in todo),
        unit="replica",
        desc=f"{cfg.name} ({len(jax.local_devices())} {jax.default_backend()} device(s))",
        disable=not progress,
    )
    with bar:
        for k in todo:
            rows = store.chunk_rows(k)
            outputs = train_replicas(
                cfg.model,
                ds,
                store.masks(rows),
                cfg.train,
                seed=cfg.seed,
                replica_ids=rows,
                max_subset_size=max_subset,
                pad_to=store.chunk_size,
            )
            store.write_chunk(k, outputs)
            bar.update(len(rows))
    return store
