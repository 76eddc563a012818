"""Studies on a real S3-compatible server (moto's), inside a private network namespace.

The cases live in tests/object_store_cases.py; this test runs them in a pytest of their own
inside a network namespace it creates (``unshare --net``, then ``lo`` up), where loopback is
the only interface: the server, the memjax processes and the test's own S3 requests never
leave it. It is skipped only where creating the namespace is not permitted (not root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).with_name("object_store_cases.py")


def _namespace_refusal() -> str | None:
    """Why a private network namespace cannot be made here (None: it can)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs util-linux's unshare and iproute2's ip"
    probe = subprocess.run(
        ["unshare", "--net", "--pid", "--fork", "sh", "-c", "ip link set lo up"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"`unshare --net` is not permitted here (needs root): {probe.stderr.strip()}"
    return None


@pytest.mark.slow
def test_study_life_on_s3_in_a_private_network(tmp_path):
    refusal = _namespace_refusal()
    if refusal:
        pytest.skip(refusal)
    env = {**os.environ, "MEMJAX_PRIVATE_NETWORK": "1"}
    script = 'ip link set lo up && exec "$@"'
    cmd = [sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider"]
    cmd += ["-m", "slow or not slow", "--basetemp", str(tmp_path / "cases")]
    res = subprocess.run(
        # its own pid namespace too: whatever the cases start dies with them, even on a timeout
        ["unshare", "--net", "--pid", "--fork", "--kill-child", "sh", "-c", script, "sh", *cmd],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parent.parent,
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    assert " passed" in res.stdout and "skipped" not in res.stdout, res.stdout[-3000:]
