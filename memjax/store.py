"""The study directory: config, chunked result arrays, progress markers, resume and merge.

Layout of a study directory::

    study.json          config, dataset fingerprint, memjax version, array shapes, chunk size
    arrays.zarr/        zarr arrays with the replica axis first, one zarr chunk per study chunk
    done/chunk-000012   marker written (atomically, after the data is synced) per finished chunk

Row r of every array belongs to replica r. A chunk counts as finished only when its marker
exists, and a marker is written only after the chunk's data is durable, so a study killed at
any moment resumes without losing finished replicas or counting one twice. Readers only
ever see finished rows.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from memjax.outputs import FINAL_FIELDS, PRESENTATION_FIELDS, TRAJECTORY_FIELDS, ReplicaOutputs

__all__ = [
    "Store",
    "StoreMismatchError",
    "atomic_write_text",
    "create_or_open",
    "open_store",
    "merge",
]

META = "study.json"
ARRAYS = "arrays.zarr"
DONE = "done"


class StoreMismatchError(ValueError):
    """A study directory holds a different study than the one asked for."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str, text: str) -> None:
    """Write via a temporary file, fsync, rename: readers see the old or the new file only.

    The file gets the permissions an ordinary open() would (0666 less the umask), not
    mkstemp's 0600."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted names of the settings in which two nested config dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]} ({a!r} vs {b!r})"]


@dataclass
class Store:
    """An open study directory."""

    path: str
    meta: dict[str, Any]

    @property
    def replicas(self) -> int:
        return int(self.meta["replicas"])

    @property
    def chunk_size(self) -> int:
        return int(self.meta["chunk_size"])

    @property
    def n_chunks(self) -> int:
        return -(-self.replicas // self.chunk_size)

    def chunk_rows(self, k: int) -> np.ndarray:
        return np.arange(k * self.chunk_size, min((k + 1) * self.chunk_size, self.replicas))

    def _group(self, mode: str = "r") -> zarr.Group:
        return zarr.open_group(os.path.join(self.path, ARRAYS), mode=mode)

    def _marker(self, k: int) -> str:
        return os.path.join(self.path, DONE, f"chunk-{k:06d}")

    def done_chunks(self) -> list[int]:
        names = os.listdir(os.path.join(self.path, DONE))
        return sorted(int(n.split("-")[1]) for n in names if n.startswith("chunk-"))

    def done_rows(self) -> np.ndarray:
        rows = [self.chunk_rows(k) for k in self.done_chunks()]
        return np.concatenate(rows) if rows else np.zeros(0, np.int64)

    def is_complete(self) -> bool:
        return len(self.done_chunks()) == self.n_chunks

    def masks(self, rows: np.ndarray | None = None) -> np.ndarray:
        arr = self._group()["masks"]
        return arr[:] if rows is None else arr.get_orthogonal_selection((rows, slice(None)))

    def write_chunk(self, k: int, outputs: ReplicaOutputs) -> None:
        """Write chunk k's rows, make them durable, then mark the chunk done."""
        rows = self.chunk_rows(k)
        if not np.array_equal(outputs.replica_ids, rows):
            raise ValueError(f"chunk {k} holds replicas {rows[0]}..{rows[-1]}, got other ids")
        group = self._group("r+")
        sl = slice(int(rows[0]), int(rows[-1]) + 1)
        for name, value in outputs.arrays().items():
            if name not in group:
                raise KeyError(f"store has no array {name!r}; was the study created for it?")
            group[name][sl] = value
        os.sync()  # the data files of this chunk are on disk before the marker says so
        atomic_write_text(self._marker(k), json.dumps({"rows": [sl.start, sl.stop]}))

    def load_outputs(self, rows: np.ndarray | None = None) -> ReplicaOutputs:
        """Outputs of finished replicas only (all of them unless ``rows`` is given)."""
        rows = self.done_rows() if rows is None else np.asarray(rows)
        group = self._group()
        kw: dict[str, Any] = {}
        for name in ("replica_ids", *FINAL_FIELDS, *PRESENTATION_FIELDS, *TRAJECTORY_FIELDS):
            if name in group:
                arr = group[name]
                sel = (rows,) + (slice(None),) * (arr.ndim - 1)
                kw[name] = arr.get_orthogonal_selection(sel)
        for name in ("record_epochs", "record_lr"):
            if name in self.meta:
                kw[name] = np.asarray(self.meta[name])
        return ReplicaOutputs(**kw)


