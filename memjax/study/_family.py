"""Study families: one config with a sweep over settings, run as member studies.

A family config is a study config plus ``sweep: {dotted.setting: [value, ...], ...}``. Its
members are the cartesian product of the swept values in the order written (the first key
varies slowest): each is an ordinary study in a subdirectory named by its swept values (e.g.
``widths_64-linearize_true``), called ``<family name>-<that>``. ``family.json`` at the top
records the family's config, its members, their chunk sizes and the job partition: the
chunks of all members form one list, member after member, and job j of k trains positions
j, j + k, ... of it, so k jobs split a family of many small members too. Re-running resumes
every member (finished chunks are skipped); a directory holding a different family is
refused with the differing settings named. ``description``, ``command`` and
``expected_runtime`` describe the family and never have to match. A member directory that
``family.json`` records must be one plain name inside the family (never ``..``, an absolute
path or a symbolic link out of it): checked whenever the record is read, before any member
is touched.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from memjax import schema
from memjax._version import __version__
from memjax.errors import ConfigError
from memjax.jsonio import json_text
from memjax.study import _config_file as config_file
from memjax.study._location import PathEscapeError, atomic_write_text, locate
from memjax.study._results import Study, open_study
from memjax.study._runner import (
    ABOUT_KEYS,
    NAME_PATTERN,
    STUDY_KEYS,
    JobPartitionError,
    StudyConfig,
    about_text,
    build_dataset,
    check_size,
    check_study,
    default_chunk_size,
    default_config,
    job_chunks,
    run_study,
    study_from_document,
    study_status,
    unfinished_chunks,
)
from memjax.study._store import META, Store, StoreMismatchError, _diff, merge, open_store

__all__ = [
    "FAMILY_META",
    "Member",
    "FamilyConfig",
    "Family",
    "load",
    "load_family",
    "is_family",
    "open_family",
    "open_or_create_family",
    "run_family",
    "family_status",
    "job_unfinished",
    "merge_families",
    "member_stores",
]

FAMILY_META = "family.json"
FAMILY_FORMAT = 1
MAX_MEMBERS = 10_000
# A swept value appears in member names as written when it is this simple (else its index).
SHOWN_VALUE = re.compile(r"[A-Za-z0-9._+-]{1,40}")
# A member directory as the sweep names it (a setting's name first): one path component,
# never "." or "..", so a family.json cannot point its members elsewhere.
MEMBER_DIR = re.compile(r"[A-Za-z_][A-Za-z0-9._+-]*")


@dataclass(frozen=True)
class Member:
    """One member study: name, subdirectory, swept values (dotted setting -> value), config."""

    name: str
    dir: str
    values: dict[str, Any]
    config: StudyConfig


def _show(value: Any) -> str | None:
    """A swept value as it reads in a member name: 0.1, true, 64x64, digits (None: no way)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, list) and value and not any(isinstance(v, (list, dict)) for v in value):
        parts = [_show(v) for v in value]
        return None if None in parts else "x".join(parts)
    return None


def _shown(values: list[Any]) -> list[str]:
    """Each value's name part: as written if every one is simple and they are distinct,
    else their positions in the list (0, 1, ...)."""
    shown = [_show(v) for v in values]
    simple = all(s is not None and SHOWN_VALUE.fullmatch(s) for s in shown)
    if simple and len(set(shown)) == len(shown):
        return shown
    return [str(i) for i in range(len(values))]


def _labels(keys: list[str]) -> dict[str, str]:
    """A swept setting's name part: its last component, or the whole dotted key if two
    settings share the last component."""
    last = [k.rpartition(".")[2] for k in keys]
    return {k: s if last.count(s) == 1 else k for k, s in zip(keys, last, strict=True)}


