"""Study: a config (dataset, model, subset design, training) run chunk by chunk into a store.

Running the same study again resumes it: finished chunks are skipped, an interrupted chunk
is recomputed from scratch (its results depend only on the seed and replica ids), and a
directory holding a different study or dataset is refused before anything is written.
"""

from __future__ import annotations

import errno
import inspect
import math
import os
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jax
import numpy as np

from memjax import data, models, schema, subsets
from memjax._version import __version__
from memjax.errors import ConfigError, SizeError, StoreError
from memjax.outputs import VIEW_FIELDS, ReplicaOutputs
from memjax.privacy import study_budget
from memjax.study import _config_file as config_file
from memjax.study._location import locate
from memjax.study._progress import JobProgress, study_progress
from memjax.study._store import (
    META,
    CorruptChunkError,
    Store,
    array_specs,
    create_or_open,
    open_store,
)
from memjax.study.uncut import uncut
from memjax.train import (
    TrainConfig,
    available_memory_bytes,
    check_training,
    choose_chunk_size,
    parameter_count,
    replica_bytes,
    train_replicas,
)
from memjax.train.queries import check_queries, num_views

__all__ = [
    "StudyConfig",
    "ABOUT_KEYS",
    "about_text",
    "JobPartitionError",
    "job_chunks",
    "unfinished_chunks",
    "default_chunk_size",
    "study_status",
    "StudyTooLargeError",
    "NonFiniteTrainingError",
    "check_finite",
    "SizeEstimate",
    "load_config",
    "default_config",
    "build_dataset",
    "estimate_size",
    "check_size",
    "check_study",
    "check_writable",
    "check_finished_files",
    "run_study",
    "train_chunk",
]

MAX_CHUNK = 256
# What a study is for: stated in its config, recorded with it, never a setting that must match.
ABOUT_KEYS = ("description", "command", "expected_runtime")
ABOUT_LENGTH = {"description": 10_000, "command": 2_000, "expected_runtime": 200}
STUDY_KEYS = ("name", "dataset", "model", "subsets", "train", "seed", "chunk_size", *ABOUT_KEYS)
MAX_REPLICAS = 2**40
MAX_SEED = 2**63 - 1
# A study's name is its default directory under results/: one path component, no "..".
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}"
# Subset masks are generated at creation (and again to size the chunks): R x n cells.
MAX_MASK_CELLS = 10**11


