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
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import threading
import warnings
from typing import Any

from memjax import data
from memjax.location import is_url
from memjax.progress import JobProgress
from memjax.store import Store, open_store
from memjax.study import (
    StudyConfig,
    build_dataset,
    check_finished_files,
    open_or_create,
    train_chunk,
)

__all__ = ["DEFAULT_RETRIES", "run_study_ray"]

# Retries of a chunk whose worker died (preempted node, OOM kill); errors are not retried.
DEFAULT_RETRIES = 3


@functools.lru_cache(maxsize=2)
def _dataset(spec: str) -> data.Dataset:
    """A worker process's dataset, built once for the chunks it trains (spec: JSON text)."""
    return build_dataset(json.loads(spec))


def _chunk_task(cfg: StudyConfig, path: str, k: int) -> int:
    """Train and store chunk k of the study at ``path`` (a Ray task body); returns k. A
    chunk found finished (by a duplicate task) is left as it is."""
    from memjax.runtime import use_cpu_cores

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
    max_retries: int = DEFAULT_RETRIES,
    progress: bool = True,
) -> tuple[Store, dict[int, str]]:
    """Train every unfinished chunk of ``cfg``'s study at ``out`` as Ray tasks on the cluster
    at ``address`` ("HOST:PORT", "auto"; None: RAY_ADDRESS or a cluster started
    on this machine, else a new Ray instance on this machine alone).

    Returns the store and the chunks whose tasks failed (chunk -> error, after Ray's
    retries). Chunks are trained whatever ``--jobs`` partition the study records.
    """
    try:
        import ray
    except ImportError:
        raise ValueError(
            "--executor ray needs Ray: pip install 'memjax[ray]' on the driver and every node"
        ) from None
    out = _location(out)
    store = open_or_create(cfg, out, allow_large=allow_large)
    check_finished_files(store)
    done = set(store.done_chunks())
    todo = [k for k in range(store.n_chunks) if k not in done]
    if not todo:
        return store, {}
    _connect(ray, address)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=max_retries)
        submit = task(_chunk_task).options(name="memjax-chunk")
        chunk_of = {submit.remote(cfg, out, k): k for k in todo}
        failed = _wait(ray, chunk_of, progress)
    finally:
        ray.shutdown()
    return open_store(out), failed


def _connect(ray: Any, address: str | None) -> None:
    """ray.init, keeping memjax's SIGTERM handling (Ray's own would raise SystemExit) and
    without JAX's warning about fork (Ray forks only to exec its daemons)."""
    local: dict[str, Any] = {"include_dashboard": False} if address is None else {}
    handler = signal.getsignal(signal.SIGTERM)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
        ray.init(address=address, log_to_driver=False, configure_logging=False, **local)
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _wait(ray: Any, chunk_of: dict[Any, int], progress: bool) -> dict[int, str]:
    """Wait for every task; print one line per chunk stored; return the failed chunks."""
    pending, failed = list(chunk_of), {}
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        k = chunk_of[ready[0]]
        try:
            ray.get(ready[0])
        except ray.exceptions.RayError as err:
            failed[k] = str(err).strip().splitlines()[-1]
            continue
        if progress:
            left = len(pending)
            print(f"chunk {k} stored ({left} of {len(chunk_of)} tasks left)", file=sys.stderr)
    return failed
