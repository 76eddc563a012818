"""Shared fixtures: datasets are loaded once per session because generating them costs seconds."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np
import pytest

import memjax as mj

pytest_plugins = ["tests.suite_timing"]

# Like the `memjax` command: one CPU device per core, so trainer tests shard their replicas.
mj.use_cpu_cores()


# Compile with XLA's backend optimizations off, except in tests marked ``optimized``.
#
# Half the suite's time is XLA:CPU compiling programs that then run for milliseconds, and
# LLVM's optimization passes are most of a compile (a ResNet test: 69 s to 26 s without
# them). The programs' operations, shapes and dtypes are unchanged: the tests check what they
# compute, and speed is measured by `memjax bench` and `memjax plan`, never here. It is the
# whole run's default (set here, before any fixture trains), so module and session fixtures
# and the tests that compare with them compile alike; subprocesses (CLI runs, Ray workers)
# inherit it through JAX's environment variable, so results computed here and there come
# from the same code and compare bit for bit. MEMJAX_TEST_XLA_OPTIMIZE=all optimizes every
# test (a release check).
_OPTIMIZE_ALL = os.environ.get("MEMJAX_TEST_XLA_OPTIMIZE") == "all"


def _optimize(full: bool) -> None:
    jax.config.update("jax_disable_most_optimizations", not full)
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "0" if full else "1"


_optimize(_OPTIMIZE_ALL)


@pytest.fixture(autouse=True)
def _compile_effort(request):
    """Tests whose running time exceeds their compiling time (long training) are marked
    ``optimized`` and compile, with their subprocesses, as users' programs do."""
    if _OPTIMIZE_ALL or request.node.get_closest_marker("optimized") is None:
        yield
        return
    _optimize(True)
    yield
    _optimize(False)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    Each XLA:CPU executable keeps a few memory mappings of generated code; the suite's ~800
    tests compile enough of them to reach the kernel's per-process limit (vm.max_map_count,
    65530), where the next compilation crashes the process (seen as SIGSEGV/SIGABRT in the
    last test module). Within a module compiled programs are still shared.
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def mnist1d_and_rng_check() -> tuple[mj.data.Dataset, bool]:
    """MNIST-1D, plus whether numpy's global RNG state survived the load (the generator reseeds
    it internally; the loader must restore it)."""
    np.random.seed(12345)
    before = np.random.get_state()
    ds = mj.data.load("mnist1d")
    after = np.random.get_state()
    untouched = all(
        np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
        for a, b in zip(before, after, strict=True)
    )
    return ds, untouched


@pytest.fixture(scope="session")
def mnist1d(mnist1d_and_rng_check) -> mj.data.Dataset:
    return mnist1d_and_rng_check[0]


@pytest.fixture(scope="session")
def digits() -> mj.data.Dataset:
    return mj.data.load("digits")


def blobs(
    n_train: int, n_test: int, dim: int, num_classes: int, seed: int = 0, spread: float = 1.0
) -> mj.data.Dataset:
    """A small, learnable Gaussian-blob classification problem built through from_arrays."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((num_classes, dim)) * 2.0

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, num_classes, n)
        return centers[y] + spread * rng.standard_normal((n, dim)), y

    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    return mj.data.from_arrays(xtr, ytr, xte, yte, num_classes, name="blobs")


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> str:
    """The directory of ``tests.studies.TINY``, run once per test run: read it, never write
    it (a test that changes a finished study changes a copy)."""
    from memjax.study import StudyConfig, run_study
    from tests.studies import TINY

    out = str(tmp_path_factory.mktemp("tiny-study") / "s")
    run_study(StudyConfig.from_dict(TINY), out, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny() -> mj.data.Dataset:
    """48 train / 20 test examples, 6 features, 3 classes: trains in milliseconds."""
    return blobs(48, 20, 6, 3, seed=0)


def _files_below(path: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(path)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(Path(path).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def file_snapshot() -> Callable[[Path], dict[str, tuple[int, bytes]]]:
    """Every file below a directory -> (modification time, content): equal snapshots before
    and after show that nothing there was written, removed or touched."""
    return _files_below
