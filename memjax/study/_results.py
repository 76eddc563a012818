"""Study: one way to read a study's results — its config, verified dataset, masks, blocks,
outputs and every estimate, memoized.

``memjax estimate``, ``memjax report``, the experiments and the figures read studies only
through ``open_study``, so every default that shapes a number (the design's blocks, the
number of membership-inference targets) is decided here, once. Opening never trains:
everything is a pure function of the stored arrays, which the store verifies as it reads
them (checksums, content hashes, replica ids, design masks).
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any

import numpy as np

from memjax import data
from memjax.analysis.relations import Relations, relations
from memjax.errors import DataError
from memjax.estimators import (
    Estimate,
    held_out_accuracy,
    influence,
    loo_influence,
    loo_memorization,
    memorization,
    replica_mean,
    seed_average,
)
from memjax.outputs import ReplicaOutputs
from memjax.study._runner import StudyConfig, build_dataset
from memjax.study._store import Store, open_store
from memjax.subsets import block_ids

__all__ = ["Study", "DatasetMismatchError", "open_study", "attack_targets"]

# Membership-inference victims per study: 16 as in the LiRA paper, fewer for small studies
# (each victim's shadows are the other replicas).
MAX_ATTACK_TARGETS = 16


def attack_targets(replicas: int) -> int:
    """How many of a study's first replicas are membership-inference victims in turn."""
    return max(1, min(MAX_ATTACK_TARGETS, replicas // 4))


class DatasetMismatchError(DataError):
    """The dataset rebuilt from a study's config is not the one the study was trained on."""


class Study:
    """A study directory opened for reading: what it is, what it holds, what it shows.

    ``masks`` (R, n) bool, ``blocks`` (R,) or None and ``outputs`` cover the R finished
    replicas, rows aligned (row j is replica ``rows[j]``); ``complete`` says whether those
    are all the replicas the config plans. Estimates are computed on first use and kept.
    """

    def __init__(self, store: Store, *, data_root: str | None = None) -> None:
        self.store = store
        self.data_root = os.curdir if data_root is None else data_root

    @property
    def path(self) -> str:
        return self.store.path

    @property
    def meta(self) -> dict[str, Any]:
        return self.store.meta

    @property
    def name(self) -> str:
        return str(self.meta.get("name", os.path.basename(self.path)))

    @cached_property
    def config(self) -> StudyConfig:
        """The study's settings, and its description, command and expected runtime as
        recorded when it was created."""
        about = self.meta.get("about", {})
        return StudyConfig.from_dict({"name": self.name, **self.meta["config"], **about})

    @cached_property
    def dataset(self) -> data.Dataset:
        """The dataset rebuilt from the config, refused unless its fingerprint is the one the
        study was trained on (a new release of a generator could change the examples). A
        dataset path is read only below ``data_root`` (``data.confined_path``): a study from
        someone else cannot point memjax at files outside it."""
        try:
            ds = build_dataset(self.meta["config"]["dataset"], data_root=self.data_root)
        except data.DatasetPathError as err:
            raise data.DatasetPathError(f"{self.path}: {err}") from None
        stored = self.meta["dataset_fingerprint"]
        if ds.fingerprint != stored:
            then = self.meta.get("data_packages", "not recorded (an older study)")
            raise DatasetMismatchError(
                f"{self.path}: the dataset rebuilt from the config has fingerprint "
                f"{ds.fingerprint}, the study was trained on {stored}; packages now: "
                f"{data.package_versions()}, when the study was written: {then}. Install "
                "those versions or rerun the study."
            )
        return ds

    @cached_property
    def rows(self) -> np.ndarray:
        """Ids of the finished replicas, ascending."""
        return self.store.done_rows()

    @property
    def replicas(self) -> int:
        return len(self.rows)

    @property
    def planned_replicas(self) -> int:
        return self.store.replicas

    @property
    def complete(self) -> bool:
        return self.replicas == self.planned_replicas

    @cached_property
    def masks(self) -> np.ndarray:
        """Subsets of the finished replicas; every estimate reads them, so the dataset's
        fingerprint is checked first: no number describes data other than the study's."""
        _ = self.dataset
        return self.store.masks(self.rows)

    @cached_property
    def blocks(self) -> np.ndarray | None:
        """Block ids of the finished replicas (the estimators' unit of independence)."""
        cfg = self.config
        return block_ids(self.rows, cfg.ratio, cfg.design, cfg.seeds)

    @cached_property
    def outputs(self) -> ReplicaOutputs:
        return self.store.load_outputs(self.rows)

    @property
    def flipped(self) -> np.ndarray | None:
        """Training labels flipped by the study's label noise (None for clean studies)."""
        return self.dataset.train_info.get("flipped")

    @property
    def n_targets(self) -> int:
        return attack_targets(self.replicas)

    @cached_property
    def memorization(self) -> Estimate:
        """Memorization on correctness (n_train,): exact leave-one-out under the ``loo``
        design, Feldman & Zhang's subset estimate otherwise."""
        if self.config.design == "loo":
            return loo_memorization(self.masks, self.outputs.train_correct)
        return memorization(self.masks, self.outputs.train_correct, self.blocks)

    @cached_property
    def influence(self) -> Estimate:
        """Train -> test influence on correctness, (n_train, n_test) (exact LOO under loo)."""
        if self.config.design == "loo":
            return loo_influence(self.masks, self.outputs.test_correct)
        return influence(self.masks, self.outputs.test_correct, self.blocks)

    def eval_subsets(self, output: str = "test_margin") -> tuple[np.ndarray, np.ndarray]:
        """An ``eval`` design's subsets whose every seed has finished: masks (M, n_train) and
        the ``output`` (a per-replica (R, m) array of ``ReplicaOutputs``, e.g. test_margin,
        test_correct) averaged over each subset's seeds, (M, m)."""
        cfg = self.config
        if cfg.design != "eval":
            raise DataError(f"{self.path}: design {cfg.design!r} is not an evaluation design")
        values = np.asarray(getattr(self.outputs, output), np.float64)
        subset = self.rows // cfg.seeds
        done = np.isin(subset, np.flatnonzero(np.bincount(subset) == cfg.seeds))
        if not done.any():
            raise DataError(f"{self.path}: no evaluation subset has all {cfg.seeds} seeds")
        return self.masks[done][:: cfg.seeds], seed_average(values[done], cfg.seeds)

    @cached_property
    def held_out_accuracy(self) -> Estimate:
        return held_out_accuracy(self.masks, self.outputs.train_correct, self.blocks)

    @cached_property
    def accuracy(self) -> dict[str, Estimate]:
        """Mean accuracy of the replicas, each with its design-aware 95% interval: "test"
        (the test set), "in_subset" (their own training subsets), "out_of_subset" (the
        training examples they did not train on)."""
        masks, correct = self.masks, self.outputs.train_correct
        own = np.where(masks, correct, False).sum(1) / masks.sum(1)
        held = np.where(~masks, correct, False).sum(1) / (~masks).sum(1)
        return {
            "test": replica_mean(self.outputs.test_correct.mean(axis=1), self.blocks),
            "in_subset": replica_mean(own, self.blocks),
            "out_of_subset": replica_mean(held, self.blocks),
        }

    @cached_property
    def relations(self) -> Relations:
        """Every per-example score (memorization, proxies, attacks) side by side."""
        return relations(
            self.masks, self.outputs, self.flipped, n_targets=self.n_targets, blocks=self.blocks
        )

    def __repr__(self) -> str:
        return f"Study({self.path!r}: {self.replicas}/{self.planned_replicas} replicas)"


def open_study(path: str, *, data_root: str | None = None) -> Study:
    """The study at ``path`` (a study directory or URL, memjax.study's locations), ready to read;
    raises if it is none. A dataset named by path is read only below ``data_root`` (default:
    the current directory, which relative paths are resolved against as ``memjax run``
    resolved them)."""
    return Study(open_store(path), data_root=data_root)