@dataclass(frozen=True)
class StudyConfig:
    """Everything that determines a study's results (chunk_size only shapes the store), and
    what it is for: ``description``, ``command`` (how to reproduce it) and ``expected_runtime``
    are recorded with the study but never have to match when it is resumed or merged.

    Every setting is type- and bounds-checked on construction (memjax.schema); errors name
    the setting as it is written in a config file (e.g. ``subsets.replicas``).
    """

    dataset: dict[str, Any]
    model: models.Spec
    replicas: int
    ratio: float
    design: str
    train: TrainConfig
    seed: int = 0
    name: str = "study"
    seeds: int = 1
    chunk_size: int | None = None
    description: str = ""
    command: str = ""
    expected_runtime: str = ""

    def __post_init__(self) -> None:
        checked = {
            "replicas": schema.integer(self.replicas, "subsets.replicas", 2, MAX_REPLICAS),
            "design": schema.choice(self.design, "subsets.design", subsets.DESIGNS),
            "ratio": schema.number(self.ratio, "subsets.ratio", 1.0, 1.0)
            if self.design in subsets.WHOLE_SET_DESIGNS
            else schema.number(self.ratio, "subsets.ratio", 0.0, 1.0, True, True),
            "seed": schema.integer(self.seed, "seed", 0, MAX_SEED),
            "name": schema.text(
                self.name,
                "name",
                NAME_PATTERN,
                "one path component of letters, digits and . _ + - (starting with a letter "
                "or digit, at most 128 characters): the default study directory is "
                "results/<name>",
            ),
            "chunk_size": None
            if self.chunk_size is None
            else schema.integer(self.chunk_size, "chunk_size", 1, MAX_REPLICAS),
            "dataset": _dataset_section(self.dataset),
            **{key: about_text(getattr(self, key), key) for key in ABOUT_KEYS},
        }
        for key, value in checked.items():
            object.__setattr__(self, key, value)
        if self.design == "balanced":
            try:
                subsets.balanced_block_size(self.ratio)
            except ValueError as err:
                raise schema.SettingError("subsets.ratio", self.ratio, str(err)) from None
        seeds = schema.integer(self.seeds, "subsets.seeds", 1, MAX_REPLICAS)
        if self.design != "eval" and seeds != 1:
            raise schema.SettingError(
                "subsets.seeds", seeds, "1: seeds per subset applies to the design 'eval' only"
            )
        if self.replicas % seeds:
            raise schema.SettingError(
                "subsets.replicas",
                self.replicas,
                f"a multiple of subsets.seeds ({seeds}): each eval subset trains with every seed",
            )
        object.__setattr__(self, "seeds", seeds)
        if not isinstance(self.model, tuple(models.SPECS.values())):
            raise schema.SettingError("model", self.model, "a model spec (MLP, CNN1D, CNN2D)")
        if not isinstance(self.train, TrainConfig):
            raise schema.SettingError("train", self.train, "a TrainConfig")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyConfig:
        d = schema.section(d, "", STUDY_KEYS, required=("dataset", "model", "subsets", "train"))
        sub = schema.section(
            d["subsets"],
            "subsets",
            ("replicas", "ratio", "design", "seeds"),
            required=("replicas",),
        )
        return cls(
            dataset=d["dataset"],
            model=models.spec_from_dict(d["model"]),
            replicas=sub["replicas"],
            ratio=sub.get("ratio", 1.0 if sub.get("design") in subsets.WHOLE_SET_DESIGNS else 0.5),
            seeds=sub.get("seeds", 1),
            design=sub.get("design", "balanced"),
            train=TrainConfig.from_dict(d["train"]),
            seed=d.get("seed", 0),
            name=d.get("name", "study"),
            chunk_size=d.get("chunk_size"),
            **{key: d[key] for key in ABOUT_KEYS if key in d},
        )

    def subsets_dict(self) -> dict[str, Any]:
        """The subsets section; ``seeds`` only under eval (where it means something)."""
        sub = {"replicas": self.replicas, "ratio": self.ratio, "design": self.design}
        return {**sub, "seeds": self.seeds} if self.design == "eval" else sub

    def about(self) -> dict[str, str]:
        """description, command and expected_runtime: recorded, never compared."""
        return {key: getattr(self, key) for key in ABOUT_KEYS}

    def result_dict(self) -> dict[str, Any]:
        """The settings a store must match to be resumed or merged."""
        return {
            "dataset": self.dataset,
            "model": models.spec_to_dict(self.model),
            "subsets": self.subsets_dict(),
            "train": self.train.result_dict(),
            "seed": self.seed,
        }


def about_text(value: Any, setting: str) -> str:
    """A description, command or expected runtime: a string of bounded length."""
    n = ABOUT_LENGTH[setting.rpartition(".")[2]]
    return schema.text(value, setting, rf"(?s).{{0,{n}}}", f"a string of at most {n} characters")


def _dataset_section(value: Any) -> dict[str, Any]:
    """The dataset section: a name (or path) alone, or a mapping with the name, label noise
    and the registered loader's own arguments, each checked against the loader's defaults."""
    d = {"name": value} if isinstance(value, str) else value
    if not isinstance(d, Mapping):
        raise schema.SettingError("dataset", value, "a dataset name or a mapping with a name")
    name = schema.text(d.get("name"), "dataset.name", r".+", "a dataset name or a file path")
    loader = data.DATASETS.get(name)
    defaults = {
        p.name: p.default
        for p in (inspect.signature(loader).parameters.values() if loader else ())
        if p.default is not inspect.Parameter.empty
    }
    d = schema.section(
        d, "dataset", ["name", "label_noise", "random_labels", "noise_seed", "exclude", *defaults]
    )
    out: dict[str, Any] = {"name": name}
    for key, v in d.items():
        where = f"dataset.{key}"
        if key == "exclude":
            out[key] = _exclude(v, where)
        elif key == "label_noise":
            out[key] = schema.number(v, where, 0.0, 1.0, high_open=True)
        elif key == "random_labels":
            out[key] = schema.number(v, where, 0.0, 1.0)
            if d.get("label_noise"):
                raise schema.SettingError(where, v, "0 when label_noise is set (one or the other)")
        elif key == "noise_seed":
            out[key] = schema.integer(v, where, 0, MAX_SEED)
        elif key != "name":
            kind = type(defaults[key])
            out[key] = (
                schema.flag(v, where)
                if kind is bool
                else schema.integer(v, where)
                if kind is int
                else schema.number(v, where)
                if kind is float
                else v
            )
    return out


