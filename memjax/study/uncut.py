"""Steps that a stop signal must not cut in half.

``memjax`` commands stop on SIGINT/SIGTERM with ``os._exit`` (``cli._catch_signals``), from
the main thread's handler or from a watcher thread. A step such as a probe file created and
removed would, cut between the two, leave the file in the study directory. Inside
``uncut()`` a stop waits: the main thread's handler returns at once (the watcher thread
sees the same signal) and the watcher takes this lock before it ends the process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["uncut", "inside", "hold"]

_lock = threading.Lock()
_holders: list[int] = []


@contextmanager
def uncut() -> Iterator[None]:
    """Run the block to its end before any stop takes effect."""
    with _lock:
        _holders.append(threading.get_ident())
        try:
            yield
        finally:
            _holders.pop()


def inside() -> bool:
    """Whether the calling thread is running an uncut step (its handler must not wait)."""
    return threading.get_ident() in _holders


def hold() -> None:
    """Wait for the running uncut step, then keep others from starting: the process ends."""
    _lock.acquire()