def _array_specs(meta: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str, tuple[int, ...]]]:
    """name -> (shape, dtype, chunks) of every array a study of this shape stores."""
    r, n, m, c = meta["replicas"], meta["n_train"], meta["n_test"], meta["chunk_size"]
    specs = {
        "masks": ((r, n), "bool", (c, n)),
        "replica_ids": ((r,), "int64", (c,)),
        "train_correct": ((r, n), "bool", (c, n)),
        "train_margin": ((r, n), "float32", (c, n)),
        "train_loss": ((r, n), "float32", (c, n)),
        "test_correct": ((r, m), "bool", (c, m)),
        "test_margin": ((r, m), "float32", (c, m)),
        "test_loss": ((r, m), "float32", (c, m)),
        "forgetting_events": ((r, n), "int32", (c, n)),
        "first_learned": ((r, n), "int32", (c, n)),
    }
    t = len(meta.get("record_epochs") or [])
    if t:
        specs["traj_correct"] = ((r, t, n), "bool", (c, 1, n))
        for name in ("traj_margin", "traj_loss", "traj_el2n"):
            specs[name] = ((r, t, n), "float32", (c, 1, n))
        if meta.get("record_grad_norm"):
            specs["traj_grad_sq"] = ((r, t, n), "float32", (c, 1, n))
    return specs


def _check_same_study(path: str, existing: dict[str, Any], meta: dict[str, Any]) -> None:
    keys = ("config", "dataset_fingerprint", "replicas", "n_train", "n_test")
    differences = []
    for key in keys:
        differences += _diff({key: existing.get(key)}, {key: meta.get(key)})
    shapes = [{k: v[:2] for k, v in _array_specs(m).items()} for m in (existing, meta)]
    if not differences and shapes[0] != shapes[1]:
        differences.append("stored arrays (the store was written by another memjax version)")
    if differences:
        raise StoreMismatchError(
            f"{path} already holds a different study; differing settings: "
            + "; ".join(differences[:8])
            + ". Use another --out directory or the original config."
        )


def _versions(meta: dict[str, Any]) -> set[str]:
    """Every memjax version recorded as having written a study's data."""
    return set(meta.get("memjax_versions") or [meta.get("memjax_version", "unknown")])


def _record_versions(path: str, store: Store, meta: dict[str, Any]) -> Store:
    """Warn if the study holds data of another memjax version than the one asking; record
    every version that wrote to it in study.json (``memjax_versions``)."""
    from memjax import __version__

    seen = _versions(store.meta) | _versions(meta) | {__version__}
    if seen == {__version__}:
        return store
    warnings.warn(
        f"{path} holds results written by memjax {', '.join(sorted(seen - {__version__}))}; "
        f"this is memjax {__version__}: results of different versions may differ "
        f"(all versions are recorded in {META} as memjax_versions)",
        stacklevel=3,
    )
    if set(store.meta.get("memjax_versions") or ()) != seen:
        store.meta["memjax_versions"] = sorted(seen)
        text = json.dumps(store.meta, indent=2, sort_keys=True)
        atomic_write_text(os.path.join(path, META), text)
    return store


# A killed creation leaves its temporary directory, named after the creating host and process.
CREATING = ".{name}.creating-"
STALE_CREATION_S = 24 * 3600


def _remove_stale_creations(parent: str, name: str) -> None:
    """Remove temporary directories of creations of ``name`` whose process is gone: on this
    host, a dead process id; from another host (shared filesystem), older than a day."""
    prefix, host = CREATING.format(name=name), socket.gethostname()
    for entry in os.listdir(parent):
        if not entry.startswith(prefix):
            continue
        full = os.path.join(parent, entry)
        owner_host, _, pid = entry[len(prefix) :].rpartition("-")[0].rpartition("-")
        if owner_host == host and pid.isdigit():
            try:
                os.kill(int(pid), 0)
                continue  # a live creation
            except ProcessLookupError:
                pass
            except PermissionError:
                continue  # alive, another user's
        elif time.time() - os.path.getmtime(full) < STALE_CREATION_S:
            continue
        shutil.rmtree(full, ignore_errors=True)