def _exclude(value: Any, setting: str) -> list[int]:
    """Training indices to remove: a list of distinct non-negative integers, ascending (one
    way to write each set, so that equal sets make equal configs)."""
    allowed = "a list of distinct training indices (integers >= 0) in ascending order"
    if not isinstance(value, (list, tuple)):
        raise schema.SettingError(setting, value, allowed)
    out = [schema.integer(v, f"{setting}[{i}]", 0, MAX_REPLICAS) for i, v in enumerate(value)]
    if any(a >= b for a, b in zip(out[:-1], out[1:], strict=True)):
        raise schema.SettingError(setting, value, allowed)
    return out


def load_config(path: str, mode: str | None = None, sets: tuple[str, ...] = ()) -> StudyConfig:
    """A study config from YAML with mode ``mode`` and ``--set`` overrides applied
    (the config files of memjax.study); a family config (with ``sweep:``) is refused."""
    return study_from_document(config_file.read(path), path, mode, sets)


def study_from_document(
    doc: Any, where: str, mode: str | None = None, sets: tuple[str, ...] = ()
) -> StudyConfig:
    """The study of a config document (read from ``where``, named in errors)."""
    try:
        d = config_file.resolve(doc, mode, sets)
        if "sweep" in d:
            raise ConfigError(
                "it declares a sweep, so it is a family config: run it with `memjax run` "
                "or load it with memjax.study.load_family"
            )
        return StudyConfig.from_dict(d)
    except ValueError as err:
        err.args = (f"{where}: {err}",)
        raise


def default_config(mode: str | None = None, sets: tuple[str, ...] = ()) -> StudyConfig:
    """The embedded default study (memjax/configs/default.yaml), with overrides if given."""
    text = resources.files("memjax").joinpath("configs/default.yaml").read_text()
    return study_from_document(schema.load_yaml(text), "the default config", mode, sets)


def build_dataset(spec: dict[str, Any], *, data_root: str | None = None) -> data.Dataset:
    """Dataset from a config section: name (+ loader kwargs), optional label_noise (flipped to
    another class) or random_labels (drawn uniformly, Zhang et al. 2017) with noise_seed,
    then optional ``exclude`` (training indices removed after the labels are flipped, so the
    examples left keep the labels and ``flipped`` marks of the dataset without it).

    A file or directory name is used as given when ``data_root`` is None (the config one
    runs), and confined to ``data_root`` otherwise (a stored study's config, which
    someone else may have written: ``data.confined_path``)."""
    spec = dict(spec)
    name = spec.pop("name")
    if data_root is not None and name not in data.DATASETS:
        name = data.confined_path(name, data_root)
    rate = float(spec.pop("label_noise", 0.0))
    random_rate = float(spec.pop("random_labels", 0.0))
    noise_seed = int(spec.pop("noise_seed", 0))
    exclude = spec.pop("exclude", None)
    ds = data.load(name, **spec)
    if rate:
        ds, _ = data.with_label_noise(ds, rate, noise_seed)
    if random_rate:
        ds, _ = data.with_random_labels(ds, random_rate, noise_seed)
    if exclude is not None:
        ds = data.without_examples(ds, np.array(exclude, np.int64))
    return ds


class JobPartitionError(StoreError):
    """A job was started with another --jobs than the study's recorded partition."""


