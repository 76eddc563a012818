"""Where a study lives: a local directory or a URL (s3://, gs://, memory://, file://).

A ``Location`` is the few storage operations a study needs, named by paths relative to the
study (``"done/chunk-000003"``), with one durability discipline per kind of storage:

- a local directory (a plain path or ``file://``): files are written to a temporary file,
  fsynced and renamed into place, and the directories that gained an entry are fsynced, so a
  reader sees the old or the new file and a power cut loses neither;
- an object store (through fsspec: ``s3fs`` for ``s3://``, ``gcsfs`` for ``gs://``): an
  object appears whole or not at all once its single PUT is acknowledged, so a write is one
  PUT and there is nothing to sync or rename.

zarr reads and writes the arrays through ``zarr_store`` (a ``LocalStore`` or an
``FsspecStore``). Endpoint and credentials of object stores come from their clients'
standard environment variables (for S3-compatible stores ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``); listings are never cached, because other
workers add markers while this one runs.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from memjax.errors import ConfigError

__all__ = [
    "Location",
    "PathEscapeError",
    "is_url",
    "locate",
    "atomic_write_text",
    "service_errors",
    "TMP_PREFIX",
]

# Temporary files of atomic writes; one left behind was cut short by a kill.
TMP_PREFIX = ".tmp-"
# fsspec protocol -> the package that provides it (the memjax extra that installs it).
EXTRAS = {"s3": "s3fs (pip install 'memjax[s3]')", "gs": "gcsfs (pip install 'memjax[gcs]')"}
EXTRAS["gcs"] = EXTRAS["gs"]


class PathEscapeError(ConfigError):
    """A path a study or family names leads outside it (``..``, an absolute path, a symbolic
    link out): refused before anything is read or written through it, so a directory from
    someone else cannot make memjax touch another study."""


def service_errors() -> tuple[type[BaseException], ...]:
    """The error types of the object-store clients loaded so far (botocore's, google-auth's):
    no credentials, an endpoint that does not answer. They are the service refusing, which
    the clients raise as neither OSError nor ValueError."""
    found: list[type[BaseException]] = []
    if "botocore" in sys.modules:
        from botocore.exceptions import BotoCoreError

        found.append(BotoCoreError)
    if "google.auth" in sys.modules:
        from google.auth.exceptions import GoogleAuthError

        found.append(GoogleAuthError)
    return tuple(found)


def is_url(path: str) -> bool:
    """Whether ``path`` names a location by URL (``scheme://...``) rather than a local path."""
    scheme, sep, _ = str(path).partition("://")
    return bool(sep) and scheme.isidentifier()


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX)
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync(directory)


def atomic_write_text(path: str, text: str) -> None:
    """Write a local file via a temporary file, fsync, rename: readers see the old or the new
    file only. The file gets the permissions an ordinary open() would (0666 less the umask),
    not mkstemp's 0600."""
    _atomic_write(path, text.encode())


def fsync_files(files: list[str], top: str) -> None:
    """fsync each local file, then every directory from its parent up to ``top`` (inclusive),
    so newly created files and directories survive a power cut (not the whole machine's
    cache)."""
    top = os.path.abspath(top)
    dirs: set[str] = set()
    for path in files:
        path = os.path.abspath(path)
        _fsync(path)
        d = os.path.dirname(path)
        while d not in dirs and os.path.commonpath([d, top]) == top:
            dirs.add(d)
            d = os.path.dirname(d)
    for d in sorted(dirs, key=len, reverse=True):  # children before parents
        _fsync(d)


def fsync_tree(top: str) -> None:
    """fsync every file and directory under the local directory ``top`` (children first)."""
    for d, _, names in os.walk(top, topdown=False):
        for name in names:
            _fsync(os.path.join(d, name))
        _fsync(d)


