"""A bounded, least-recently-used cache of compiled programs.

Why bounded: every XLA:CPU executable keeps a few memory mappings of generated code alive, so a
long-lived process (a Ray worker, a notebook, a test suite) that trains many differently shaped
studies would otherwise reach the kernel's per-process limit (``vm.max_map_count``, 65530 by
default) and crash inside XLA. Evicting a program drops the last reference to its jitted
function, and with it JAX's executables for that function.

The bound is ``MEMJAX_PROGRAM_CACHE_SIZE`` (default 32) at import, or ``resize(n)`` at run time.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Hashable, Iterator

from memjax.errors import ConfigError

__all__ = ["DEFAULT_SIZE", "ProgramCache"]

DEFAULT_SIZE = 32


def _size_from_environment() -> int:
    raw = os.environ.get("MEMJAX_PROGRAM_CACHE_SIZE")
    if raw is None:
        return DEFAULT_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < 1:
        raise ConfigError(f"MEMJAX_PROGRAM_CACHE_SIZE must be a positive integer, got {raw!r}")
    return size


class ProgramCache:
    """Programs by key; a hit moves the key to the newest end, an insert past ``maxsize``
    evicts from the oldest end."""

    def __init__(self, maxsize: int | None = None):
        self._programs: collections.OrderedDict[Hashable, Callable] = collections.OrderedDict()
        self.maxsize = _size_from_environment() if maxsize is None else self._checked(maxsize)

    @staticmethod
    def _checked(maxsize: int) -> int:
        if not isinstance(maxsize, int) or isinstance(maxsize, bool) or maxsize < 1:
            raise ConfigError(f"program cache size must be a positive integer, got {maxsize!r}")
        return maxsize

    def get(self, key: Hashable) -> Callable | None:
        """The program under ``key`` (now the most recently used), or None."""
        program = self._programs.get(key)
        if program is not None:
            self._programs.move_to_end(key)
        return program

    def put(self, key: Hashable, program: Callable) -> Callable:
        """Store ``program`` as the most recently used, evicting past the bound; returns it."""
        self._programs[key] = program
        self._programs.move_to_end(key)
        self._evict()
        return program

    def resize(self, maxsize: int) -> None:
        """Change the bound; shrinking evicts the oldest programs at once."""
        self.maxsize = self._checked(maxsize)
        self._evict()

    def clear(self) -> None:
        self._programs.clear()

    def __iter__(self) -> Iterator[Hashable]:
        """Keys from least to most recently used."""
        return iter(list(self._programs))

    def __len__(self) -> int:
        return len(self._programs)

    def _evict(self) -> None:
        while len(self._programs) > self.maxsize:
            self._programs.popitem(last=False)