def _canonical(value: Any) -> Any:
    """As JSON reads it back (tuples become lists), to compare with a recorded family."""
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class FamilyConfig:
    """A family: the settings its members share, the sweep, and what it is for.

    ``settings`` is a study config document without name, description, command and
    expected_runtime; ``sweep`` maps dotted settings to their values. Every member is built
    and checked by the study schema on construction; an error names the member and setting.
    """

    name: str
    sweep: dict[str, list[Any]]
    settings: dict[str, Any]
    description: str = ""
    command: str = ""
    expected_runtime: str = ""
    members: tuple[Member, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        schema.text(self.name, "name", NAME_PATTERN, "one path component (see a study's name)")
        for key in ABOUT_KEYS:
            about_text(getattr(self, key), key)
        if not isinstance(self.sweep, Mapping) or not self.sweep:
            raise schema.SettingError("sweep", self.sweep, "a mapping of settings to lists")
        size = 1
        for key, values in self.sweep.items():
            where = f"sweep.{key}"
            config_file.setting_parts(key)
            if key.split(".")[0] in ("name", "sweep", "modes", "chunk_size", *ABOUT_KEYS):
                raise schema.SettingError(where, values, "a setting that shapes results")
            if not isinstance(values, list) or not values:
                raise schema.SettingError(where, values, "a non-empty list of values")
            seen = [json.dumps(v, sort_keys=True) for v in values]
            if len(set(seen)) < len(seen):
                raise schema.SettingError(where, values, "a list of distinct values")
            size *= len(values)
        if size > MAX_MEMBERS:
            raise schema.SettingError("sweep", f"{size} members", f"at most {MAX_MEMBERS} members")
        object.__setattr__(self, "sweep", _canonical(dict(self.sweep)))
        object.__setattr__(self, "members", tuple(self._expand()))

    def _expand(self) -> list[Member]:
        keys = list(self.sweep)
        labels = _labels(keys)
        shown = {k: _shown(v) for k, v in self.sweep.items()}
        members = []
        for combo in itertools.product(*(range(len(v)) for v in self.sweep.values())):
            pairs = list(zip(keys, combo, strict=True))
            values = {k: self.sweep[k][i] for k, i in pairs}
            suffix = "-".join(f"{labels[k]}_{shown[k][i]}" for k, i in pairs)
            doc = {**self.settings, "name": f"{self.name}-{suffix}"}
            doc |= {"description": self.description, "command": self.command}
            for key, value in values.items():
                doc = config_file.set_setting(doc, key, value)
            try:
                config = StudyConfig.from_dict(doc)
            except ValueError as err:
                err.args = (f"family member {suffix}: {err}",)
                raise
            members.append(Member(config.name, suffix, values, config))
        return members

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FamilyConfig:
        """From a resolved config document (memjax.study's config files) with ``sweep``."""
        d = schema.section(d, "", (*STUDY_KEYS, "sweep"), required=("sweep",))
        about = {key: d.pop(key) for key in ABOUT_KEYS if key in d}
        return cls(name=d.pop("name", "family"), sweep=d.pop("sweep"), settings=d, **about)

    def about(self) -> dict[str, str]:
        return {key: getattr(self, key) for key in ABOUT_KEYS}

    def document(self) -> dict[str, Any]:
        """The config as a document ``from_dict`` reads back."""
        return _canonical({"name": self.name, **self.about(), **self.settings, "sweep": self.sweep})

    def identity(self) -> dict[str, Any]:
        """What a family directory must match to be resumed or merged: the sweep and every
        member's results-determining settings (not chunk sizes, names or descriptions)."""
        members = {m.dir: m.config.result_dict() for m in self.members}
        return _canonical({"sweep": self.sweep, "members": members})


def load(
    path: str | None, mode: str | None = None, sets: tuple[str, ...] = ()
) -> StudyConfig | FamilyConfig:
    """A study or family config file (the embedded default study if ``path`` is None), with
    mode ``mode`` and ``--set`` overrides applied; a family is one with ``sweep:``."""
    if path is None:
        return default_config(mode, sets)
    try:
        d = config_file.resolve(config_file.read(path), mode, sets)
        return FamilyConfig.from_dict(d) if "sweep" in d else study_from_document(d, path)
    except ValueError as err:
        if not str(err).startswith(f"{path}: "):
            err.args = (f"{path}: {err}",)
        raise


def load_family(path: str, mode: str | None = None, sets: tuple[str, ...] = ()) -> FamilyConfig:
    """A family config file (refused if it declares no sweep)."""
    cfg = load(path, mode, sets)
    if not isinstance(cfg, FamilyConfig):
        raise ConfigError(f"{path}: a study config, not a family (it declares no sweep)")
    return cfg


def is_family(path: str) -> bool:
    return locate(path).exists(FAMILY_META)


def _read_record(path: str) -> dict[str, Any]:
    try:
        record = json.loads(locate(path).read_text(FAMILY_META))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is not a memjax family directory (no {FAMILY_META})"
        ) from None
    except (ValueError, UnicodeDecodeError) as err:
        where = locate(path).show(FAMILY_META)
        raise StoreMismatchError(
            f"{where} is not valid JSON (truncated or damaged: {err})"
        ) from None
    if not isinstance(record, dict):
        raise StoreMismatchError(f"{locate(path).show(FAMILY_META)} is not a JSON object")
    if record.get("family_format") != FAMILY_FORMAT:
        raise StoreMismatchError(
            f"{path}: family format {record.get('family_format')}, this memjax reads "
            f"{FAMILY_FORMAT}"
        )
    members = record.get("members")
    if not isinstance(members, list) or not all(isinstance(m, Mapping) for m in members):
        raise StoreMismatchError(f"{locate(path).show(FAMILY_META)}: 'members' is not a list")
    for rec in members:
        _check_member_dir(path, rec.get("dir"))
    return record