def job_chunks(n_chunks: int, job: int, jobs: int, offset: int = 0) -> list[int]:
    """The chunks job ``job`` of ``jobs`` owns: those k with (offset + k) mod jobs = job, i.e.
    job, job + jobs, ... for a study of its own. A family member's offset is the number of
    chunks of the members before it, so that the jobs split the family's chunks as one list."""
    return [k for k in range(n_chunks) if (offset + k) % jobs == job]


def unfinished_chunks(store: Store, job: int, jobs: int) -> list[int]:
    """The chunks of ``store`` that job ``job`` of ``jobs`` owns and has not finished."""
    done = set(store.done_chunks())
    offset = int(store.meta.get("job_offset", 0))
    return [k for k in job_chunks(store.n_chunks, job, jobs, offset) if k not in done]


def _meta(
    cfg: StudyConfig,
    ds: data.Dataset,
    chunk_size: int,
    max_subset: int,
    jobs: int,
    job_offset: int,
    privacy_budget: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """study.json's content; ``privacy_budget`` (memjax.privacy.study_budget) is
    recorded under "dp" for a DP study."""
    t = cfg.train
    budget = {} if privacy_budget is None else {"dp": privacy_budget}
    return {
        **budget,
        "config": cfg.result_dict(),
        "name": cfg.name,
        "about": cfg.about(),
        "dataset_fingerprint": ds.fingerprint,
        "dataset_name": ds.name,
        "data_packages": data.package_versions(),
        "memjax_version": __version__,
        "replicas": cfg.replicas,
        "n_train": ds.n_train,
        "n_test": ds.n_test,
        "num_classes": ds.num_classes,
        "chunk_size": chunk_size,
        "jobs": jobs,
        "job_offset": job_offset,
        "max_subset_size": max_subset,
        "record_epochs": t.recorded_epochs().tolist(),
        "record_lr": t.recorded_learning_rates().tolist(),
        "record_grad_norm": t.record_grad_norm,
        "query_views": _query_views(t, ds),
    }


def _query_views(t: TrainConfig, ds: data.Dataset) -> int:
    """K, the views of ``train.queries`` on this data (refused early if it cannot take them)."""
    check_queries(t.queries, ds.input_shape)
    return num_views(t.queries, ds.input_shape)


def _masks_fn(cfg: StudyConfig, n: int):
    return lambda rows: subsets.sample(
        n, cfg.replicas, cfg.ratio, cfg.seed, cfg.design, replica_ids=rows, seeds=cfg.seeds
    )


class StudyTooLargeError(SizeError):
    """A new study's estimated size exceeds what this machine can hold or generate."""


@dataclass(frozen=True)
class SizeEstimate:
    """What a study will cost, computed from its config before anything is created.

    ``disk_bytes``: every stored array uncompressed (an upper bound: zarr compresses);
    ``replica_device_bytes``: one replica's training working set (memjax.train's memory model);
    ``mask_cells``: replicas x training examples, the subset-mask generation work.
    """

    replicas: int
    n_train: int
    disk_bytes: int
    disk_free_bytes: int | None  # None: an object store, no limit can be read
    replica_device_bytes: int
    device_available_bytes: int
    mask_cells: int

    def problems(self) -> list[str]:
        """One sentence per limit exceeded (empty if the study fits)."""
        out = []
        if self.disk_free_bytes is not None and self.disk_bytes > self.disk_free_bytes:
            out.append(
                f"its arrays take up to {_size(self.disk_bytes)} on disk ({self.replicas} "
                f"replicas x {_size(self.disk_bytes // self.replicas)}) but "
                f"{_size(self.disk_free_bytes)} are free"
            )
        if self.replica_device_bytes > self.device_available_bytes:
            out.append(
                f"one replica needs about {_size(self.replica_device_bytes)} of device memory "
                f"but {_size(self.device_available_bytes)} are available"
            )
        if self.mask_cells > MAX_MASK_CELLS:
            out.append(
                f"its subset masks have {self.replicas} x {self.n_train} = "
                f"{self.mask_cells:.3g} cells to generate (limit {MAX_MASK_CELLS:.0e})"
            )
        return out


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def estimate_size(cfg: StudyConfig, ds: data.Dataset, out: str) -> SizeEstimate:
    """Bytes on disk, per-replica device memory and mask work of ``cfg`` stored at ``out``."""
    shape = {
        "replicas": cfg.replicas,
        "n_train": ds.n_train,
        "n_test": ds.n_test,
        "chunk_size": 1,
        "record_epochs": cfg.train.recorded_epochs().tolist(),
        "record_grad_norm": cfg.train.record_grad_norm,
        "query_views": _query_views(cfg.train, ds),
    }
    disk = sum(
        math.prod(dims) * np.dtype(dtype).itemsize for dims, dtype, _ in array_specs(shape).values()
    )
    return SizeEstimate(
        replicas=cfg.replicas,
        n_train=ds.n_train,
        disk_bytes=disk,
        disk_free_bytes=locate(out).free_bytes(),
        replica_device_bytes=replica_bytes(cfg.model, ds, cfg.train),
        device_available_bytes=available_memory_bytes(),
        mask_cells=cfg.replicas * ds.n_train,
    )


def check_size(cfg: StudyConfig, ds: data.Dataset, out: str) -> SizeEstimate:
    """Refuse (StudyTooLargeError, naming the numbers) a study this machine cannot hold."""
    size = estimate_size(cfg, ds, out)
    problems = size.problems()
    if problems:
        raise StudyTooLargeError(
            f"study {cfg.name!r} at {out} is too large: "
            + "; ".join(problems)
            + ". Nothing was written. Reduce subsets.replicas or the model, or pass "
            "--allow-large (run_study(..., allow_large=True)) to start it anyway"
        )
    return size


def check_study(cfg: StudyConfig, ds: data.Dataset) -> None:
    """Every refusal that training ``cfg`` on ``ds`` would make (DP or linearization with
    BatchNorm, augmentation or query views on data that are not images, a model that does
    not take the data's input shape), made before a study directory is created: a refused
    config writes nothing, and the corrected one then starts in the same directory."""
    check_training(cfg.model, ds, cfg.train)
    check_queries(cfg.train.queries, ds.input_shape)
    parameter_count(cfg.model, ds)  # traces the model's init on this input shape


def default_chunk_size(cfg: StudyConfig, ds: data.Dataset) -> int:
    """Replicas per stored chunk: the config's, else as many as fit in device memory."""
    return cfg.chunk_size or min(
        MAX_CHUNK, choose_chunk_size(cfg.model, ds, cfg.train, cfg.replicas)
    )


def open_or_create(
    cfg: StudyConfig,
    out: str,
    ds: data.Dataset | None = None,
    jobs: int = 1,
    allow_large: bool = False,
    job_offset: int = 0,
) -> Store:
    """The study's store at ``out``: created on first use (recording that ``jobs`` jobs share
    its chunks, with ``job_offset`` for a family member: see ``job_chunks``), checked against
    cfg afterwards. A new study's size is checked first (``check_size``, skipped if
    ``allow_large``)."""
    ds = build_dataset(cfg.dataset) if ds is None else ds
    check_study(cfg, ds)
    make_masks = _masks_fn(cfg, ds.n_train)
    if locate(out).exists(META):
        existing = open_store(out)
        chunk = existing.chunk_size
        max_subset = int(existing.meta["max_subset_size"])
        budget = existing.meta.get("dp")
    else:
        if not allow_large:
            check_size(cfg, ds, out)
        chunk = default_chunk_size(cfg, ds)
        sizes = np.concatenate(
            [
                make_masks(np.arange(s, min(s + chunk, cfg.replicas))).sum(1)
                for s in range(0, cfg.replicas, chunk)
            ]
        )
        max_subset = int(sizes.max())
        budget = None if cfg.train.dp is None else study_budget(cfg.train, sizes, ds.n_train)
    return create_or_open(out, _meta(cfg, ds, chunk, max_subset, jobs, job_offset, budget))


def check_writable(path: str) -> None:
    """Fail (OSError naming the directory) if the study cannot be written: a read-only
    filesystem, missing permission, or a probe file that cannot be created and synced in
    the study directory (on an object store: a probe object that cannot be put and removed).
    Called before a chunk is trained, so nothing is trained in vain."""
    loc = locate(path)
    if not loc.local:
        probe = f".writable-{socket.gethostname()}-{os.getpid()}"
        with uncut():
            loc.write_text(probe, "x")
            loc.remove(probe)
        return
    path = loc.root
    for sub in ("arrays.zarr", "done"):
        directory = os.path.join(path, sub)
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), directory)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), directory)
    with uncut():  # a stop signal waits until the probe is gone
        fd, probe = tempfile.mkstemp(dir=path, prefix=".writable-")
        try:
            os.write(fd, b"x")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.remove(probe)


