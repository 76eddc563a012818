"""The kernel matrices a kernel model of a dataset needs, computed from a spec or read from a file.

File format (fixed; written e.g. by the isolated neural-tangents environment for
architectures without a closed form here): an ``.npz`` with float64 arrays
``nngp_train_train`` (n, n), ``ntk_train_train`` (n, n), ``nngp_test_train`` (m, n),
``ntk_test_train`` (m, n), and 0-d string arrays ``dataset_fingerprint`` (memjax's
``Dataset.fingerprint`` of the data used) and ``architecture`` (a JSON string describing the
network). A file is only ever used with the dataset whose fingerprint it carries.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from memjax.data import Dataset
from memjax.errors import DataError, MissingArraysError
from memjax.models import MLP, spec_to_dict
from memjax.theory.analytic import kernel

__all__ = ["KernelMatrices", "dataset_kernels", "load_kernel_file", "save_kernel_file"]

MATRICES = ("nngp_train_train", "ntk_train_train", "nngp_test_train", "ntk_test_train")


@dataclass(frozen=True)
class KernelMatrices:
    """Train/train and test/train NNGP and NTK matrices of one dataset and architecture."""

    nngp_train_train: np.ndarray
    ntk_train_train: np.ndarray
    nngp_test_train: np.ndarray
    ntk_test_train: np.ndarray
    dataset_fingerprint: str
    architecture: Any  # decoded JSON description of the network

    def __post_init__(self) -> None:
        n = self.nngp_train_train.shape[0] if self.nngp_train_train.ndim == 2 else -1
        m = self.nngp_test_train.shape[0] if self.nngp_test_train.ndim == 2 else -1
        expected = {
            "nngp_train_train": (n, n),
            "ntk_train_train": (n, n),
            "nngp_test_train": (m, n),
            "ntk_test_train": (m, n),
        }
        for name, shape in expected.items():
            a = getattr(self, name)
            if a.shape != shape or n < 1 or m < 1:
                raise DataError(
                    f"kernel matrices: {name} has shape {a.shape}, expected {shape} "
                    "(train/train (n, n) and test/train (m, n))"
                )
            if not np.isfinite(a).all():
                raise DataError(f"kernel matrices: {name} contains NaN or inf")

    def train_test(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """(train/train, test/train) matrices of ``kind`` ("ntk" or "nngp")."""
        if kind not in ("ntk", "nngp"):
            raise DataError(f"unknown kernel kind {kind!r}: use 'ntk' or 'nngp'")
        return getattr(self, f"{kind}_train_train"), getattr(self, f"{kind}_test_train")

    def check_dataset(self, ds: Dataset) -> None:
        """Fail unless these matrices were computed on exactly this dataset."""
        if self.dataset_fingerprint != ds.fingerprint:
            raise DataError(
                f"kernel matrices were computed on a dataset with fingerprint "
                f"{self.dataset_fingerprint}, but the dataset given ({ds.name!r}) has "
                f"fingerprint {ds.fingerprint}: recompute the kernels for this dataset"
            )


def dataset_kernels(spec: MLP, ds: Dataset) -> KernelMatrices:
    """The analytic kernels of ``spec`` on ``ds`` (float64 if x64 is enabled)."""
    kernel_fn = kernel(spec)
    x_train, x_test = ds.model_inputs(ds.x_train), ds.model_inputs(ds.x_test)
    nngp_tt, ntk_tt = kernel_fn(x_train)
    nngp_st, ntk_st = kernel_fn(x_test, x_train)
    return KernelMatrices(nngp_tt, ntk_tt, nngp_st, ntk_st, ds.fingerprint, spec_to_dict(spec))


def save_kernel_file(path: str | os.PathLike, km: KernelMatrices) -> None:
    """Write ``km`` in the file format above (atomically: a partial file never appears)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp.npz"
    arrays = {name: np.asarray(getattr(km, name), np.float64) for name in MATRICES}
    np.savez(
        tmp,
        **arrays,
        dataset_fingerprint=np.array(km.dataset_fingerprint),
        architecture=np.array(json.dumps(km.architecture, sort_keys=True)),
    )
    os.replace(tmp, path)


def load_kernel_file(path: str | os.PathLike, ds: Dataset | None = None) -> KernelMatrices:
    """Read a kernel file; with ``ds``, reject it unless its fingerprint matches ``ds``."""
    with np.load(path, allow_pickle=False) as f:
        missing = sorted({*MATRICES, "dataset_fingerprint", "architecture"} - set(f.files))
        if missing:
            raise MissingArraysError(
                f"{path}: not a kernel file, missing {missing} (found {sorted(f.files)})"
            )
        arrays = {name: np.asarray(f[name], np.float64) for name in MATRICES}
        fingerprint = str(f["dataset_fingerprint"][()])
        try:
            architecture = json.loads(str(f["architecture"][()]))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: 'architecture' is not valid JSON ({e})") from None
    km = KernelMatrices(**arrays, dataset_fingerprint=fingerprint, architecture=architecture)
    if ds is not None:
        km.check_dataset(ds)
    return km
