"""The studies behind the figures: configs found by name, run or reused, read once.

Study configs are ordinary ``memjax run`` YAML files under ``configs/studies/``, one per
study with its ``quick`` and ``full`` modes; the file stem is the name figures refer to. Each
must state its cost in the field ``expected_runtime`` (per mode). A study directory is
reused when it holds the finished study, resumed when it is unfinished, and refused (by
memjax.study) when it holds a different config or dataset.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from memjax import data
from memjax.analysis.relations import Relations
from memjax.estimators import Estimate
from memjax.outputs import ReplicaOutputs
from memjax.study import (
    META,
    Family,
    FamilyConfig,
    Store,
    Study,
    StudyConfig,
    family_status,
    is_family,
    load_config,
    open_family,
    open_store,
    run_family,
    run_study,
)

__all__ = [
    "StudyRef",
    "StudyData",
    "load_refs",
    "ensure_study",
    "ensure_family",
    "family_provenance",
    "display_path",
    "log",
]

CHECKOUT = Path(__file__).resolve().parent.parent
DATASET_LABELS = {"mnist1d": "MNIST-1D", "digits": "digits", "longtail": "long-tail mixture"}


def log(message: str) -> None:
    """Progress of ``python -m paper_figures`` on stderr."""
    print(f"[paper_figures] {message}", file=sys.stderr, flush=True)


def display_path(path: Path, base: Path = CHECKOUT) -> str:
    """``path`` relative to ``base`` when inside it (never a machine's absolute path)."""
    try:
        return Path(path).resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return Path(path).name


@dataclass(frozen=True)
class StudyRef:
    """A study config file read in one mode: its name (file stem), path and config."""

    name: str
    path: Path
    config: StudyConfig

    @property
    def expected_runtime(self) -> str:
        return self.config.expected_runtime


def load_refs(config_dir: Path, mode: str) -> dict[str, StudyRef]:
    """Every study config in mode ``mode``, by name; one that states no expected_runtime in
    that mode is refused."""
    study_dir = Path(config_dir) / "studies"
    paths = sorted(study_dir.glob("*.yaml"))
    if not paths:
        raise FileNotFoundError(f"no study configs (*.yaml) in {display_path(study_dir)}")
    refs = {}
    for path in paths:
        config = load_config(str(path), mode)
        if not config.expected_runtime:
            raise ValueError(
                f"{display_path(path)}: state the study's cost in mode {mode} in the field "
                "expected_runtime"
            )
        refs[path.stem] = StudyRef(path.stem, path, config)
    return refs


def ensure_study(ref: StudyRef, directory: Path, progress: bool = True) -> Store:
    """The finished study in ``directory``: trained now if missing, resumed if unfinished."""
    finished = (directory / META).exists() and open_store(str(directory)).is_complete()
    if not finished:
        log(f"study {ref.name}: training (expected runtime: {ref.expected_runtime})")
    store = run_study(ref.config, str(directory), progress=progress and not finished)
    if not store.is_complete():
        raise RuntimeError(f"{display_path(directory)}: study {ref.name} did not finish")
    return store


def ensure_family(cfg: FamilyConfig, directory: Path, progress: bool = True) -> Family:
    """The finished family ``cfg`` in ``directory``: its unfinished members trained now (a
    directory holding another family is refused by memjax.study, naming the differences)."""
    finished = is_family(str(directory)) and family_status(str(directory))["complete"]
    if not finished:
        log(f"family {cfg.name}: training {len(cfg.members)} member studies")
    run_family(cfg, str(directory), progress=progress and not finished)
    if not family_status(str(directory))["complete"]:
        raise RuntimeError(f"{display_path(directory)}: family {cfg.name} did not finish")
    return open_family(str(directory))


def family_provenance(family: Family, out_dir: Path, description: str) -> dict[str, Any]:
    """Which stored family a figure's numbers come from (for its JSON and the index)."""
    members = family.record["members"]
    return {
        "kind": "study family",
        "family": family.name,
        "description": f"{description} ({len(members)} member studies)",
        "path": display_path(Path(family.path), out_dir),
        "members": len(members),
        "replicas": sum(m["config"]["subsets"]["replicas"] for m in members),
        "memjax_version": family.record["memjax_version"],
    }


class StudyData:
    """A finished study read through ``mj.open_study`` (dataset verified, arrays verified,
    estimates memoized with the design's blocks), plus what the figures say about it.

    A figure that estimates on some of the replicas passes ``blocks_of(rows)``.
    """

    def __init__(self, ref: StudyRef, store: Store) -> None:
        self.ref = ref
        self.store = store
        self.study = Study(store)

    @property
    def dataset(self) -> data.Dataset:
        return self.study.dataset

    @property
    def masks(self) -> np.ndarray:
        return self.study.masks

    @property
    def outputs(self) -> ReplicaOutputs:
        return self.study.outputs

    @property
    def blocks(self) -> np.ndarray | None:
        """Block id (R,) of each replica (``memjax.subsets.block_ids``); None when the design's
        replicas are independent."""
        return self.study.blocks

    def blocks_of(self, rows: np.ndarray) -> np.ndarray | None:
        """The block ids of the replicas ``rows`` (None for independent designs)."""
        return None if self.blocks is None else self.blocks[rows]

    @property
    def n_targets(self) -> int:
        return self.study.n_targets

    @property
    def label(self) -> str:
        """Human name of the study's data, e.g. "MNIST-1D, 10% labels flipped"."""
        section = self.ref.config.dataset
        name = DATASET_LABELS.get(section["name"], section["name"])
        rate = float(section.get("label_noise", 0.0))
        return f"{name}, {rate:.0%} labels flipped" if rate else name

    @property
    def flipped(self) -> np.ndarray | None:
        """Training labels flipped by the study's label noise (None for clean studies)."""
        return self.study.flipped

    @property
    def memorization(self) -> Estimate:
        return self.study.memorization

    @property
    def held_out_accuracy(self) -> Estimate:
        """Held-out accuracy of every training example at this study's ratio."""
        return self.study.held_out_accuracy

    @property
    def relations(self) -> Relations:
        """Every per-example score (proxies, attacks) beside memorization."""
        return self.study.relations

    def provenance(self, out_dir: Path) -> dict[str, Any]:
        """Which config and which stored study a figure's numbers come from."""
        return {
            "study": self.ref.name,
            "study_name": self.ref.config.name,
            "config": display_path(self.ref.path),
            "study_dir": display_path(Path(self.store.path), out_dir),
            "dataset": self.label,
            "dataset_fingerprint": self.store.meta["dataset_fingerprint"],
            "replicas": self.store.replicas,
            "expected_runtime": self.ref.expected_runtime,
            "memjax_version": self.store.meta["memjax_version"],
        }
