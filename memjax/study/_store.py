"""The study directory: config, chunked result arrays, progress markers, resume and merge.

Layout of a study directory::

    study.json          config, dataset fingerprint, memjax version, array shapes, chunk size,
                        the job partition, the store format, and its seal: the sha256 of
                        its own content (all but the versions that wrote the study), so an
                        edit after creation is refused (StudyEditedError)
    arrays.zarr/        zarr arrays with the replica axis first, one zarr chunk per study chunk;
                        every chunk file carries a crc32c (and zstd's own content checksum)
    done/chunk-000012   marker per finished chunk: its rows, the sha256 of each array's rows,
                        the memjax/jax versions that wrote it, and the study that wrote it:
                        the settings that determine its bytes (``binding``) and their sha256
    progress/           heartbeats of running jobs and chunk timings (memjax.study's progress):
                        informational, never verified, no result depends on them

Row r of every array belongs to replica r. A chunk counts as finished only when a valid
marker names it, and a marker is written (atomically) only after the chunk's own files and
directories are fsynced, so a study killed at any moment resumes without losing finished
replicas or counting one twice. Readers only ever see finished rows, and only after checking
them against their marker: a damaged or missing chunk file is a ``CorruptChunkError`` naming
the chunk and the repair (``memjax verify DIR --repair``, then ``memjax run``), never numbers.
A chunk is read only by the study that wrote it: a marker recording another config or dataset
fingerprint, or masks that are not the subset design's for the chunk's replicas (another seed
or design), is a ``ForeignChunkError`` naming the chunk and the differing settings.

Studies of an older store format are refused, not read: format 1 has no chunk checksums, and
format 2 neither binds its markers to the config nor seals study.json, so a chunk copied in
from another study could not be told apart (run such a study again into a new directory).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.errors import ContainsArrayError, ContainsGroupError

from memjax import subsets
from memjax._version import __version__
from memjax.errors import CorruptionError, StoreError
from memjax.jsonio import json_text
from memjax.outputs import ReplicaOutputs
from memjax.study._location import (
    TMP_PREFIX,
    Location,
    PathEscapeError,
    _fsync,
    _umask,
    atomic_write_text,
    fsync_tree,
    locate,
)

__all__ = [
    "Store",
    "StoreMismatchError",
    "StudyEditedError",
    "array_specs",
    "binding",
    "CorruptChunkError",
    "ForeignChunkError",
    "DoneScan",
    "atomic_write_text",
    "create_or_open",
    "design_masks",
    "open_store",
    "merge",
    "restore_arrays",
    "seal",
    "TMP_PREFIX",
]

META = "study.json"
ARRAYS = "arrays.zarr"
DONE = "done"
# 2: checksummed chunk files, hashed markers, recorded job partition; 3: markers bound to
# the study that wrote them, study.json sealed
STORE_FORMAT = 3
# what a study of an older format lacks (it is refused: its chunks cannot be trusted)
FORMAT_LACKS = {
    1: "without chunk checksums",
    2: "whose chunk markers do not record the config that wrote them",
}
# The settings that determine a study's stored bytes, with the seed (in its config) and the
# replica ids: every marker records them, so a chunk is read only by the study that wrote it.
BINDING_KEYS = ("config", "dataset_fingerprint", "kernel")
# study.json's seal: the sha256 of every key but these (the record of the memjax versions
# that wrote the study grows as other versions resume it and says nothing about the data).
SEAL = "seal_sha256"
UNSEALED = ("memjax_version", "memjax_versions", SEAL)
MARKER_NAME = re.compile(r"chunk-([0-9]{6,})")


class StoreMismatchError(StoreError):
    """A study directory holds a different study than the one asked for."""


class StudyEditedError(StoreMismatchError):
    """study.json was changed after the study was created: its data may be another config's."""


class CorruptChunkError(CorruptionError):
    """Stored data disagrees with what was written: ``chunks`` lists the damaged chunk indices."""

    def __init__(self, path: str, chunks: list[int], problem: str) -> None:
        self.path, self.chunks, self.problem = path, list(chunks), problem
        super().__init__(
            f"{path}: {problem}. Repair: `memjax verify {path} --repair` (drops the markers of "
            f"damaged chunks), then `memjax run <the study's config> --out {path}` retrains them"
        )


class ForeignChunkError(CorruptChunkError, StoreMismatchError):
    """A finished chunk was written by another study (another config, dataset, seed or
    design): a mismatch like a foreign store, repaired like a damaged chunk (retrained)."""