def _check_member_dir(path: str, member: Any) -> None:
    """Refuse (PathEscapeError) a member directory of family.json that is not one plain path
    component inside the family, or that is a symbolic link leading out of it, before
    anything is read or written there."""
    where = locate(path).show(FAMILY_META)
    if not isinstance(member, str) or not MEMBER_DIR.fullmatch(member):
        raise PathEscapeError(
            f"{where}: member directory {member!r} is not one path component inside the "
            "family (letters, digits and . _ + -, as the sweep names members); refusing it"
        )
    target = locate(path).escapes(member)
    if target is not None:
        raise PathEscapeError(
            f"{where}: member directory {member} is a symbolic link to {target}, outside the "
            "family; refusing it (remove the link)"
        )


def _record_identity(record: dict[str, Any]) -> dict[str, Any]:
    members = {m["dir"]: m["config"] for m in record["members"]}
    return {"sweep": record["sweep"], "members": members}


def _check_same_family(path: str, recorded: dict[str, Any], asked: dict[str, Any]) -> None:
    """Refuse (StoreMismatchError naming the differences) another family's directory."""
    differences = _diff({"sweep": recorded["sweep"]}, {"sweep": asked["sweep"]})
    old, new = recorded["members"], asked["members"]
    for d in [d for d in new if d not in old] + [d for d in old if d not in new]:
        differences.append(
            f"member {d} ({'absent' if d not in old else 'present'} vs "
            f"{'absent' if d not in new else 'present'})"
        )
    for d in [d for d in new if d in old]:
        differences += _diff(old[d], new[d], f"member {d}: ")
    if differences:
        raise StoreMismatchError(
            f"{path} already holds a different family; differing settings: "
            + "; ".join(differences[:8])
            + ". Use another --out directory or the original config."
        )


