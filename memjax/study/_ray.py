"""Ray executor: a study's unfinished chunks as Ray tasks, for dynamic worker pools (spot
GPUs that vanish, hosts of mixed kinds) where static ``--job i --jobs k`` would leave a lost
worker's chunks to nobody.

The driver creates (or opens) the study, then submits one task per unfinished chunk, each
asking for one GPU where the cluster has GPUs (one CPU otherwise). A task trains its chunk
and writes it straight into the study with its done marker (``memjax.study.train_chunk``);
Ray retries a task whose worker process or node dies (``max_retries``). Done markers stay the
only truth: the driver keeps no state, so a killed driver is simply started again and
submits what is still unfinished.

A chunk's bytes are a pure function of (config, seed, replica ids), so a retried task, or
two tasks of one chunk running at once (two drivers; a static job and a Ray task), write the
same bytes: every data object is replaced whole with identical contents, and a task that
finds the chunk marked skips it. Ray tasks share job 0's heartbeat file, so `memjax status`
shows the latest task's chunk and an ETA as for one worker; chunk timings are per chunk.

memjax must be importable on every node (``pip install memjax[ray]``) and the study's
location reachable from every node: a bucket URL, or a directory all nodes mount.

Nothing waits without limit, and nothing is written before the cluster is known to serve:
the driver connects first, within ``timeout`` seconds (an address where nothing listens
fails at once; without an address it starts Ray on this machine rather than retrying some
other job's cluster recorded on the host), refuses a cluster with no node that has the CPU
(and GPU) a chunk task asks for, and only then opens or creates the study. A task that
fails on bad input (a MemjaxError, a missing file) stops the driver with that
error, as the same input would stop a local run.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import signal
import socket
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import Any

from memjax import data
from memjax.errors import ConfigError, MemjaxError
from memjax.study._location import is_url
from memjax.study._progress import JobProgress
from memjax.study._runner import (
    StudyConfig,
    build_dataset,
    check_finished_files,
    open_or_create,
    train_chunk,
)
from memjax.study._store import Store, open_store

__all__ = ["DEFAULT_RETRIES", "DEFAULT_TIMEOUT_S", "run_study_ray"]

# Retries of a chunk whose worker died (preempted node, OOM kill); errors are not retried.
DEFAULT_RETRIES = 3
# Seconds the driver waits for the cluster to accept it (memjax run --ray-timeout).
DEFAULT_TIMEOUT_S = 45.0
# Errors of a task that say its input is bad: every chunk would fail the same way.
BAD_INPUT = (MemjaxError, FileNotFoundError)


@functools.lru_cache(maxsize=2)
def _dataset(spec: str) -> data.Dataset:
    """A worker process's dataset, built once for the chunks it trains (spec: JSON text)."""
    return build_dataset(json.loads(spec))


def _chunk_task(cfg: StudyConfig, path: str, k: int) -> int:
    """Train and store chunk k of the study at ``path`` (a Ray task body); returns k. A
    chunk found finished (by a duplicate task) is left as it is."""
    from memjax.train import use_cpu_cores

    use_cpu_cores()
    store = open_store(path)
    if store.is_done(k):
        return k
    rows = len(store.chunk_rows(k))
    tracker = JobProgress(store.path, 0, 1, rows, cfg.train.epochs, False, f"chunk {k}")
    with tracker:
        train_chunk(cfg, _dataset(json.dumps(cfg.dataset, sort_keys=True)), store, k, tracker)
    return k


def _location(out: str) -> str:
    """The study's location as every node sees it: URLs as given, directories absolute."""
    return out if is_url(out) else os.path.abspath(out)