@dataclass(frozen=True)
class Location:
    """A study's root: ``url`` as the user gave it (a URL normalized by ``locate``; shown in
    messages); ``root`` the local directory or the object store's path (bucket/prefix) below
    ``protocol``."""

    url: str
    protocol: str  # "" for a local directory
    root: str

    @property
    def local(self) -> bool:
        return not self.protocol

    @cached_property
    def fs(self) -> Any:
        """The fsspec filesystem of an object store (never used for local directories)."""
        import fsspec

        try:
            return fsspec.filesystem(self.protocol, use_listings_cache=False)
        except ImportError as err:
            need = EXTRAS.get(self.protocol, f"the fsspec implementation of {self.protocol}://")
            raise ImportError(f"{self.url}: this URL needs {need}") from err

    def path(self, rel: str = "") -> str:
        """The local path, or the object store path, of ``rel`` below the root."""
        if not rel:
            return self.root
        return os.path.join(self.root, rel) if self.local else posixpath.join(self.root, rel)

    def show(self, rel: str = "") -> str:
        """``rel`` as a user would name it (the URL or path they gave, joined)."""
        return posixpath.join(self.url, rel) if rel else self.url

    def child(self, rel: str) -> Location:
        """The location ``rel`` below this one (a family's member study)."""
        return Location(self.show(rel), self.protocol, self.path(rel))

    # ---- reading -----------------------------------------------------------------------

    def exists(self, rel: str = "") -> bool:
        return os.path.exists(self.path(rel)) if self.local else self.fs.exists(self.path(rel))

    def isfile(self, rel: str) -> bool:
        return os.path.isfile(self.path(rel)) if self.local else self.fs.isfile(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        """The content of ``rel``; FileNotFoundError if there is none."""
        if self.local:
            with open(self.path(rel), "rb") as fh:
                return fh.read()
        return self.fs.cat_file(self.path(rel))

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def listdir(self, rel: str = "") -> list[str]:
        """Names directly below ``rel`` (files and directories; none if it does not exist)."""
        if self.local:
            path = self.path(rel)
            return sorted(os.listdir(path)) if os.path.isdir(path) else []
        try:
            entries = self.fs.ls(self.path(rel), detail=False)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    def escapes(self, rel: str) -> str | None:
        """Where ``rel`` really leads (``..`` and symbolic links resolved) if that is outside
        the root, else None (always None on an object store, which has no links)."""
        if not self.local:
            return None
        root, real = os.path.realpath(self.root), os.path.realpath(self.path(rel))
        return None if os.path.commonpath([root, real]) == root else real

    def links_out(self) -> list[tuple[str, str]]:
        """(entry, target) for every symbolic link below the root that leads outside it,
        found without following any link."""
        if not self.local:
            return []
        found = []
        for d, dirs, names in os.walk(self.root):
            for name in sorted(dirs + names):
                rel = os.path.relpath(os.path.join(d, name), self.root)
                target = self.escapes(rel) if os.path.islink(self.path(rel)) else None
                if target is not None:
                    found.append((rel, target))
        return found

    def files(self, rel: str) -> set[str]:
        """Every file below ``rel``, as paths relative to the root (one listing)."""
        top = self.path(rel)
        if self.local:
            return {
                os.path.relpath(os.path.join(d, n), self.root)
                for d, _, names in os.walk(top, followlinks=True)
                for n in names
            }
        prefix = self.root.rstrip("/") + "/"
        return {p[len(prefix) :] for p in self.fs.find(top) if p.startswith(prefix)}

    # ---- writing -----------------------------------------------------------------------

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` atomically: readers see the old or the new content, never a mix
        (local: temporary file, fsync, rename, parent directories created; object store:
        one PUT)."""
        if self.local:
            os.makedirs(os.path.dirname(self.path(rel)) or ".", exist_ok=True)
            _atomic_write(self.path(rel), data)
        else:
            self.fs.pipe_file(self.path(rel), data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode())

    def remove(self, rel: str) -> None:
        """Remove the file ``rel`` durably (local: its directory is fsynced)."""
        if self.local:
            os.remove(self.path(rel))
            _fsync(os.path.dirname(self.path(rel)))
        else:
            self.fs.rm_file(self.path(rel))

    def remove_tree(self, rel: str = "") -> None:
        """Remove everything below ``rel`` (nothing if it does not exist)."""
        if self.local:
            shutil.rmtree(self.path(rel), ignore_errors=True)
        elif self.fs.exists(self.path(rel)):
            self.fs.rm(self.path(rel), recursive=True)

    def sync(self, files: list[str], top: str) -> None:
        """Make the files ``files`` (relative) durable, with the directories from theirs up to
        ``top``; on an object store an acknowledged PUT already is."""
        if self.local:
            fsync_files([self.path(f) for f in files], self.path(top))

    def sync_tree(self, rel: str) -> None:
        if self.local:
            fsync_tree(self.path(rel))

    def zarr_store(self, rel: str, read_only: bool) -> Any:
        """What ``zarr.open_group`` opens ``rel`` through: the local path, or an FsspecStore
        over the object store (listings uncached)."""
        if self.local:
            return self.path(rel)
        from zarr.storage import FsspecStore

        self.fs  # noqa: B018 (a missing fsspec implementation is named here, not deep in zarr)
        options = {"use_listings_cache": False}
        return FsspecStore.from_url(self.show(rel), storage_options=options, read_only=read_only)

    def free_bytes(self) -> int | None:
        """Free bytes of the filesystem that will hold the root (its nearest existing
        ancestor); None for an object store (no such limit can be read)."""
        if not self.local:
            return None
        path = os.path.abspath(self.root)
        while not os.path.exists(path):
            path = os.path.dirname(path)
        return shutil.disk_usage(path).free


# S3 bucket naming rules: 3-63 characters of lowercase letters, digits, dots and hyphens,
# a letter or digit at each end, no two adjacent dots, not an IPv4 address, none of the
# reserved prefixes and suffixes.
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3_RESERVED = (("xn--", "sthree-", "amzn-s3-demo-"), ("-s3alias", "--ol-s3", ".mrap", "--x-s3"))


def _s3_bucket_problem(bucket: str) -> str | None:
    """Why ``bucket`` breaks S3's naming rules, or None: such a name is refused as invalid
    here, where the service would report it as a missing bucket."""
    if not _S3_BUCKET.fullmatch(bucket):
        return "3-63 lowercase letters, digits, dots or hyphens, a letter or digit at each end"
    if ".." in bucket:
        return "no two adjacent dots"
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket):
        return "not an IP address"
    prefixes, suffixes = _S3_RESERVED
    if bucket.startswith(prefixes) or bucket.endswith(suffixes):
        return "no reserved prefix or suffix"
    return None


def locate(path: str | Location) -> Location:
    """The location a study path or URL names (``file://`` URLs are local directories).

    A URL is normalized once here: its scheme lowercased, empty path segments and trailing
    slashes dropped (``S3://bucket//study/`` is ``s3://bucket/study``), because the object
    store's listings return normalized keys, and markers written below ``bucket//study``
    would never be listed. An S3 bucket name that breaks S3's naming rules is a ValueError.
    """
    if isinstance(path, Location):
        return path
    path = str(path)
    if not is_url(path):
        return Location(path, "", path)
    scheme, _, rest = path.partition("://")
    protocol = scheme.lower()
    if protocol == "file":
        return Location(path, "", rest or "/")
    root = "/".join(part for part in rest.split("/") if part)
    if protocol == "s3":
        bucket = root.partition("/")[0]
        problem = _s3_bucket_problem(bucket)
        if problem:
            raise ConfigError(f"{path}: invalid S3 bucket name {bucket!r} ({problem})")
    url = f"{protocol}://{root}"
    if protocol == "gcs":
        protocol = "gs"
    if protocol == "memory":
        root = "/" + root
    return Location(url, protocol, root)