def study_status(store: Store) -> dict[str, Any]:
    """What ``memjax status`` reports for one study: progress counted from valid markers of
    chunks whose files exist and that this study wrote, and what else lies in ``done/``."""
    scan = store.scan_done()
    damaged = store.damaged_chunks(sorted(scan.valid))
    foreign = store.foreign_chunks(scan)
    finished = [k for k in sorted(scan.valid) if k not in damaged and k not in foreign]
    return {
        "study": store.meta.get("name"),
        "dataset": store.meta.get("dataset_name"),
        "replicas_finished": sum(len(store.chunk_rows(k)) for k in finished),
        "replicas_planned": store.replicas,
        "chunks_finished": len(finished),
        "chunks_planned": store.n_chunks,
        "complete": len(finished) == store.n_chunks,
        "jobs": store.jobs,
        "chunks_missing_files": sorted(damaged),
        "chunks_of_another_study": foreign,
        "invalid_markers": scan.invalid,
        "stray_files": scan.stray,
        "memjax_version": store.meta.get("memjax_version"),
        **study_progress(store, finished),
    }


def check_finished_files(store: Store) -> None:
    """Refuse (CorruptChunkError) a study whose finished chunks lack files or were written
    by another study (ForeignChunkError): resuming would otherwise count them as done."""
    scan = store.scan_done()
    store.check_markers(scan)
    damaged = store.damaged_chunks(sorted(scan.valid))
    if damaged:
        k = min(damaged)
        raise CorruptChunkError(
            store.path,
            sorted(damaged),
            f"finished chunks {sorted(damaged)[:8]} lack files (chunk {k}: {damaged[k][0]} "
            "is missing)",
        )