def run_study_ray(
    cfg: StudyConfig,
    out: str,
    address: str | None = None,
    allow_large: bool = False,
    *,
    max_retries: int = DEFAULT_RETRIES,
    progress: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> tuple[Store, dict[int, str]]:
    """Train every unfinished chunk of ``cfg``'s study at ``out`` as Ray tasks on the cluster
    at ``address`` ("HOST:PORT", "auto"; None: RAY_ADDRESS, else a new Ray instance on this
    machine alone), connecting within ``timeout`` seconds before anything is written.

    Returns the store and the chunks whose tasks failed (chunk -> error, after Ray's
    retries); a task's bad-input error is raised. Chunks are trained whatever ``--jobs``
    partition the study records.
    """
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--executor ray needs Ray: pip install 'memjax[ray]' on the driver and every node"
        ) from None
    out = _location(out)
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        _connect(ray, address, timeout)
        gpus = _task_gpus([n["Resources"] for n in ray.nodes() if n.get("Alive")], address)
        store = open_or_create(cfg, out, allow_large=allow_large)
        check_finished_files(store)
        done = set(store.done_chunks())
        todo = [k for k in range(store.n_chunks) if k not in done]
        if not todo:
            return store, {}
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=max_retries)
        submit = task(_chunk_task).options(name="memjax-chunk")
        chunk_of = {submit.remote(cfg, out, k): k for k in todo}
        failed = _wait(ray, chunk_of, progress)
    finally:
        ray.shutdown()
    return open_store(out), failed


def _shown(address: str | None) -> str:
    """The cluster as messages name it."""
    return address or "a new Ray instance on this machine"


def _probe(address: str, timeout: float) -> None:
    """Fail at once, naming ``address``, where nothing listens at its HOST:PORT (Ray itself
    would retry for minutes); other forms ("auto", a name) are left to Ray's deadline."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        why = err.strerror or str(err) or "no answer"
        raise ConnectionError(
            err.errno or errno.ETIMEDOUT,
            f"no Ray cluster answers ({why}, within --ray-timeout {timeout:g} s)",
            address,
        ) from None


@contextlib.contextmanager
def _deadline(seconds: float, address: str | None) -> Iterator[None]:
    """Raise TimeoutError, naming the address, if the block runs past ``seconds`` (main
    thread only: SIGALRM interrupts Ray's polling loop there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum: int, _frame: Any) -> None:
        raise TimeoutError(
            errno.ETIMEDOUT,
            f"the Ray cluster did not accept this driver within --ray-timeout {seconds:g} s",
            _shown(address),
        )

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _connect(ray: Any, address: str | None, timeout: float) -> None:
    """ray.init within ``timeout`` seconds (None: Ray started here, never another job's
    cluster found on this host), keeping memjax's SIGTERM handling (Ray's own would raise
    SystemExit) and without JAX's warning about fork (Ray forks only to exec its daemons)."""
    if not 0 < timeout < math.inf:
        raise ConfigError(f"--ray-timeout must be a positive number of seconds, got {timeout:g}")
    if address is not None:
        _probe(address, timeout)
    local: dict[str, Any] = {"include_dashboard": False} if address is None else {}
    handler = signal.getsignal(signal.SIGTERM)
    with warnings.catch_warnings(), _deadline(timeout, address):
        warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
        ray.init(address=address or "local", log_to_driver=False, configure_logging=False, **local)
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _task_gpus(nodes: list[dict[str, float]], address: str | None) -> int:
    """GPUs a chunk task asks for (one where the cluster has GPUs), refusing a cluster on
    which no node has the CPU and GPU one task needs: Ray would wait for one forever."""
    gpus = 1 if any(n.get("GPU", 0) >= 1 for n in nodes) else 0
    if not any(n.get("CPU", 0) >= 1 and n.get("GPU", 0) >= gpus for n in nodes):
        need = "1 CPU and 1 GPU" if gpus else "1 CPU"
        have = [{k: v for k, v in n.items() if k in ("CPU", "GPU")} for n in nodes]
        raise OSError(
            None,
            f"no node of the Ray cluster has the {need} a chunk task needs (nodes: {have}); "
            "add one (ray start --address HEAD --num-cpus N)",
            _shown(address),
        )
    return gpus


def _wait(ray: Any, chunk_of: dict[Any, int], progress: bool) -> dict[int, str]:
    """Wait for every task; print one line per chunk stored; return the failed chunks, or
    raise the first bad-input error a task raised (every chunk would meet it)."""
    pending, failed = list(chunk_of), {}
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        k = chunk_of[ready[0]]
        try:
            ray.get(ready[0])
        except ray.exceptions.RayError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, BAD_INPUT):
                raise cause from None
            failed[k] = str(err).strip().splitlines()[-1]
            continue
        if progress:
            left = len(pending)
            print(f"chunk {k} stored ({left} of {len(chunk_of)} tasks left)", file=sys.stderr)
    return failed
