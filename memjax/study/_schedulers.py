"""A static job's index and job count from its scheduler: SLURM job arrays, Kubernetes
Indexed Jobs, or the ``--job``/``--jobs`` flags.

Rules (``memjax run`` applies them when ``--job`` is not given):

* SLURM array (``sbatch --array=MIN-MAX``): job = ``SLURM_ARRAY_TASK_ID`` -
  ``SLURM_ARRAY_TASK_MIN`` (0 when MIN is not set), jobs = ``SLURM_ARRAY_TASK_COUNT``. Task
  ids need not start at 0 (``--array=1-8`` gives jobs 0..7) but must be one contiguous range
  with step 1 (``MAX - MIN + 1 == COUNT``); a stepped or listed array is refused, since its
  ids would leave some jobs' chunks to nobody.
* Kubernetes Indexed Job: job = ``JOB_COMPLETION_INDEX``, jobs = ``--jobs`` or the
  environment variable ``MEMJAX_JOBS`` (set it to the Job's ``completions``; Kubernetes does
  not expose that count to the pod).

Explicit flags win: with ``--job`` the environment is not read. A ``--jobs`` (or
``MEMJAX_JOBS``) that disagrees with the scheduler's count, or both schedulers' variables at
once, is an error naming the values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from memjax.errors import ConfigError

__all__ = ["JOBS_ENV", "scheduler_job"]

JOBS_ENV = "MEMJAX_JOBS"
_SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")


def _int(env: Mapping[str, str], name: str) -> int:
    text = env[name]
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not an integer") from None


def _slurm(env: Mapping[str, str]) -> tuple[int, int, str]:
    missing = [name for name in _SLURM if name not in env]
    if missing:
        raise ConfigError(
            f"SLURM array variables incomplete: {', '.join(missing)} not set (needs "
            "SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT); pass --job and --jobs instead"
        )
    task, count = _int(env, "SLURM_ARRAY_TASK_ID"), _int(env, "SLURM_ARRAY_TASK_COUNT")
    low = _int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
    high = _int(env, "SLURM_ARRAY_TASK_MAX") if "SLURM_ARRAY_TASK_MAX" in env else low + count - 1
    step = _int(env, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in env else 1
    if high - low + 1 != count or step != 1:
        raise ConfigError(
            f"the SLURM array is not one contiguous range: tasks {low}..{high} step {step} but "
            f"SLURM_ARRAY_TASK_COUNT={count}; submit it as --array=0-{count - 1} (a % limit "
            "is fine) or pass --job and --jobs"
        )
    return task - low, count, f"SLURM_ARRAY_TASK_ID={task} (array {low}-{high})"


def scheduler_job(
    job: int | None, jobs: int | None, env: Mapping[str, str] | None = None
) -> tuple[int, int, str | None]:
    """(job, jobs, where they came from) for a static run: the flags ``job``/``jobs``
    (None: not given), else the scheduler's environment ``env`` (default ``os.environ``),
    else job 0 (of ``jobs``, default 1). The third item names the variables used (None:
    none were)."""
    env = os.environ if env is None else env
    if job is not None:
        return job, 1 if jobs is None else jobs, None
    slurm = "SLURM_ARRAY_TASK_ID" in env
    k8s = "JOB_COMPLETION_INDEX" in env
    if slurm and k8s:
        raise ConfigError(
            f"both SLURM_ARRAY_TASK_ID={env['SLURM_ARRAY_TASK_ID']} and "
            f"JOB_COMPLETION_INDEX={env['JOB_COMPLETION_INDEX']} are set: pass --job and --jobs"
        )
    if not (slurm or k8s):
        return 0, 1 if jobs is None else jobs, None
    given = [(f"--jobs {jobs}", jobs)] if jobs is not None else []
    if JOBS_ENV in env:
        given.append((f"{JOBS_ENV}={env[JOBS_ENV]}", _int(env, JOBS_ENV)))
    if slurm:
        job, count, source = _slurm(env)
        given.insert(0, (f"SLURM_ARRAY_TASK_COUNT={count}", count))
    else:
        job, source = _int(env, "JOB_COMPLETION_INDEX"), f"JOB_COMPLETION_INDEX={job}"
        if not given:
            raise ConfigError(
                f"JOB_COMPLETION_INDEX={job} is set but the job count is not: pass --jobs or set "
                f"{JOBS_ENV} to the Indexed Job's completions"
            )
    counts = {value for _, value in given}
    if len(counts) > 1:
        raise ConfigError(
            "conflicting job counts: " + ", ".join(name for name, _ in given) + "; make them agree"
        )
    jobs = counts.pop()
    if not 0 <= job < jobs:
        raise ConfigError(f"{source} gives job index {job}, outside 0..{jobs - 1} of {jobs} jobs")
    return job, jobs, source