def run_study(
    cfg: StudyConfig,
    out: str,
    *,
    job: int = 0,
    jobs: int = 1,
    progress: bool = True,
    max_chunks: int | None = None,
    allow_large: bool = False,
    job_offset: int = 0,
) -> Store:
    """Train every unfinished chunk assigned to this job (``job_chunks``: chunks job,
    job+jobs, ... of a study of its own; a family member's are shifted by ``job_offset``).

    The partition is the study's: fixed by the job that created it (``jobs`` and
    ``job_offset`` recorded in the store) so that jobs started with different counts cannot
    each skip the other's chunks; a different partition is refused. Finished chunks whose
    files are gone are refused too (they would otherwise count as done). The study
    directory's writability is checked before each chunk is trained; a new study's size
    before it is created (``check_size``, skipped if ``allow_large``). ``progress`` shows a bar
    that advances every epoch; the job's heartbeat and chunk timings are written either way
    (memjax.study's progress).
    """
    if not 0 <= job < jobs:
        raise ConfigError(f"job index {job} must be in [0, {jobs})")
    ds = build_dataset(cfg.dataset)
    store = open_or_create(cfg, out, ds, jobs, allow_large, job_offset)
    if store.jobs != jobs:
        raise JobPartitionError(
            f"{out} is shared by {store.jobs} jobs (recorded when it was created; chunk k "
            f"belongs to job k mod {store.jobs}) but this run has --jobs {jobs}: run every job "
            f"of this study with --jobs {store.jobs} (--job 0 .. {store.jobs - 1})"
        )
    recorded_offset = int(store.meta.get("job_offset", 0))
    if jobs > 1 and recorded_offset != job_offset:
        raise JobPartitionError(
            f"{out} splits its chunks among jobs from offset {recorded_offset} (chunk k "
            f"belongs to job (k + {recorded_offset}) mod {jobs}) but this run asks for offset "
            f"{job_offset}: run a family member through its family (`memjax run FAMILY.yaml`)"
        )
    check_finished_files(store)
    todo = unfinished_chunks(store, job, jobs)
    if max_chunks is not None:
        todo = todo[:max_chunks]
    if not todo:  # nothing to train: the study directory is left untouched
        return store
    tracker = JobProgress(
        store.path,
        job,
        jobs,
        replicas=sum(len(store.chunk_rows(k)) for k in todo),
        epochs=cfg.train.epochs,
        bar=progress,
        desc=f"{cfg.name} ({len(jax.local_devices())} {jax.default_backend()} device(s))",
    )
    with tracker:
        for k in todo:
            train_chunk(cfg, ds, store, k, tracker)
    return store


