"""Progress of a study: the running job's bar and heartbeat, chunk timings, throughput and ETA.

The trainer reports every finished epoch of every group of replicas from inside its compiled
program (``train_replicas(..., progress=...)``); ``JobProgress`` is the sink ``run_study``
gives it. It counts replica-epochs (a replica of E epochs is done after E of them), moves a
tqdm bar that shows replicas finished, replicas/s and the ETA, and keeps two kinds of small
JSON files in the study directory, which nothing else reads and no result depends on::

    progress/job-0003.json      job 3's heartbeat: its chunk, the replica-epochs finished in
                                it, when the chunk started, when the file was written (at most
                                every HEARTBEAT_S seconds, atomically), its host and process
    progress/chunk-000012.json  how long chunk 12 took (seconds, replicas, epochs, job)

``study_progress`` turns them into the throughput and ETA that ``memjax status`` prints.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from typing import Any

from tqdm import tqdm

from memjax.jsonio import json_text, strict_json
from memjax.study._location import Location, locate
from memjax.study._store import Store

__all__ = ["PROGRESS", "HEARTBEAT_S", "JobProgress", "running_chunks", "study_progress"]

PROGRESS = "progress"
HEARTBEAT_S = 5.0
# A heartbeat from another host this much older than its interval counts as stopped.
STALE_HEARTBEATS = 12


# (study path, chunk) of the chunks this process is training now: what a signal abandons.
_running: set[tuple[str, int]] = set()


def running_chunks() -> list[tuple[str, int]]:
    """(study path, chunk index) of every chunk this process has started and not stored."""
    return sorted(_running)


def _heartbeat_path(job: int) -> str:
    return f"{PROGRESS}/job-{job:04d}.json"


def _timing_path(k: int) -> str:
    return f"{PROGRESS}/chunk-{k:06d}.json"


class JobProgress:
    """The progress of one job over its chunks: a callable sink for ``train_replicas``.

    ``replicas`` is the number of replicas this job is about to train (its unfinished
    chunks), each for ``epochs`` epochs; ``bar`` shows a tqdm bar (the heartbeat and timings
    are written either way). Call ``start_chunk`` before a chunk is trained and
    ``finish_chunk`` once its marker is written; use it as a context manager.
    """

    def __init__(
        self, path: str, job: int, jobs: int, replicas: int, epochs: int, bar: bool, desc: str
    ) -> None:
        self.path, self.loc = path, locate(path)
        self.job, self.jobs, self.epochs = job, jobs, epochs
        self.bar = tqdm(
            total=replicas * epochs,
            unit=" replicas",
            unit_scale=1 / epochs,  # the bar counts replica-epochs and shows replicas
            bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f}{unit} "
            "[{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]",
            desc=desc,
            disable=not bar,
        )
        self._lock = threading.Lock()
        self._chunk: dict[str, Any] | None = None
        self._written = 0.0
        self._chunks_timed = 0
        self._reported = False  # has the trainer reported yet (compilation over)?
        self._failed = ""  # the first progress file that could not be written, and why

    def __enter__(self) -> JobProgress:
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        self.close(failed=exc_type is not None)

    def start_chunk(self, k: int, replicas: int) -> None:
        """Chunk ``k`` (of ``replicas`` replicas) starts training now."""
        with self._lock:
            now = time.time()
            self._chunk = {"chunk": k, "replicas": replicas, "done": 0, "started": now}
            _running.add((self.path, k))
            compiling = "" if self._reported else ", compiling"
            self.bar.set_postfix_str(f"chunk {k}{compiling}")
            self._write_heartbeat(now, "training")

    def __call__(self, replica_epochs: int) -> None:
        """``replica_epochs`` more replica-epochs of the current chunk are finished (called
        from the trainer's callback threads)."""
        with self._lock:
            chunk = self._chunk
            if chunk is None:
                raise RuntimeError("progress reported outside a chunk (call start_chunk first)")
            now = time.time()
            first = chunk["done"] == 0
            if first:  # the rate is measured from here on: the first epoch is done
                chunk["first_report"], chunk["first_done"] = now, replica_epochs
                self.bar.set_postfix_str(f"chunk {chunk['chunk']}", refresh=False)
            if not self._reported:  # compilation is over: time the bar from now
                self._reported = True
                self.bar.reset(total=self.bar.total)
            chunk["done"] += replica_epochs
            self.bar.update(replica_epochs)
            if first or now - self._written >= HEARTBEAT_S:
                self._write_heartbeat(now, "training")

    def finish_chunk(self) -> None:
        """The current chunk is stored (its marker written): record how long it took."""
        with self._lock:
            chunk, self._chunk = self._chunk, None
            if chunk is None:
                raise RuntimeError("finish_chunk without start_chunk")
            _running.discard((self.path, chunk["chunk"]))
            timing = {
                "chunk": chunk["chunk"],
                "replicas": chunk["replicas"],
                "epochs": self.epochs,
                "seconds": time.time() - chunk["started"],
                "job": self.job,
                "first_of_run": self._chunks_timed == 0,  # its time may include compilation
                "finished": time.time(),
            }
            self._chunks_timed += 1
            self._write(_timing_path(chunk["chunk"]), timing)

    def close(self, failed: bool = False) -> None:
        """End of this job's run: the heartbeat says whether it got through its chunks."""
        with self._lock:
            if self._chunk is not None:  # a failed chunk: not being trained any more
                _running.discard((self.path, self._chunk["chunk"]))
            self._write_heartbeat(time.time(), "stopped" if failed else "finished")
        self.bar.close()
        if self._failed and not failed:  # a failed run's own error says what went wrong
            warnings.warn(f"cannot write progress files: {self._failed}", stacklevel=2)

    def _write_heartbeat(self, now: float, state: str) -> None:
        chunk = self._chunk or {}
        beat = {
            "job": self.job,
            "jobs": self.jobs,
            "state": state,
            "chunk": chunk.get("chunk"),
            "replicas": chunk.get("replicas"),
            "epochs": self.epochs,
            "replica_epochs_done": chunk.get("done"),
            "chunk_started": chunk.get("started"),
            "first_report": chunk.get("first_report"),
            "first_report_done": chunk.get("first_done"),
            "updated": now,
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        self._written = now
        self._write(_heartbeat_path(self.job), beat)

    def _write(self, path: str, value: dict[str, Any]) -> None:
        """Best effort: progress files must never stop training (the first failure is
        warned about once the run ends well)."""
        try:
            self.loc.write_text(path, json_text(strict_json(value), indent=1))
        except OSError as err:
            self._failed = self._failed or f"{self.loc.show(path)}: {err}"


def _read_json(loc: Location, path: str) -> dict[str, Any] | None:
    try:
        value = json.loads(loc.read_text(path))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _job_state(beat: dict[str, Any], now: float) -> str:
    """A job's state: finished, running, or stopped (by an error, or killed or lost: its
    process is gone on this host, or its heartbeat from another host is stale)."""
    if beat.get("state") in ("finished", "stopped"):
        return beat["state"]
    if beat.get("host") == socket.gethostname() and isinstance(beat.get("pid"), int):
        return "running" if _process_alive(beat["pid"]) else "stopped"
    fresh = now - float(beat.get("updated", 0)) < STALE_HEARTBEATS * HEARTBEAT_S
    return "running" if fresh else "stopped"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _heartbeat(loc: Location, job: int, now: float) -> dict[str, Any] | None:
    """Job ``job``'s heartbeat with its ``state`` judged now and its ``age_s`` (None: none,
    or not one memjax wrote)."""
    beat = _read_json(loc, _heartbeat_path(job))
    if beat is None or not (_number(beat.get("updated")) and _number(beat.get("epochs"))):
        return None
    return {**beat, "state": _job_state(beat, now), "age_s": now - beat["updated"]}


def _pooled_rate(timings: list[dict[str, Any]]) -> float:
    """Replicas per second over chunk timings."""
    return sum(t["replicas"] for t in timings) / sum(t["seconds"] for t in timings)


def _in_chunk_rate(beat: dict[str, Any]) -> float | None:
    """Replicas per second in a heartbeat's chunk since its first report (compilation and
    the first epoch left out); None until a later report."""
    keys = ("replica_epochs_done", "first_report_done", "first_report")
    if not all(_number(beat.get(k)) for k in keys) or beat["updated"] <= beat["first_report"]:
        return None
    done = (beat["replica_epochs_done"] - beat["first_report_done"]) / beat["epochs"]
    return done / (beat["updated"] - beat["first_report"]) if done > 0 else None


def _rate(
    steady: list[dict[str, Any]], in_chunk: list[float], timed: list[dict[str, Any]]
) -> float | None:
    """The best measurement of a job's replicas/s there is (see study_progress)."""
    if steady:
        return _pooled_rate(steady)
    if in_chunk:
        return sum(in_chunk) / len(in_chunk)
    return _pooled_rate(timed) if timed else None


def _chunk_wall(chunk_size: int, rate: float | None, timed: list[dict[str, Any]]):
    """A full chunk's wall time, so that chunks can be sized to a preemption rate (a
    preempted job loses at most its current chunk): ``expected`` at the job's measured rate,
    ``range`` the fastest and slowest timed chunks scaled to a full chunk (None: untimed)."""
    if not rate:
        return None
    full = [t["seconds"] * chunk_size / t["replicas"] for t in timed]
    return {
        "expected": chunk_size / rate,
        "range": [min(full), max(full)] if full else None,
        "chunks_timed": len(full),
    }


def study_progress(store: Store, finished: list[int], now: float | None = None) -> dict[str, Any]:
    """Throughput and ETA of a study whose ``finished`` chunks are stored.

    ``replicas_per_s_per_job``: replicas one job trains per second, from the recorded times
    of finished chunks, leaving out each run's first chunk (its time may include
    compilation); failing those, from the heartbeats' in-chunk rates; failing those, from
    the first chunks' times (None: nothing timed yet). ``eta_s``: seconds until every chunk
    is finished if all ``jobs`` jobs run at that rate, each through its own unfinished
    chunks, less what running jobs' heartbeats say is done in their chunks (0 once
    complete). ``chunk_wall_s``: one full chunk's expected seconds and the measured range
    (``_chunk_wall``), for sizing chunks to a preemption rate. ``jobs_progress``: each
    job's latest heartbeat and whether its job is running, stopped (killed or lost) or
    finished.
    """
    now = time.time() if now is None else now
    done = set(finished)
    timed = [
        t
        for k in sorted(done)
        if (t := _read_json(store.loc, _timing_path(k))) is not None
        and _number(t.get("seconds"))
        and t["seconds"] > 0
        and _number(t.get("replicas"))
    ]
    steady = [t for t in timed if not t.get("first_of_run")]
    beats = {j: b for j in range(store.jobs) if (b := _heartbeat(store.loc, j, now)) is not None}
    current = {j: b for j, b in beats.items() if b.get("chunk") not in done | {None}}
    in_chunk_rates = [r for b in current.values() if (r := _in_chunk_rate(b)) is not None]
    rate = _rate(steady, in_chunk_rates, timed)
    left = []  # replicas each job has still to train (a stopped job's chunk restarts)
    for j in range(store.jobs):
        mine = range(j, store.n_chunks, store.jobs)
        todo = sum(len(store.chunk_rows(k)) for k in mine if k not in done)
        beat = current.get(j, {})
        if beat.get("state") == "running" and _number(beat.get("replica_epochs_done")):
            todo -= beat["replica_epochs_done"] / beat["epochs"]
        left.append(todo)
    eta = 0.0 if len(done) == store.n_chunks else max(left) / rate if rate else None
    return {
        "replicas_per_s_per_job": rate,
        "chunks_timed": len(timed),
        "eta_s": eta,
        "chunk_wall_s": _chunk_wall(store.chunk_size, rate, steady or timed),
        "jobs_progress": [
            {
                "job": j,
                "state": b["state"],
                "chunk": b.get("chunk"),
                "replica_epochs_done": b.get("replica_epochs_done"),
                "replica_epochs_in_chunk": b["replicas"] * b["epochs"]
                if _number(b.get("replicas"))
                else None,
                "heartbeat_age_s": round(b["age_s"], 1),
            }
            for j, b in sorted(beats.items())
        ],
    }
