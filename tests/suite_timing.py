"""The suite's own cost accounting: per-test wall time, the part of it spent compiling, and
JAX's persistent compilation cache shared by the whole run (pytest plugin, loaded by conftest).

Why: the suite is compile-bound on 2 cores. Every test's wall time and the seconds JAX spent
tracing, lowering and compiling inside it (``jax.monitoring`` duration events) are written as
JSON lines, one file per process, so a run under pytest-xdist merges them; the terminal summary
prints the costliest tests with both figures and the persistent cache's hit rate.

A program compiled in one module is loaded from the cache, not compiled again, after
conftest's per-module ``jax.clear_caches()``.

Environment:
  MEMJAX_TEST_COMPILATION_CACHE  a directory for the persistent cache, ``off`` to disable it;
                                 unset: a fresh temporary directory, removed at the end of the
                                 run (so a fresh clone never depends on an earlier run)
  MEMJAX_TEST_TIMINGS            a directory for the JSON lines (default: a temporary one)
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import jax
import jax.monitoring
import pytest

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_CACHE_EVENTS = (
    "/jax/compilation_cache/compile_requests_use_cache",
    "/jax/compilation_cache/cache_hits",
)
_CACHE_VAR = "MEMJAX_TEST_COMPILATION_CACHE"
_TIMINGS_VAR = "MEMJAX_TEST_TIMINGS"

_compile_s: collections.Counter[str] = collections.Counter()
_events: collections.Counter[str] = collections.Counter()


def _on_duration(event: str, seconds: float, **_: object) -> None:
    if event in _COMPILE_EVENTS:
        _compile_s[event] += seconds


def _on_event(event: str, **_: object) -> None:
    if event in _CACHE_EVENTS:
        _events[event] += 1


def _temporary(prefix: str) -> str:
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return path


def pytest_configure(config: pytest.Config) -> None:
    """Runs in the controller first: directories chosen there are inherited by xdist workers
    (they start after it), so all processes share one timings folder and one cache folder,
    in which each worker keeps a cache of its own."""
    if os.environ.get(_CACHE_VAR) is None:
        os.environ[_CACHE_VAR] = _temporary("memjax-jax-cache-")
    if os.environ.get(_TIMINGS_VAR) is None:
        os.environ[_TIMINGS_VAR] = _temporary("memjax-test-timings-")
    Path(os.environ[_TIMINGS_VAR]).mkdir(parents=True, exist_ok=True)
    cache = os.environ[_CACHE_VAR]
    if cache != "off":
        # This process only: JAX writes a cache entry in place (not atomically), so processes
        # that tests kill mid-run or run side by side (the CLI under signals, two jobs on one
        # study, Ray workers, the two xdist workers) would leave or read truncated entries:
        # each xdist worker has its own. A child pytest (the private-network tests) shares its
        # worker's directory while that worker waits for it.
        own = Path(cache, os.environ.get("PYTEST_XDIST_WORKER", ""))
        own.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(own))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.monitoring.register_event_duration_secs_listener(_on_duration)
    jax.monitoring.register_event_listener(_on_event)


def _record(row: dict) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(Path(os.environ[_TIMINGS_VAR]) / f"{worker}-{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Times setup, call and teardown together: a session fixture's training is charged to the
    first test that asks for it, a module's cache release to its last test."""
    compile_before = sum(_compile_s.values())
    events_before = dict(_events)
    start = time.perf_counter()
    yield
    _record(
        {
            "test": item.nodeid,
            "wall_s": time.perf_counter() - start,
            "compile_s": sum(_compile_s.values()) - compile_before,
            "cache_requests": _events[_CACHE_EVENTS[0]] - events_before.get(_CACHE_EVENTS[0], 0),
            "cache_hits": _events[_CACHE_EVENTS[1]] - events_before.get(_CACHE_EVENTS[1], 0),
        }
    )


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    rows = []
    for path in Path(os.environ[_TIMINGS_VAR]).glob("*.jsonl"):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line]
    if not rows:
        return
    # A test run again in a child pytest (tests/private_network.py) is recorded by both
    # processes: the parent's wall time holds the child's, the compilation happened in the child.
    merged: dict[str, dict] = {}
    for r in rows:
        m = merged.setdefault(
            r["test"], dict(r, wall_s=0.0, compile_s=0.0, cache_requests=0, cache_hits=0)
        )
        m["wall_s"] = max(m["wall_s"], r["wall_s"])
        for key in ("compile_s", "cache_requests", "cache_hits"):
            m[key] += r[key]
    rows = list(merged.values())
    rows.sort(key=lambda r: -r["wall_s"])
    tr = terminalreporter
    tr.write_sep("=", "costliest tests: wall and compile seconds")
    for r in rows[:30]:
        tr.write_line(f"{r['wall_s']:8.1f} {r['compile_s']:8.1f}  {r['test']}")
    wall = sum(r["wall_s"] for r in rows)
    comp = sum(r["compile_s"] for r in rows)
    requests = sum(r["cache_requests"] for r in rows)
    hits = sum(r["cache_hits"] for r in rows)
    tr.write_line(
        f"{len(rows)} tests: {wall:.0f} s in tests, {comp:.0f} s of it tracing, lowering and "
        f"compiling; persistent cache: {hits} hits of {requests} lookups"
        + (f" ({hits / requests:.0%})" if requests else "")
    )
    if out := os.environ.get("MEMJAX_TEST_TIMINGS_OUT"):
        Path(out).write_text("".join(json.dumps(r) + "\n" for r in rows))
