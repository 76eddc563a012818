"""Run a test inside a private network namespace, so that its servers (a Ray cluster, an
S3-compatible store) talk over loopback only and nothing leaves the machine.

``@in_private_network`` re-runs the decorated test in a child pytest started with
``unshare --net --pid --fork --mount-proc`` (root): loopback is the only interface, and every
process the test starts (Ray's daemons included) lives in a private PID namespace that the
kernel tears down when the child pytest exits, whatever happened. The test is skipped, with
the reason, where ``unshare`` is not permitted.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

import pytest

__all__ = ["can_unshare_network", "in_private_network", "INSIDE"]

INSIDE = (
    "MEMJAX_PRIVATE_NETWORK"  # "1" in the child pytest (also read by tests/object_store_cases.py)
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNSHARE = ["unshare", "--net", "--pid", "--fork", "--mount-proc"]


@functools.cache
def can_unshare_network() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run([*UNSHARE, "ip", "link", "set", "lo", "up"], capture_output=True)
    return probe.returncode == 0


def in_private_network(test):
    """Decorator: run ``test`` in a private network (and PID) namespace (see module doc)."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        if os.environ.get(INSIDE) == "1":
            return test(*args, **kwargs)
        if not can_unshare_network():
            pytest.skip("needs `unshare --net --pid` (root) for a private loopback-only network")
        node = os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0]
        script = 'ip link set lo up && exec "$@"'
        pytest_cmd = [
            sys.executable,
            "-m",
            "pytest",
            node,
            "-m",
            "slow or not slow",
            "-q",
            "--tb=short",
        ]
        res = subprocess.run(
            [*UNSHARE, "sh", "-c", script, "sh", *pytest_cmd, "-p", "no:cacheprovider"],
            cwd=ROOT,
            env={**os.environ, INSIDE: "1"},
            capture_output=True,
            text=True,
        )
        assert res.returncode == 0, (
            f"in a private network:\n{res.stdout[-8000:]}{res.stderr[-4000:]}"
        )

    return wrapper