def _plan(cfg: FamilyConfig, out: str, jobs: int, allow_large: bool) -> dict[str, Any]:
    """family.json of a new family: members with chunk sizes and job offsets (fixed here, so
    that every job partitions the same list of chunks whatever machine it runs on)."""
    datasets: dict[str, Any] = {}
    members, offset = [], 0
    for m in cfg.members:
        key = json.dumps(m.config.dataset, sort_keys=True)
        if key not in datasets:
            datasets[key] = build_dataset(m.config.dataset)
        ds = datasets[key]
        check_study(m.config, ds)
        if not allow_large:
            check_size(m.config, ds, os.path.join(out, m.dir))
        chunk = default_chunk_size(m.config, ds)
        chunks = -(-m.config.replicas // chunk)
        members.append(
            {
                "name": m.name,
                "dir": m.dir,
                "values": m.values,
                "config": m.config.result_dict(),
                "chunk_size": chunk,
                "chunks": chunks,
                "job_offset": offset,
            }
        )
        offset += chunks
    return _canonical(
        {
            "family_format": FAMILY_FORMAT,
            "name": cfg.name,
            "about": cfg.about(),
            "document": cfg.document(),
            "sweep": cfg.sweep,
            "members": members,
            "jobs": jobs,
            "memjax_version": __version__,
        }
    )


def _create_exclusive(path: str, text: str) -> bool:
    """Write ``path`` atomically unless it exists (another job's wins): True if written. On
    an object store (no link) the check and the PUT are two steps: jobs racing there must
    write the same record (the same family config and job count)."""
    directory, name = os.path.split(path)
    loc = locate(directory)
    if not loc.local:
        if loc.exists(name):
            return False
        loc.write_text(name, text)
        return True
    tmp = os.path.join(directory, f".{name}.{socket.gethostname()}-{os.getpid()}")
    atomic_write_text(tmp, text)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(tmp)


def _create_or_check(out: str, make: Callable[[], dict[str, Any]], identity: dict) -> dict:
    """The family record at ``out``, checked against ``identity``; written from ``make()``
    first if ``out`` is empty or missing (when two jobs race, the first one's record wins)."""
    if not is_family(out):
        if locate(out).exists(META):
            raise StoreMismatchError(f"{out} is a study directory, not a family's")
        if locate(out).listdir():
            raise StoreMismatchError(f"{out} exists, is not empty and is not a family directory")
        record = make()
        if locate(out).local:
            os.makedirs(out, exist_ok=True)
        if _create_exclusive(os.path.join(out, FAMILY_META), json_text(record, indent=2)):
            return record
    record = _read_record(out)
    _check_same_family(out, _record_identity(record), identity)
    return record


def open_or_create_family(
    cfg: FamilyConfig, out: str, jobs: int = 1, allow_large: bool = False
) -> dict[str, Any]:
    """The family record at ``out``: written on first use (each member's size checked first
    unless ``allow_large``), checked against ``cfg`` afterwards."""
    return _create_or_check(out, lambda: _plan(cfg, out, jobs, allow_large), cfg.identity())


def run_family(
    cfg: FamilyConfig,
    out: str,
    *,
    job: int = 0,
    jobs: int = 1,
    progress: bool = True,
    max_chunks: int | None = None,
    allow_large: bool = False,
) -> dict[str, Store]:
    """Train this job's unfinished chunks of every member (at most ``max_chunks`` in all);
    returns the stores of the members visited, by member name."""
    if not 0 <= job < jobs:
        raise ConfigError(f"job index {job} must be in [0, {jobs})")
    record = open_or_create_family(cfg, out, jobs, allow_large)
    if record["jobs"] != jobs:
        raise JobPartitionError(
            f"{out} is a family shared by {record['jobs']} jobs (recorded when it was created) "
            f"but this run has --jobs {jobs}: run every job of this family with --jobs "
            f"{record['jobs']} (--job 0 .. {record['jobs'] - 1})"
        )
    stores: dict[str, Store] = {}
    budget = max_chunks
    for member, rec in zip(cfg.members, record["members"], strict=True):
        if budget == 0:
            break
        path = os.path.join(out, rec["dir"])
        left = _member_unfinished(out, rec, job, jobs)
        config = replace(member.config, chunk_size=rec["chunk_size"])
        stores[member.name] = run_study(
            config,
            path,
            job=job,
            jobs=jobs,
            progress=progress,
            max_chunks=budget,
            allow_large=True,  # each member's size was checked when the family was planned
            job_offset=rec["job_offset"],
        )
        if budget is not None:
            budget -= min(budget, len(left))
    return stores


def _member_status(out: str, rec: dict[str, Any]) -> dict[str, Any]:
    path = os.path.join(out, rec["dir"])
    if locate(path).exists(META):
        status = study_status(open_store(path))
    else:
        status = {
            "study": rec["name"],
            "replicas_finished": 0,
            "replicas_planned": rec["config"]["subsets"]["replicas"],
            "chunks_finished": 0,
            "chunks_planned": rec["chunks"],
            "complete": False,
            "started": False,
        }
    return {"member": rec["dir"], "values": rec["values"], **status}


def family_status(out: str) -> dict[str, Any]:
    """What ``memjax status`` reports for a family: totals, then each member's status."""
    record = _read_record(out)
    members = [_member_status(out, rec) for rec in record["members"]]
    counts = ("replicas_finished", "replicas_planned", "chunks_finished", "chunks_planned")
    return {
        "family": record["name"],
        "members_complete": sum(m["complete"] for m in members),
        "members_planned": len(members),
        **{key: sum(m[key] for m in members) for key in counts},
        "complete": all(m["complete"] for m in members),
        "jobs": record["jobs"],
        **_family_eta(members),
        "members": members,
    }


def _family_eta(members: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds until every member is finished: the sum of the members' ETAs (each from its
    own throughput, as members differ in cost), or None while some unfinished member has
    no timing yet (``eta_unknown`` names them)."""
    unknown = [m.get("study") for m in members if not m["complete"] and m.get("eta_s") is None]
    known = sum(m.get("eta_s") or 0.0 for m in members)
    return {"eta_s": None if unknown else known, "eta_unknown": unknown}


def _member_unfinished(out: str, rec: dict[str, Any], job: int, jobs: int) -> list[int]:
    """The chunks of member ``rec`` that job ``job`` owns and has not finished (all it owns
    if the member was never started); a member store chunked otherwise is refused."""
    path = os.path.join(out, rec["dir"])
    if not locate(path).exists(META):
        return job_chunks(rec["chunks"], job, jobs, rec["job_offset"])
    store = open_store(path)
    if store.chunk_size != rec["chunk_size"]:
        raise StoreMismatchError(
            f"{path} has chunk size {store.chunk_size}, its family records {rec['chunk_size']}"
        )
    return unfinished_chunks(store, job, jobs)


def job_unfinished(out: str, job: int, jobs: int) -> dict[str, list[int]]:
    """Member directory -> the chunks job ``job`` of ``jobs`` owns and has not finished."""
    left = {
        rec["dir"]: _member_unfinished(out, rec, job, jobs) for rec in _read_record(out)["members"]
    }
    return {d: chunks for d, chunks in left.items() if chunks}


def member_stores(path: str, every: bool = False) -> list[Store]:
    """The started members' stores of the family at ``path`` in sweep order (``every``: refuse
    if some member was never started), or ``[the study]`` if ``path`` is a study directory."""
    if not is_family(path):
        return [open_store(path)]
    members = [os.path.join(path, rec["dir"]) for rec in _read_record(path)["members"]]
    started = [m for m in members if locate(m).exists(META)]
    if every and len(started) < len(members):
        missing = [os.path.basename(m) for m in members if m not in started]
        raise ConfigError(
            f"{path}: members {missing[:8]} were never started; run the family first (or "
            "pass --partial)"
        )
    return [open_store(m) for m in started]


class Family:
    """A family directory opened for reading: its config and its member studies.

    ``members`` maps each member's name, in sweep order, to (its swept values, its Study);
    every member must have been started (``memjax status`` shows which are finished).
    Members' dataset paths are read below ``data_root`` (see ``open_study``).
    """

    def __init__(self, path: str, *, data_root: str | None = None) -> None:
        self.path = path
        self.data_root = data_root
        self.record = _read_record(path)

    @property
    def name(self) -> str:
        return self.record["name"]

    @cached_property
    def config(self) -> FamilyConfig:
        return FamilyConfig.from_dict(self.record["document"])

    @cached_property
    def members(self) -> dict[str, tuple[dict[str, Any], Study]]:
        missing = [
            rec["dir"]
            for rec in self.record["members"]
            if not locate(self.path).child(rec["dir"]).exists(META)
        ]
        if missing:
            raise FileNotFoundError(
                f"{self.path}: members {missing[:8]} were never started; run the family"
            )
        return {
            rec["name"]: (
                rec["values"],
                open_study(os.path.join(self.path, rec["dir"]), data_root=self.data_root),
            )
            for rec in self.record["members"]
        }

    def __repr__(self) -> str:
        return f"Family({self.path!r}: {len(self.record['members'])} members)"


def open_family(path: str, *, data_root: str | None = None) -> Family:
    """The family at ``path`` (a directory holding family.json), ready to read; members'
    dataset paths are read below ``data_root`` (see ``open_study``)."""
    return Family(path, data_root=data_root)


def merge_families(paths: list[str], out: str) -> dict[str, Any]:
    """Join family directories written by separate jobs, member by member (each member as
    ``memjax.study.merge`` joins studies: verified, overlaps refused). Returns the record."""
    if len(paths) < 2:
        raise ConfigError("merge needs at least two family directories")
    records = [_read_record(p) for p in paths]
    first = records[0]
    for path, record in zip(paths[1:], records[1:], strict=True):
        _check_same_family(path, _record_identity(first), _record_identity(record))
        sizes = [[m["chunk_size"] for m in r["members"]] for r in (first, record)]
        if sizes[0] != sizes[1]:
            raise StoreMismatchError(f"{path} and {paths[0]} chunk their members differently")
    # the merged directory is a new family: no job shares it yet
    _create_or_check(out, lambda: {**first, "jobs": 1}, _record_identity(first))
    for rec in first["members"]:
        sources = [
            os.path.join(p, rec["dir"]) for p in paths if locate(p).child(rec["dir"]).exists(META)
        ]
        if sources:
            merge(sources, os.path.join(out, rec["dir"]))
    return _read_record(out)
