"""memjax.use_cpu_cores: the CPU backend's device layout, checked in fresh processes (the
layout can only change before JAX initializes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from memjax.train import usable_cores, use_cpu_cores


def _fresh(code: str, xla_flags: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    if xla_flags:
        env["XLA_FLAGS"] = xla_flags
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_one_device_per_usable_core_by_default():
    rec = _fresh(
        """
        import json, os, jax, memjax
        n = memjax.use_cpu_cores()
        print(json.dumps({"n": n, "devices": jax.device_count(),
                          "cores": len(os.sched_getaffinity(0))}))
        """
    )
    assert rec["n"] == rec["devices"] == rec["cores"]


@pytest.mark.slow
def test_explicit_count_and_a_users_forced_count_is_kept():
    code = """
        import json, jax, memjax
        n = memjax.use_cpu_cores({count})
        print(json.dumps({{"n": n, "devices": jax.device_count()}}))
        """
    assert _fresh(code.format(count=3)) == {"n": 3, "devices": 3}
    forced = _fresh(code.format(count=""), "--xla_force_host_platform_device_count=5")
    assert forced == {"n": 5, "devices": 5}


@pytest.mark.slow
def test_too_late_once_jax_has_run():
    rec = _fresh(
        """
        import json, jax, jax.numpy as jnp, memjax
        jnp.ones(2).block_until_ready()
        print(json.dumps({"n": memjax.use_cpu_cores(), "devices": jax.device_count()}))
        """
    )
    assert rec == {"n": 0, "devices": 1}


def test_bad_count_is_refused():
    with pytest.raises(ValueError, match="CPU device count"):
        use_cpu_cores(0)
    assert usable_cores() >= 1