def _digest(value: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and C-order bytes."""
    a = np.ascontiguousarray(value)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a).cast("B") if a.size else b"")
    return h.hexdigest()


def _json_sha256(value: Any) -> str:
    """sha256 of a JSON value's canonical text (sorted keys, no spaces): no time, no path."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def binding(meta: dict[str, Any]) -> dict[str, Any]:
    """The settings of the study ``meta`` that each of its markers records (``BINDING_KEYS``)."""
    return {key: meta[key] for key in BINDING_KEYS if key in meta}


def seal(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with its seal (``SEAL``), recorded at creation so that an edit is detected."""
    return {**meta, SEAL: _json_sha256({k: v for k, v in meta.items() if k not in UNSEALED})}


def _versions() -> dict[str, str]:
    import jax

    return {"memjax_version": __version__, "jax_version": jax.__version__}


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted names of the settings in which two nested config dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]} ({a!r} vs {b!r})"]


def array_specs(meta: dict[str, Any]) -> dict[str, tuple[tuple[int, ...], str, tuple[int, ...]]]:
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
    k = meta.get("query_views", 0)  # K views of train.queries (memjax.train.queries)
    if k:
        specs["train_margin_views"] = ((r, n, k), "float32", (c, n, k))
        specs["test_margin_views"] = ((r, m, k), "float32", (c, m, k))
    return specs


def design_masks(meta: dict[str, Any], rows: np.ndarray) -> np.ndarray:
    """The masks the study's subset design gives replicas ``rows``: bool (len(rows), n_train)."""
    cfg = meta["config"]
    sub = cfg["subsets"]
    return subsets.sample(
        int(meta["n_train"]),
        int(meta["replicas"]),
        float(sub["ratio"]),
        int(cfg["seed"]),
        sub["design"],
        replica_ids=rows,
        seeds=int(sub.get("seeds", 1)),
    )


@dataclass
class DoneScan:
    """What ``done/`` holds: ``valid`` chunk index -> marker; ``invalid`` marker file name ->
    why it is not a valid marker (its name is a chunk index of this study but its content is
    not that chunk's marker); ``stray`` other file names (never parsed)."""

    valid: dict[int, dict[str, Any]] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)
    stray: list[str] = field(default_factory=list)


@dataclass
class Store:
    """An open study: ``path`` is its directory or URL as given (memjax.study's locations)."""

    path: str
    meta: dict[str, Any]
    _design_checked: dict[int, str] = field(default_factory=dict, repr=False)

    @cached_property
    def loc(self) -> Location:
        return locate(self.path)

    @cached_property
    def study_sha256(self) -> str:
        """The sha256 of this study's ``binding``, which every marker it writes records."""
        return _json_sha256(binding(self.meta))

    @property
    def replicas(self) -> int:
        return int(self.meta["replicas"])

    @property
    def chunk_size(self) -> int:
        return int(self.meta["chunk_size"])

    @property
    def n_chunks(self) -> int:
        return -(-self.replicas // self.chunk_size)

    @property
    def jobs(self) -> int:
        """How many jobs share the chunks (chunk k belongs to job k mod jobs)."""
        return int(self.meta["jobs"])

    @property
    def specs(self) -> dict[str, tuple[tuple[int, ...], str, tuple[int, ...]]]:
        return array_specs(self.meta)

    def chunk_rows(self, k: int) -> np.ndarray:
        return np.arange(k * self.chunk_size, min((k + 1) * self.chunk_size, self.replicas))

    def check_own_files(self, action: str) -> None:
        """Refuse (PathEscapeError) a study directory with a symbolic link leading out of it
        (e.g. ``done/`` linked into another study) before ``action`` reads or changes
        anything through it: its results would be another study's, its repair another
        study's damage."""
        links = self.loc.links_out()
        if links:
            rel, target = links[0]
            more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
            raise PathEscapeError(
                f"{self.loc.show(rel)} is a symbolic link to {target}, outside the study "
                f"{self.path}{more}: {action} uses only the study's own files; remove the link"
            )

    def _zarr_root(self, mode: str = "r") -> zarr.Group:
        if not self.loc.isfile(f"{ARRAYS}/zarr.json"):
            done = self.done_chunks()
            raise CorruptChunkError(
                self.path, done, f"{ARRAYS} is missing: finished chunks {done[:8]} have no data"
            )
        return zarr.open_group(self.loc.zarr_store(ARRAYS, mode == "r"), mode=mode)

    def _marker(self, k: int) -> str:
        """Chunk k's marker file (local path or object store path)."""
        return self.loc.path(f"{DONE}/chunk-{k:06d}")

    def _chunk_name(self, k: int) -> str:
        rows = self.chunk_rows(k)
        return f"chunk {k} (replicas {rows[0]}..{rows[-1]})"

    def _corrupt(self, k: int, problem: str) -> CorruptChunkError:
        return CorruptChunkError(self.path, [k], f"{self._chunk_name(k)} is damaged: {problem}")

    def _foreign(self, k: int, problem: str, chunks: list[int] | None = None) -> ForeignChunkError:
        """Chunk k (first of ``chunks``) was written by another study: ``problem`` says how."""
        message = f"{self._chunk_name(k)} was written by another study: {problem}"
        return ForeignChunkError(self.path, chunks or [k], message)

    # ---- markers -------------------------------------------------------------------------

    def _marker_problem(self, k: int, marker: Any) -> str | None:
        """Why ``marker`` is not a valid marker of chunk k (None if it is)."""
        rows = self.chunk_rows(k)
        if not isinstance(marker, dict):
            return "not a JSON object"
        if marker.get("format") != STORE_FORMAT:
            return f"marker format {marker.get('format')!r}, expected {STORE_FORMAT}"
        if marker.get("chunk") != k or marker.get("rows") != [int(rows[0]), int(rows[-1]) + 1]:
            return (
                f"it names chunk {marker.get('chunk')!r} rows {marker.get('rows')!r}, not "
                f"chunk {k} rows [{rows[0]}, {rows[-1] + 1}]"
            )
        hashes = marker.get("sha256")
        if not isinstance(hashes, dict) or set(hashes) != set(self.specs):
            return "it does not hold one sha256 per stored array"
        if not all(isinstance(h, str) and re.fullmatch("[0-9a-f]{64}", h) for h in hashes.values()):
            return "a sha256 is not 64 hex digits"
        study = marker.get("study")
        if not isinstance(study, dict) or marker.get("study_sha256") != _json_sha256(study):
            return "it does not record the study that wrote it with that record's sha256"
        return None

    def foreign_problem(self, marker: dict[str, Any]) -> str | None:
        """How the study that wrote a (valid) marker differs from this one; None: it is this."""
        if marker["study_sha256"] == self.study_sha256:
            return None
        differences = _diff(binding(self.meta), marker["study"]) or [
            "none by value (their JSON differs, e.g. 1 vs 1.0)"
        ]
        return f"differing settings (this study's vs the chunk's): {'; '.join(differences[:8])}"

    def foreign_chunks(self, scan: DoneScan) -> dict[int, str]:
        """Finished chunks (by index, ascending) that another study wrote, with how it differs."""
        return {k: p for k, m in sorted(scan.valid.items()) if (p := self.foreign_problem(m))}

    def check_markers(self, scan: DoneScan | None = None) -> None:
        """Refuse (ForeignChunkError) finished chunks that another study wrote: reads the
        markers only, so resuming runs it before trusting them."""
        foreign = self.foreign_chunks(self.scan_done() if scan is None else scan)
        if foreign:
            k = min(foreign)
            raise self._foreign(k, foreign[k], sorted(foreign))

    def _read_marker(self, k: int) -> tuple[dict[str, Any] | None, str | None]:
        """Chunk k's marker if it is a valid one, else (None, why not); (None, None): none."""
        try:
            marker = json.loads(self.loc.read_text(f"{DONE}/chunk-{k:06d}"))
        except FileNotFoundError:
            return None, None
        except (ValueError, UnicodeDecodeError) as err:
            return None, f"not JSON ({err})"
        problem = self._marker_problem(k, marker)
        return (marker, None) if problem is None else (None, problem)

    def scan_done(self) -> DoneScan:
        """Read ``done/``: only files named exactly ``chunk-NNNNNN`` with an index of this
        study are parsed; whatever else is there is listed as stray."""
        scan = DoneScan()
        for name in self.loc.listdir(DONE):
            match = MARKER_NAME.fullmatch(name)
            k = int(match.group(1)) if match else -1
            if not (0 <= k < self.n_chunks and name == f"chunk-{k:06d}"):
                scan.stray.append(name)
                continue
            marker, problem = self._read_marker(k)
            if marker is not None:
                scan.valid[k] = marker
            elif problem is not None:
                scan.invalid[name] = problem
        return scan

    def is_done(self, k: int) -> bool:
        """Whether chunk k has a valid marker now (another job sharing the study may have
        written it since this one scanned ``done/``)."""
        return self._read_marker(k)[0] is not None

    def done_chunks(self) -> list[int]:
        """Indices of the chunks with a valid marker (contents are checked when read)."""
        return sorted(self.scan_done().valid)

    def done_rows(self) -> np.ndarray:
        rows = [self.chunk_rows(k) for k in self.done_chunks()]
        return np.concatenate(rows) if rows else np.zeros(0, np.int64)

    def is_complete(self) -> bool:
        return len(self.done_chunks()) == self.n_chunks

    # ---- chunk files ---------------------------------------------------------------------

    def chunk_files(self, k: int, names: list[str] | None = None) -> list[str]:
        """Paths (relative to the study) of the zarr chunk files holding chunk k's rows of
        the given arrays (all)."""
        files = []
        for name in self.specs if names is None else names:
            shape, _, chunks = self.specs[name]
            grid = [range(-(-s // c)) for s, c in zip(shape[1:], chunks[1:], strict=True)]
            for coords in itertools.product(*grid):
                key = "/".join(str(i) for i in ("c", k, *coords))
                files.append(f"{ARRAYS}/{name}/{key}")
        return files

    def missing_files(self, k: int, present: set[str] | None = None) -> list[str]:
        """Files chunk k needs that do not exist (array metadata included), relative paths;
        ``present``: the files known to exist (one listing of the arrays), else each is
        looked up."""
        need = [f"{ARRAYS}/zarr.json"]
        need += [f"{ARRAYS}/{name}/zarr.json" for name in self.specs]
        need += self.chunk_files(k)
        exists = self.loc.isfile if present is None else present.__contains__
        return [os.path.normpath(p) for p in need if not exists(p)]

    def damaged_chunks(self, chunks: list[int] | None = None) -> dict[int, list[str]]:
        """Finished chunks (all, or those given) that lack files: chunk -> missing files.
        A cheap check (no data is read, the arrays are listed once) that status and resume
        run before trusting markers."""
        chunks = self.done_chunks() if chunks is None else chunks
        present = {p.replace(os.sep, "/") for p in self.loc.files(ARRAYS)} if chunks else set()
        out = {k: self.missing_files(k, present) for k in chunks}
        return {k: files for k, files in out.items() if files}

    # ---- reading -------------------------------------------------------------------------

    def _read_verified(
        self, k: int, marker: dict[str, Any], names: list[str], zroot: zarr.Group
    ) -> dict[str, np.ndarray]:
        """Chunk k's rows of ``names``, checked against files, checksums and its marker."""
        foreign = self.foreign_problem(marker)
        if foreign is not None:
            raise self._foreign(k, foreign)
        missing = self.missing_files(k)
        if missing:
            more = f" (and {len(missing) - 1} more files)" if len(missing) > 1 else ""
            raise self._corrupt(k, f"{missing[0]} is missing{more}")
        rows = self.chunk_rows(k)
        out = {}
        for name in names:
            try:
                block = zroot[name][int(rows[0]) : int(rows[-1]) + 1]
            except ValueError as err:  # crc32c / zstd checksum mismatch
                raise self._corrupt(
                    k, f"a chunk file of {ARRAYS}/{name} fails its checksum"
                ) from err
            if name == "replica_ids" and not np.array_equal(block, rows):
                raise self._corrupt(k, f"replica_ids {block.tolist()} are not its rows")
            if _digest(block) != marker["sha256"][name]:
                what = "masks differ from the design's" if name == "masks" else name
                raise self._corrupt(k, f"{what}: content differs from the sha256 in its marker")
            if name == "masks":
                self._check_design(k, block, finished=True)
            out[name] = block
        return out

    def _check_design(self, k: int, block: np.ndarray, *, finished: bool = False) -> None:
        """Chunk k's stored masks must be the design's (memoized per content): an unfinished
        chunk's are damaged otherwise; a finished chunk's, which match its marker, were
        trained on by another study."""
        digest = _digest(block)
        if self._design_checked.get(k) == digest:
            return
        if not np.array_equal(block, design_masks(self.meta, self.chunk_rows(k))):
            if finished:
                raise self._foreign(
                    k,
                    "its masks (those its marker records) are not the subset design's for its "
                    "replicas (another seed or design)",
                )
            raise self._corrupt(k, "its stored masks differ from the subset design's")
        self._design_checked[k] = digest

    def _gather(self, names: list[str], rows: np.ndarray | None) -> dict[str, np.ndarray]:
        """Verified rows of ``names`` (rows of finished chunks; masks of any chunk)."""
        if rows is None:
            valid = self.scan_done().valid
            rows = np.concatenate([self.chunk_rows(k) for k in sorted(valid)] or [np.zeros(0, int)])
        rows = np.asarray(rows, np.int64).reshape(-1)
        if ((rows < 0) | (rows >= self.replicas)).any():
            raise StoreError(f"replica ids must lie in [0, {self.replicas})")
        chunks = np.unique(rows // self.chunk_size).tolist()
        valid = {k: m for k in chunks if (m := self._read_marker(k)[0]) is not None}
        if names != ["masks"]:
            unfinished = [k for k in chunks if k not in valid]
            if unfinished:
                raise StoreError(
                    f"{self.path}: chunks {unfinished[:8]} are not finished; their outputs "
                    "cannot be read"
                )
        zroot = self._zarr_root()
        blocks = []
        for k in chunks:
            if k in valid:
                blocks.append(self._read_verified(k, valid[k], names, zroot))
            else:
                blocks.append(self._read_design_masks(k, zroot))
        have = np.concatenate([self.chunk_rows(k) for k in chunks] or [np.zeros(0, int)])
        out = {}
        for name in names:
            shape, dtype, _ = self.specs[name]
            if not blocks:
                out[name] = np.zeros((0, *shape[1:]), dtype)
                continue
            value = np.concatenate([b[name] for b in blocks])
            out[name] = value if np.array_equal(have, rows) else value[np.searchsorted(have, rows)]
        return out

    def _read_design_masks(self, k: int, zroot: zarr.Group) -> dict[str, np.ndarray]:
        """Unfinished chunk k's stored masks, checked against the subset design."""
        prefix = f"{ARRAYS}/masks/"
        missing = [f for f in self.missing_files(k) if f.startswith(prefix)]
        if missing:
            raise self._corrupt(k, f"{missing[0]} is missing")
        rows = self.chunk_rows(k)
        try:
            block = zroot["masks"][int(rows[0]) : int(rows[-1]) + 1]
        except ValueError as err:
            raise self._corrupt(k, f"a chunk file of {ARRAYS}/masks fails its checksum") from err
        self._check_design(k, block)
        return {"masks": block}

    def masks(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Masks of replicas ``rows`` (all replicas if None), verified: against the marker for
        finished chunks, against the subset design for unfinished ones."""
        rows = np.arange(self.replicas) if rows is None else rows
        return self._gather(["masks"], rows)["masks"]

    def load_outputs(self, rows: np.ndarray | None = None) -> ReplicaOutputs:
        """Verified outputs of finished replicas (all of them unless ``rows`` is given)."""
        names = [n for n in self.specs if n != "masks"]
        kw: dict[str, Any] = self._gather(names, rows)
        for name in ("record_epochs", "record_lr"):
            if name in self.meta:
                kw[name] = np.asarray(self.meta[name])
        return ReplicaOutputs(**kw)

    def check_chunk(self, k: int, scan: DoneScan | None = None) -> str | None:
        """What is wrong with chunk k (None if nothing): every file and hash of a finished
        chunk, the masks of an unfinished one."""
        scan = self.scan_done() if scan is None else scan
        try:
            zroot = self._zarr_root()
            if k in scan.valid:
                self._read_verified(k, scan.valid[k], list(self.specs), zroot)
            else:
                self._read_design_masks(k, zroot)
        except CorruptChunkError as err:
            return err.problem
        return None

    # ---- writing -------------------------------------------------------------------------

    def write_chunk(self, k: int, outputs: ReplicaOutputs) -> None:
        """Write chunk k's rows, fsync its files and directories, then mark the chunk done
        with the sha256 of every array's rows (computed from the values written)."""
        rows = self.chunk_rows(k)
        if not np.array_equal(outputs.replica_ids, rows):
            raise StoreError(f"chunk {k} holds replicas {rows[0]}..{rows[-1]}, got other ids")
        arrays = outputs.arrays()
        extra = set(arrays) - set(self.specs)
        if extra:
            raise StoreError(
                f"store has no arrays {sorted(extra)}; was the study created for them?"
            )
        lacking = set(self.specs) - set(arrays) - {"masks"}
        if lacking:
            raise StoreError(f"outputs lack {sorted(lacking)}, which this study stores")
        zroot = self._zarr_root("r+")
        hashes = {"masks": _digest(self._read_design_masks(k, zroot)["masks"])}
        sl = slice(int(rows[0]), int(rows[-1]) + 1)
        for name, value in arrays.items():
            shape, dtype, _ = self.specs[name]
            stored = np.ascontiguousarray(value, dtype=dtype)
            if stored.shape != (len(rows), *shape[1:]):
                raise StoreError(f"{name} has shape {stored.shape}, expected {shape[1:]} per row")
            zroot[name].with_config({"write_empty_chunks": True})[sl] = stored
            hashes[name] = _digest(stored)
        self.loc.sync(self.chunk_files(k, list(arrays)), ARRAYS)
        marker = {
            "format": STORE_FORMAT,
            "chunk": k,
            "rows": [sl.start, sl.stop],
            "sha256": hashes,
            **_versions(),
            "study": binding(self.meta),
            "study_sha256": self.study_sha256,
        }
        # the marker goes last, once every data object of the chunk is durable
        text = json_text(marker, indent=1, sort_keys=True)
        self.loc.write_text(f"{DONE}/chunk-{k:06d}", text)

    def drop_marker(self, name: str) -> None:
        """Remove ``done/name`` durably: its chunk counts as unfinished from now on."""
        self.loc.remove(f"{DONE}/{name}")

    def write_design_masks(self, k: int) -> None:
        """(Re)write chunk k's masks from the subset design, durably."""
        rows = self.chunk_rows(k)
        arr = self._zarr_root("r+")["masks"].with_config({"write_empty_chunks": True})
        arr[int(rows[0]) : int(rows[-1]) + 1] = design_masks(self.meta, rows)
        self.loc.sync(self.chunk_files(k, ["masks"]), ARRAYS)


def _create_arrays(
    loc: Location, meta: dict[str, Any], names: list[str] | None = None, keep: bool = False
) -> None:
    """Create the study's arrays (all, or ``names``, replacing them) in arrays.zarr, every
    chunk file checksummed (zstd's content checksum, then crc32c over the file). ``keep``:
    never delete; an array that exists already (a concurrent creator of the same study on an
    object store may be writing to it, or a killed one left it) is kept if its shape, dtype
    and chunks are this study's."""
    try:
        zroot = zarr.open_group(loc.zarr_store(ARRAYS, False), mode="a")
    except ContainsGroupError:  # a concurrent creator made the zarr root between look and write
        zroot = zarr.open_group(loc.zarr_store(ARRAYS, False), mode="r+")
    for name, (shape, dtype, chunks) in array_specs(meta).items():
        if names is not None and name not in names:
            continue
        try:
            _create_array(zroot, name, shape, dtype, chunks, overwrite=not keep)
        except ContainsArrayError:
            have = zroot[name]
            if (have.shape, have.dtype, have.chunks) != (shape, np.dtype(dtype), chunks):
                raise StoreMismatchError(
                    f"{loc.show(ARRAYS)}/{name} has shape {have.shape} ({have.dtype}), this "
                    f"study's is {shape} ({dtype}): left by an interrupted creation of another "
                    f"study; remove {loc.url} or use another --out"
                ) from None


def _create_array(
    zroot: zarr.Group,
    name: str,
    shape: tuple[int, ...],
    dtype: str,
    chunks: tuple[int, ...],
    overwrite: bool,
) -> None:
    """One stored array; ContainsArrayError if it exists and ``overwrite`` is False."""
    zroot.create_array(
        name,
        shape=shape,
        dtype=dtype,
        chunks=chunks,
        fill_value=-1 if name == "replica_ids" else 0,
        compressors=[ZstdCodec(level=3, checksum=True), Crc32cCodec()],
        chunk_key_encoding={"name": "default", "separator": "/"},
        config={"write_empty_chunks": True},
        overwrite=overwrite,
    )


def restore_arrays(store: Store) -> list[str]:
    """Recreate the arrays whose metadata is missing (empty; masks from the design) and
    return their names. The markers of chunks that relied on them must be dropped first."""
    loc = store.loc
    missing = [n for n in store.specs if not loc.isfile(f"{ARRAYS}/{n}/zarr.json")]
    if missing or not loc.isfile(f"{ARRAYS}/zarr.json"):
        _create_arrays(loc, store.meta, missing)
        if "masks" in missing:
            for k in range(store.n_chunks):
                store.write_design_masks(k)
        loc.sync_tree(ARRAYS)
    return missing


def _check_same_study(path: str, existing: dict[str, Any], meta: dict[str, Any]) -> None:
    keys = (*BINDING_KEYS, "replicas", "n_train", "n_test")
    differences = []
    for key in keys:
        differences += _diff({key: existing.get(key)}, {key: meta.get(key)})
    shapes = [{k: v[:2] for k, v in array_specs(m).items()} for m in (existing, meta)]
    if not differences and shapes[0] != shapes[1]:
        differences.append("stored arrays (the store was written by another memjax version)")
    if differences:
        raise StoreMismatchError(
            f"{path} already holds a different study; differing settings: "
            + "; ".join(differences[:8])
            + ". Use another --out directory or the original config."
        )


def _study_versions(meta: dict[str, Any]) -> set[str]:
    """Every memjax version recorded as having written a study's data."""
    return set(meta.get("memjax_versions") or [meta.get("memjax_version", "unknown")])


def _record_versions(path: str, store: Store, meta: dict[str, Any]) -> Store:
    """Warn if the study holds data of another memjax version than the one asking; record
    every version that wrote to it in study.json (``memjax_versions``)."""
    seen = _study_versions(store.meta) | _study_versions(meta) | {__version__}
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
        text = json_text(store.meta, indent=2, sort_keys=True)
        store.loc.write_text(META, text)
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


def create_or_open(path: str, meta: dict[str, Any]) -> Store:
    """Open the study at ``path`` if it matches ``meta``; otherwise create it atomically.

    All masks are written at creation (they are the design's, ``design_masks``), in a
    temporary directory that is fsynced and renamed into place, so a crash during creation
    leaves nothing that looks like a study (and the next creation removes what it left).
    ``meta["jobs"]`` is the job partition. Directories and files honour the umask. Opening a
    study that holds data of another memjax version warns and records both versions.

    On an object store (``path`` a URL, memjax.study's locations) there is no rename: the arrays and
    masks are written in place and ``study.json`` last, so the study exists once that one
    object does; what a killed creation left is completed by the next one, and two jobs
    creating the same study at once write the same bytes.
    """
    loc = locate(path)
    path = loc.root if loc.local else path  # file:// URLs are local directories
    if loc.exists(META):
        existing = open_store(path)
        _check_same_study(path, existing.meta, meta)
        return _record_versions(path, existing, meta)
    if (os.path.exists(path) and os.listdir(path)) if loc.local else set(loc.listdir()) - {ARRAYS}:
        raise StoreMismatchError(f"{path} exists, is not empty and is not a memjax study directory")
    if not (isinstance(meta.get("jobs"), int) and meta["jobs"] >= 1):
        raise StoreError(f"a new study needs its job partition (jobs >= 1), got {meta.get('jobs')}")
    meta = seal(
        {**meta, "store_format": STORE_FORMAT, "memjax_versions": sorted(_study_versions(meta))}
    )
    if not loc.local:
        store = Store(path, meta)
        _create_arrays(loc, meta, keep=True)
        _write_all_design_masks(store)
        loc.write_text(META, json_text(meta, indent=2, sort_keys=True))
        return _record_versions(path, open_store(path), meta)
    meta_path = os.path.join(path, META)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(os.path.abspath(path))
    _remove_stale_creations(parent, name)
    prefix = f"{CREATING.format(name=name)}{socket.gethostname()}-{os.getpid()}-"
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        store = Store(tmp, meta)
        _create_arrays(store.loc, meta)
        _write_all_design_masks(store)
        os.makedirs(os.path.join(tmp, DONE))
        with open(os.path.join(tmp, META), "w") as fh:
            fh.write(json_text(meta, indent=2, sort_keys=True))
        fsync_tree(tmp)
        if os.path.exists(path):
            os.rmdir(path)
        os.rename(tmp, path)
        _fsync(parent)
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


def _write_all_design_masks(store: Store) -> None:
    """Every chunk's masks, from the design (a new study's, not yet durable)."""
    zroot = store._zarr_root("r+")
    for k in range(store.n_chunks):
        rows = store.chunk_rows(k)
        zroot["masks"][int(rows[0]) : int(rows[-1]) + 1] = design_masks(store.meta, rows)


def open_store(path: str) -> Store:
    """The study at ``path`` (a directory or URL); FileNotFoundError if there is none,
    StoreMismatchError for an older store format, StudyEditedError for an edited study.json."""
    loc = locate(path)
    try:
        meta = json.loads(loc.read_text(META))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is not a memjax study directory (no {META})") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise StoreMismatchError(
            f"{loc.show(META)} is not valid JSON (truncated or damaged: {err})"
        ) from None
    if not isinstance(meta, dict):
        raise StoreMismatchError(f"{loc.show(META)} is not a JSON object")
    fmt = meta.get("store_format", 1)
    if fmt != STORE_FORMAT:
        lacks = isinstance(fmt, int) and FORMAT_LACKS.get(fmt) or "unknown to this memjax"
        raise StoreMismatchError(
            f"{path} was written by memjax {meta.get('memjax_version')} in store format {fmt}, "
            f"{lacks}; this memjax reads format {STORE_FORMAT} only: run the study again into "
            "a new directory"
        )
    if meta.get(SEAL) != seal(meta)[SEAL]:
        raise StudyEditedError(
            f"{loc.show(META)} was edited after the study was created (its content no longer "
            f"has the sha256 it recorded then){_edited_settings(loc, meta)}: restore the "
            "original, or run the edited config into a new directory"
        )
    return Store(path, meta)


def _edited_settings(loc: Location, meta: dict[str, Any]) -> str:
    """Where an edited study.json's settings differ from those its first readable marker
    records (empty if no marker can be read or the settings are the same)."""
    for name in loc.listdir(DONE):
        try:
            study = json.loads(loc.read_text(f"{DONE}/{name}")).get("study")
        except (OSError, ValueError, UnicodeDecodeError, AttributeError):
            continue
        if isinstance(study, dict):
            differences = _diff(study, binding(meta))
            if not differences:
                return ""
            changed = "; ".join(differences[:8])
            return f"; settings changed since {DONE}/{name} was written (then vs now): {changed}"
    return ""


def merge(paths: list[str], out: str) -> Store:
    """Join stores of the same study made by separate jobs into a new study directory (one
    store alone is copied, verified, into a directory no job shares).

    The stores must agree on config and dataset fingerprint; a chunk finished in two of them
    is an overlap and refused (it would count replicas twice). Every finished chunk of every
    input is verified (files, checksums, hashes, masks) before anything is written.
    """
    if not paths:
        raise StoreError("merge needs at least one study directory")
    stores = [open_store(p) for p in paths]
    for s in stores:
        s.check_own_files("merge")
    first = stores[0]
    for s in stores[1:]:
        _check_same_study(s.path, first.meta, s.meta)
        if s.chunk_size != first.chunk_size:
            raise StoreMismatchError(
                f"{s.path} uses chunk size {s.chunk_size}, {first.path} {first.chunk_size}"
            )
    owner: dict[int, Store] = {}
    for s in stores:
        for k in s.done_chunks():
            if k in owner:
                rows = s.chunk_rows(k)
                raise StoreMismatchError(
                    f"replicas {rows[0]}..{rows[-1]} (chunk {k}) are finished in both "
                    f"{owner[k].path} and {s.path}: refusing to count them twice"
                )
            owner[k] = s
    for s in stores:
        scan = s.scan_done()
        bad = {k: p for k in scan.valid if (p := s.check_chunk(k, scan)) is not None}
        if bad:
            k = min(bad)
            raise CorruptChunkError(s.path, sorted(bad), bad[k])
    # the merged directory is a new study directory: no job shares it yet
    meta = {k: v for k, v in first.meta.items() if k != "store_format"}
    meta["memjax_versions"] = sorted(set().union(*(_study_versions(s.meta) for s in stores)))
    merged = create_or_open(out, {**meta, "jobs": 1})
    already = set(merged.done_chunks())
    for k, s in sorted(owner.items()):
        if k not in already:
            rows = s.chunk_rows(k)
            if not np.array_equal(s.masks(rows), merged.masks(rows)):
                raise s._corrupt(k, f"its masks differ from those of {out}")
            merged.write_chunk(k, s.load_outputs(rows))
    return merged
