"""Static jobs take their index and count from a SLURM job array or a Kubernetes Indexed Job
when --job is not given; explicit flags win; conflicting counts are named."""

from __future__ import annotations

import pytest

from memjax.cli import main
from memjax.study import open_store, scheduler_job


def slurm(task: int, count: int, low: int | None = None, high: int | None = None, step=None):
    env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": str(count)}
    extra = {"MIN": low, "MAX": high, "STEP": step}
    env.update({f"SLURM_ARRAY_TASK_{k}": str(v) for k, v in extra.items() if v is not None})
    return env


@pytest.mark.parametrize(
    ("env", "job", "jobs"),
    [
        ({}, 0, 1),
        (slurm(1, 2), 1, 2),
        (slurm(0, 3, 0, 2), 0, 3),
        (slurm(4, 4, 1, 4), 3, 4),  # --array=1-4: ids start at 1, jobs at 0
        (slurm(12, 5, 10, 14, 1), 2, 5),
        ({"JOB_COMPLETION_INDEX": "2", "MEMJAX_JOBS": "3"}, 2, 3),
    ],
)
def test_job_index_and_count_from_the_scheduler(env, job, jobs):
    assert scheduler_job(None, None, env)[:2] == (job, jobs)


def test_flags_win_and_agreeing_flags_are_accepted():
    assert scheduler_job(3, 5, slurm(1, 2)) == (3, 5, None)  # --job given: env not read
    assert scheduler_job(None, 2, slurm(1, 2))[:2] == (1, 2)
    assert scheduler_job(None, 4, {"JOB_COMPLETION_INDEX": "3"})[:2] == (3, 4)
    assert scheduler_job(None, 4, {})[:2] == (0, 4)  # as before: job 0 of --jobs


@pytest.mark.parametrize(
    ("jobs", "env", "message"),
    [
        (3, slurm(1, 2), "conflicting job counts: SLURM_ARRAY_TASK_COUNT=2, --jobs 3"),
        (None, {**slurm(0, 2), "MEMJAX_JOBS": "4"}, "SLURM_ARRAY_TASK_COUNT=2, MEMJAX_JOBS=4"),
        (5, {"JOB_COMPLETION_INDEX": "1", "MEMJAX_JOBS": "4"}, "--jobs 5, MEMJAX_JOBS=4"),
        (None, {"JOB_COMPLETION_INDEX": "1"}, "pass --jobs or set MEMJAX_JOBS"),
        (None, {"JOB_COMPLETION_INDEX": "4", "MEMJAX_JOBS": "4"}, "outside 0..3 of 4 jobs"),
        (None, {**slurm(0, 2), "JOB_COMPLETION_INDEX": "0"}, "both SLURM_ARRAY_TASK_ID=0 and"),
        (None, slurm(2, 3, 0, 4, 2), "not one contiguous range: tasks 0..4 step 2"),
        (None, slurm(5, 3, 0, 9), "not one contiguous range: tasks 0..9 step 1"),
        (None, {"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT not set"),
        (None, slurm(1, 2) | {"SLURM_ARRAY_TASK_ID": "x"}, "SLURM_ARRAY_TASK_ID='x' is not"),
    ],
)
def test_bad_or_conflicting_scheduler_values_are_named(jobs, env, message):
    with pytest.raises(ValueError) as err:
        scheduler_job(None, jobs, env)
    assert message in str(err.value)


@pytest.mark.slow
def test_a_slurm_array_task_trains_exactly_its_chunks(tmp_path, monkeypatch, capsys):
    config = tmp_path / "study.yaml"
    config.write_text(
        "name: s\ndataset: {name: digits}\nmodel: {type: MLP, widths: [32]}\n"
        "subsets: {replicas: 16}\ntrain: {epochs: 2, batch_size: 64}\nseed: 3\nchunk_size: 4\n"
    )
    out = str(tmp_path / "s")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert main(["run", str(config), "--out", out, "--quiet"]) == 0
    store = open_store(out)
    assert store.done_chunks() == [1, 3] and store.jobs == 2
    printed = capsys.readouterr().out
    assert printed.startswith("job 1 of 2 (from SLURM_ARRAY_TASK_ID=1 (array 0-1))\n")
    assert "2 of 4 chunks unfinished in the whole study (other jobs' shares" in printed
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    assert main(["run", str(config), "--out", out, "--quiet"]) == 3  # the study records 2
    assert "is shared by 2 jobs" in capsys.readouterr().err