def train_chunk(cfg: StudyConfig, ds: data.Dataset, store: Store, k: int, tracker: JobProgress):
    """Train chunk k of ``store`` and write it with its done marker.

    What is written is a pure function of (config, seed, replica ids): the replicas' masks
    come from the subset design and their initializations and batch orders from
    (seed, replica id) alone, so a retried or duplicated run of chunk k writes the same
    bytes (any executor may run a chunk more than once). A chunk another run has marked
    meanwhile is skipped, before training or before writing: the first marker stays.
    """
    if store.is_done(k):
        return
    check_writable(store.path)
    rows = store.chunk_rows(k)
    tracker.start_chunk(k, len(rows))
    outputs = train_replicas(
        cfg.model,
        ds,
        store.masks(rows),
        cfg.train,
        seed=cfg.seed,
        replica_ids=rows,
        max_subset_size=int(store.meta["max_subset_size"]),
        pad_to=store.chunk_size,
        progress=tracker,
    )
    check_finite(outputs, cfg.train, k)
    if not store.is_done(k):
        store.write_chunk(k, outputs)
    tracker.finish_chunk()


class NonFiniteTrainingError(ConfigError):
    """Training diverged or read non-finite data: its outputs are refused, never stored."""


def check_finite(outputs: ReplicaOutputs, t: TrainConfig, k: int) -> None:
    """Refuse (NonFiniteTrainingError, naming the first replica and the epoch) chunk k's
    outputs if any loss or margin is NaN or inf: every estimate built on them would be
    silently wrong (NaN margins count as misclassified), so such a chunk is never marked
    finished. The epoch is the first recorded one (``record_every``) that is non-finite, else
    the last."""
    fields = ("train_margin", "train_loss", "test_margin", "test_loss", "traj_margin", "traj_loss")
    bad = np.zeros(len(outputs.replica_ids), bool)
    for name in (*fields, *VIEW_FIELDS):
        value = getattr(outputs, name, None)
        if value is not None:
            bad |= ~np.isfinite(value.reshape(len(bad), -1)).all(axis=1)
    if not bad.any():
        return
    row = int(np.argmax(bad))
    epoch = f"by epoch {t.epochs} (the end of training)"
    if outputs.traj_loss is not None:
        traj = np.concatenate([outputs.traj_loss[row], outputs.traj_margin[row]], axis=1)
        first = np.flatnonzero(~np.isfinite(traj).all(axis=1))
        if len(first):
            epoch = f"at recorded epoch {int(outputs.record_epochs[first[0]])}"
    others = int(bad.sum()) - 1
    raise NonFiniteTrainingError(
        f"replica {int(outputs.replica_ids[row])}"
        + (f" (and {others} other replica(s) of chunk {k})" if others else f" (chunk {k})")
        + f" trained to non-finite losses or margins {epoch}: train.learning_rate "
        f"{t.learning_rate:g} is likely too high for this model, or the data hold NaN or inf "
        "values; the chunk was not stored (lower the learning rate and re-run)"
    )