def create_or_open(path: str, meta: dict[str, Any], masks_fn) -> Store:
    """Open the study at ``path`` if it matches ``meta``; otherwise create it atomically.

    ``masks_fn(rows)`` gives the masks of the given replicas; all masks are written at
    creation (they are deterministic), in a temporary directory renamed into place, so a
    crash during creation leaves nothing that looks like a study (and the next creation
    removes what it left). Directories and files honour the umask. Opening a study that
    holds data of another memjax version warns and records both versions.
    """
    meta_path = os.path.join(path, META)
    if os.path.exists(meta_path):
        existing = open_store(path)
        _check_same_study(path, existing.meta, meta)
        return _record_versions(path, existing, meta)
    if os.path.exists(path) and os.listdir(path):
        raise StoreMismatchError(f"{path} exists, is not empty and is not a memjax study directory")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(os.path.abspath(path))
    _remove_stale_creations(parent, name)
    prefix = f"{CREATING.format(name=name)}{socket.gethostname()}-{os.getpid()}-"
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    os.chmod(tmp, 0o777 & ~_umask())
    meta = {**meta, "memjax_versions": sorted(_versions(meta))}
    try:
        store = Store(tmp, meta)
        group = zarr.open_group(os.path.join(tmp, ARRAYS), mode="w")
        for name, (shape, dtype, chunks) in _array_specs(meta).items():
            fill = -1 if name == "replica_ids" else 0
            group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, fill_value=fill)
        for k in range(store.n_chunks):
            rows = store.chunk_rows(k)
            group["masks"][int(rows[0]) : int(rows[-1]) + 1] = masks_fn(rows)
        os.makedirs(os.path.join(tmp, DONE))
        atomic_write_text(os.path.join(tmp, META), json.dumps(meta, indent=2, sort_keys=True))
        if os.path.exists(path):
            os.rmdir(path)
        os.rename(tmp, path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.exists(meta_path):
            raise
        # another job created the same study at the same moment: use theirs if it matches
        existing = open_store(path)
        _check_same_study(path, existing.meta, meta)
        return _record_versions(path, existing, meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _record_versions(path, open_store(path), meta)


def open_store(path: str) -> Store:
    meta_path = os.path.join(path, META)
    if not os.path.exists(meta_path):
        raise FileNotFoundError(f"{path} is not a memjax study directory (no {META})")
    with open(meta_path) as fh:
        return Store(path, json.load(fh))


def merge(paths: list[str], out: str) -> Store:
    """Join stores of the same study made by separate jobs into a new study directory.

    The stores must agree on config and dataset fingerprint; a chunk finished in two of them
    is an overlap and refused (it would count replicas twice).
    """
    if len(paths) < 2:
        raise ValueError("merge needs at least two study directories")
    stores = [open_store(p) for p in paths]
    first = stores[0]
    for s in stores[1:]:
        _check_same_study(s.path, first.meta, s.meta)
        if s.chunk_size != first.chunk_size:
            raise StoreMismatchError(
                f"{s.path} uses chunk size {s.chunk_size}, {first.path} {first.chunk_size}"
            )
    owner: dict[int, str] = {}
    for s in stores:
        for k in s.done_chunks():
            if k in owner:
                rows = s.chunk_rows(k)
                raise StoreMismatchError(
                    f"replicas {rows[0]}..{rows[-1]} (chunk {k}) are finished in both "
                    f"{owner[k]} and {s.path}: refusing to count them twice"
                )
            owner[k] = s.path
    versions = sorted(set().union(*(_versions(s.meta) for s in stores)))
    meta = {**first.meta, "memjax_versions": versions}
    merged = create_or_open(out, meta, lambda rows: first.masks(rows))
    already = set(merged.done_chunks())
    for s in stores:
        for k in s.done_chunks():
            if k not in already:
                merged.write_chunk(k, s.load_outputs(s.chunk_rows(k)))
    return merged
