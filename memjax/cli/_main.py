"""The `memjax` command line: run | status | verify | estimate | lds | report | merge | bench |
plan.

run, status, verify, estimate and merge work on a study family (memjax.study) as on a
study: on every member.

Every failure ends in one line on stderr that says what happened and where, and an exit
code that says which kind of failure it was (EXIT_CODES). A study killed at any moment
resumes when the same command is run again, so Ctrl-C and SIGTERM stop at once.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from memjax.errors import ConfigError, MemjaxError, StoreError
from memjax.jsonio import json_text, strict_json
from memjax.study import uncut

__all__ = ["main", "EXIT_CODES"]

EXIT_CODES = {
    "unfinished": 1,  # this job's share of the study is not finished (see its message)
    "bad input": MemjaxError.exit_code,  # 2: config, arguments, data, missing files, size
    "store": StoreError.exit_code,  # 3: another study or partition there, or a damaged chunk
    "os": 4,  # the operating system refused: no space, read-only, permission
    "interrupted": 128 + signal.SIGINT,  # 130: Ctrl-C
    "terminated": 128 + signal.SIGTERM,  # 143: SIGTERM (e.g. a cluster's preemption)
}
RESUME = "re-run the same command to resume (finished chunks are kept)"

# What the running command works on, for the one-line messages (e.g. the study directory).
_where: dict[str, str] = {}


def _cmd_run(args: argparse.Namespace) -> int:
    """Exit status 0 only if this job's share of the study (or family) is finished."""
    from memjax.study import FamilyConfig, load, scheduler_job

    sets = tuple(args.set or ()) + ((f"chunk_size={args.chunk_size}",) if args.chunk_size else ())
    cfg = load(args.config, args.mode, sets)
    out = args.out or str(Path("results") / cfg.name)
    _where["path"] = out
    if args.executor == "ray":
        return _run_ray(cfg, out, args)
    if args.address or args.ray_timeout is not None:
        raise ConfigError(
            "--address and --ray-timeout are the Ray cluster's: use them with --executor ray"
        )
    if args.distributed:
        import jax

        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
        job, jobs = jax.process_index(), jax.process_count()
    else:
        job, jobs, source = scheduler_job(args.job, args.jobs)
        if source:
            print(f"job {job} of {jobs} (from {source})", flush=True)
    run = _run_family if isinstance(cfg, FamilyConfig) else _run_study
    line, mine = run(cfg, out, job, jobs, not args.quiet, args.allow_large)
    print(line)
    if mine:
        print(f"memjax run: error: this job's chunks {mine} are unfinished", file=sys.stderr)
        return EXIT_CODES["unfinished"]
    return 0


def _run_ray(cfg, out: str, args: argparse.Namespace) -> int:
    """Every unfinished chunk as a Ray task; exit status 0 only if the study is finished."""
    from memjax.study import DEFAULT_TIMEOUT_S, FamilyConfig, run_study_ray

    if isinstance(cfg, FamilyConfig):
        raise ConfigError("--executor ray runs a study; run a family's members one by one")
    if args.distributed or args.job is not None or args.jobs is not None:
        raise ConfigError(
            "--executor ray trains every unfinished chunk on the Ray cluster: drop --job, "
            "--jobs and --distributed (they split chunks among static jobs)"
        )
    store, failed = run_study_ray(
        cfg,
        out,
        args.address,
        args.allow_large,
        progress=not args.quiet,
        timeout=DEFAULT_TIMEOUT_S if args.ray_timeout is None else args.ray_timeout,
    )
    left = [k for k in range(store.n_chunks) if k not in set(store.done_chunks())]
    print(
        f"{out}: {len(store.done_rows())}/{store.replicas} replicas finished; {len(left)} of "
        f"{store.n_chunks} chunks unfinished"
    )
    if left:
        why = f" (chunk {min(failed)}: {failed[min(failed)]})" if failed else ""
        print(f"memjax run: error: chunks {left[:8]} are unfinished{why}", file=sys.stderr)
        return EXIT_CODES["unfinished"]
    return 0


def _run_study(cfg, out: str, job: int, jobs: int, progress: bool, allow_large: bool):
    """Run a study; return the closing line and this job's unfinished chunks."""
    from memjax.study import run_study, unfinished_chunks

    store = run_study(cfg, out, job=job, jobs=jobs, progress=progress, allow_large=allow_large)
    left = store.n_chunks - len(store.done_chunks())
    mine = unfinished_chunks(store, job, jobs)
    others = f" (other jobs' shares of --jobs {jobs})" if left and not mine else ""
    line = (
        f"{out}: {len(store.done_rows())}/{store.replicas} replicas finished; {left} of "
        f"{store.n_chunks} chunks unfinished in the whole study{others}"
    )
    return line, mine[:8]


def _run_family(cfg, out: str, job: int, jobs: int, progress: bool, allow_large: bool):
    """Run every member of a family; return the closing line and this job's unfinished
    chunks (member/chunk)."""
    from memjax.study import family_status, job_unfinished, run_family

    run_family(cfg, out, job=job, jobs=jobs, progress=progress, allow_large=allow_large)
    s = family_status(out)
    left = s["chunks_planned"] - s["chunks_finished"]
    mine = [f"{d}/{k}" for d, ks in job_unfinished(out, job, jobs).items() for k in ks]
    others = f" (other jobs' shares of --jobs {jobs})" if left and not mine else ""
    line = (
        f"{out}: {s['members_complete']}/{s['members_planned']} members complete, "
        f"{s['replicas_finished']}/{s['replicas_planned']} replicas finished; {left} of "
        f"{s['chunks_planned']} chunks unfinished in the whole family{others}"
    )
    return line, mine[:8]


def _cmd_status(args: argparse.Namespace) -> None:
    from memjax.study import family_status, is_family, open_store, study_status

    status = family_status(args.dir) if is_family(args.dir) else study_status(open_store(args.dir))
    print(json_text(strict_json(status), indent=2))


def _cmd_verify(args: argparse.Namespace) -> int:
    """Exit status 1 if a chunk is damaged (0 once --repair has made it unfinished)."""
    from memjax.study import member_stores, verify_study

    reports = [verify_study(store, repair=args.repair) for store in member_stores(args.dir)]
    print("\n".join(line for report in reports for line in report.lines()))
    return 0 if all(report.ok or report.repaired for report in reports) else 1


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _below(out: str, rel: str) -> str:
    """``rel`` (a family member's directory, or ".") below the directory or URL ``out``."""
    from memjax.study import is_url

    if is_url(out):
        return out if rel == "." else f"{out.rstrip('/')}/{rel}"
    return os.path.normpath(os.path.join(out, rel))


def _members(path: str, out: str | None, every: bool):
    """(store, its output directory or None) of the study at ``path``, or of each started
    member of the family there (``every``: all must have started), outputs below ``out``."""
    from memjax.study import member_stores

    for store in member_stores(path, every=every):
        _where["path"] = store.path
        yield store, _below(out, os.path.relpath(store.path, path)) if out else None


def _cmd_estimate(args: argparse.Namespace) -> None:
    from memjax.report import estimate_study
    from memjax.study import Study

    for store, out in _members(args.dir, args.out, every=not args.partial):
        result = estimate_study(Study(store, data_root=args.data_root), out, partial=args.partial)
        acc = result["test_accuracy"]
        shown = (
            "n/a"
            if acc["value"] is None
            else f"{acc['value']:.3f} [{_fmt(acc['ci_low'])}, {_fmt(acc['ci_high'])}]"
        )
        print(
            f"{result['replicas_finished']} replicas, mean test accuracy {shown} (95% "
            f"interval); wrote {out or store.path}/memorization.csv, summary.json, "
            "memorization_hist.png"
        )
        for column, reason in result["missing"].items():
            print(f"  missing column {column}: {reason}")


def _cmd_lds(args: argparse.Namespace) -> None:
    from memjax.report import lds_table, write_table
    from memjax.study import open_study

    _where["path"] = args.study
    study = open_study(args.study, data_root=args.data_root)
    eval_study = open_study(args.eval, data_root=args.data_root)
    estimators = tuple(args.estimators.split(",")) if args.estimators else None
    kwargs = {"estimators": estimators} if estimators else {}
    rows = lds_table(study, eval_study, args.output, n_boot=args.n_boot, **kwargs)
    about = {"study": study.path, "eval_study": eval_study.path, "output": args.output}
    paths = write_table(rows, args.out or study.path, about)
    print(f"LDS on {args.output} (mean Spearman over test examples; 95% two-way bootstrap)")
    print(f"{'estimator':<18} {'replicas':>8}  LDS")
    for row in rows:
        shown = (
            f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
            if row["value"] is not None
            else row["note"]
        )
        print(f"{row['estimator']:<18} {row['replicas']:>8}  {shown}")
    print(f"wrote {paths[0]}, {paths[1]}")


def _cmd_report(args: argparse.Namespace) -> None:
    """One page per study: a family's members each get theirs (in OUT/<member> with --out)."""
    from memjax.report import write_report

    for store, out in _members(args.study, args.out, every=True):
        print(f"wrote {write_report(store.path, out, data_root=args.data_root)}")


def _cmd_merge(args: argparse.Namespace) -> None:
    from memjax.study import family_status, is_family, merge, merge_families

    _where["path"] = args.out
    if len(args.dirs) < 2:
        raise ConfigError("merge needs at least two directories")
    if is_family(args.dirs[0]):
        merge_families(args.dirs, args.out)
        s = family_status(args.out)
        done, planned = s["replicas_finished"], s["replicas_planned"]
        left, chunks = s["chunks_planned"] - s["chunks_finished"], s["chunks_planned"]
    else:
        store = merge(args.dirs, args.out)
        done, planned = len(store.done_rows()), store.replicas
        left, chunks = store.n_chunks - len(store.done_chunks()), store.n_chunks
    print(f"{args.out}: {done}/{planned} replicas; {left} of {chunks} chunks unfinished")


def _cmd_bench(args: argparse.Namespace) -> None:
    from memjax.train import run_bench

    rec = run_bench(
        args.replicas,
        args.epochs,
        args.group_size,
        args.seed,
        workload=args.workload,
        examples=args.examples,
    )
    print(json_text(strict_json(rec)))


def _cmd_plan(args: argparse.Namespace) -> None:
    from memjax.study import build_dataset, default_config, load_config, plan_study

    sets = tuple(args.set or ())
    if args.config:
        cfg = load_config(args.config, args.mode, sets)
    else:
        cfg = default_config(args.mode, sets)
    ds = build_dataset(cfg.dataset)
    plan = plan_study(cfg, ds, args.device, args.measure)
    print(json_text(strict_json(plan), indent=2))
    for line in plan["warnings"]:
        print(f"memjax plan: warning: {line}", file=sys.stderr)


# Readers of a stored study follow its dataset path only inside this directory.
DATA_ROOT_HELP = (
    "the directory a stored study's dataset path must lie inside (default: the current "
    "directory); a path leading out of it is refused"
)


def _registered() -> str:
    """The names a study config accepts, read from the registries (``memjax run --help``)."""
    from memjax.data import DATASETS
    from memjax.models import ACTIVATIONS, PARAMETERIZATIONS, SPECS
    from memjax.train import OPTIMIZERS, recipes

    rows = (
        ("dataset.name", DATASETS, " (or an .npz file, or a CIFAR directory)"),
        ("model.type", SPECS, ""),
        ("model.activation", ACTIVATIONS, ""),
        ("model.parameterization", PARAMETERIZATIONS, ""),
        ("train.optimizer", OPTIMIZERS, ""),
        ("train.schedule", recipes.SCHEDULES, ""),
    )
    lines = [f"  {key}: {', '.join(names)}{more}" for key, names, more in rows]
    return "registered names a study config accepts:\n" + "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="memjax", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run (or resume) a study; no CONFIG: the embedded default",
        epilog=_registered(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("config", nargs="?", help="study or family config YAML")
    run.add_argument("--mode", help="apply the config's overrides of this mode (e.g. quick)")
    run.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one setting (dotted key, YAML value, e.g. train.epochs=10); repeatable",
    )
    run.add_argument("--out", help="study or family directory (default: results/<its name>)")
    run.add_argument(
        "--job",
        type=int,
        help="this job's index (multi-job studies; default: from SLURM_ARRAY_TASK_ID or "
        "JOB_COMPLETION_INDEX when set, else 0)",
    )
    run.add_argument(
        "--jobs",
        type=int,
        help="number of jobs sharing the chunks (default: SLURM_ARRAY_TASK_COUNT, "
        "MEMJAX_JOBS, else 1)",
    )
    run.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: this process trains its job's chunks; ray: one Ray task per unfinished "
        "chunk on a Ray cluster (pip install memjax[ray])",
    )
    run.add_argument(
        "--address",
        help="Ray cluster address HOST:PORT or auto (default: RAY_ADDRESS, else Ray on this "
        "machine)",
    )
    run.add_argument(
        "--ray-timeout",
        type=float,
        metavar="SECONDS",
        help="--executor ray: give up connecting to the cluster after this long, before "
        "anything is written (default: memjax.study.DEFAULT_TIMEOUT_S, 45)",
    )
    run.add_argument("--chunk-size", type=int, help="replicas per stored chunk (new studies)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument(
        "--allow-large",
        action="store_true",
        help="start a new study even if its estimated disk, device-memory or mask-generation "
        "needs exceed this machine's (refused by default, with the numbers)",
    )
    run.add_argument(
        "--distributed",
        action="store_true",
        help="multi-process JAX: each process trains its share of the chunks on its own "
        "devices (job = process index); the cluster is auto-detected unless given below",
    )
    run.add_argument("--coordinator", help="coordinator address host:port (--distributed)")
    run.add_argument("--num-processes", type=int, help="process count (--distributed)")
    run.add_argument("--process-id", type=int, help="this process's index (--distributed)")
    run.set_defaults(fn=_cmd_run)

    status = sub.add_parser(
        "status",
        help="progress of a study (or of each member of a family): chunks finished, "
        "replicas/s, ETA, running jobs",
    )
    status.add_argument("dir")
    status.set_defaults(fn=_cmd_status)

    verify = sub.add_parser(
        "verify", help="check every finished chunk's files and hashes (reads all data)"
    )
    verify.add_argument("dir")
    verify.add_argument(
        "--repair",
        action="store_true",
        help="drop the markers of damaged chunks so that `memjax run` retrains exactly them",
    )
    verify.set_defaults(fn=_cmd_verify)

    est = sub.add_parser("estimate", help="per-example memorization table and summary")
    est.add_argument("dir")
    est.add_argument(
        "--out", help="output directory (default: the study's; a family's members: OUT/<member>)"
    )
    est.add_argument("--partial", action="store_true", help="allow an unfinished study")
    est.add_argument("--data-root", help=DATA_ROOT_HELP)
    est.set_defaults(fn=_cmd_estimate)

    lds = sub.add_parser(
        "lds", help="linear datamodeling score of attribution estimators, with intervals"
    )
    lds.add_argument("study", help="training study (balanced, fixed or bernoulli design)")
    lds.add_argument("--eval", required=True, help="evaluation study (design eval) of its data")
    lds.add_argument(
        "--output", default="test_margin", help="test_margin (default) or test_correct"
    )
    lds.add_argument("--estimators", help="comma-separated subset (default: all)")
    lds.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates")
    lds.add_argument("--out", help="output directory (default: the study directory)")
    lds.add_argument("--data-root", help=DATA_ROOT_HELP)
    lds.set_defaults(fn=_cmd_lds)

    report = sub.add_parser("report", help="one self-contained HTML page showing a study")
    report.add_argument("study", help="study directory")
    report.add_argument("--out", help="output directory (default: the study directory)")
    report.add_argument("--data-root", help=DATA_ROOT_HELP)
    report.set_defaults(fn=_cmd_report)

    merge = sub.add_parser(
        "merge", help="join study (or family) directories written by separate jobs"
    )
    merge.add_argument("dirs", nargs="+")
    merge.add_argument("--out", required=True)
    merge.set_defaults(fn=_cmd_merge)

    bench = sub.add_parser("bench", help="time a standard workload; prints one JSON line")
    bench.add_argument(
        "--workload",
        choices=("mlp", "resnet"),
        default="mlp",
        help="mlp: MNIST-1D MLP (default); resnet: ResNet-9 with BatchNorm and augmentation "
        "on CIFAR-shaped synthetic images",
    )
    bench.add_argument("--replicas", type=int, default=256)
    bench.add_argument("--epochs", type=int, default=10)
    bench.add_argument("--group-size", type=int, default=0, help="0: automatic")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument(
        "--examples",
        type=int,
        default=4000,
        help="training examples (test: a quarter); below the peers' 4000 a quick check whose "
        "figures do not compare with theirs",
    )
    bench.set_defaults(fn=_cmd_bench)

    plan = sub.add_parser(
        "plan",
        help="a study's FLOPs, memory per replica, group and chunk sizes and predicted time "
        "per device; prints one JSON object",
    )
    plan.add_argument("config", nargs="?", help="study config YAML (default: the embedded one)")
    plan.add_argument("--mode", help="apply the config's overrides of this mode")
    plan.add_argument("--set", action="append", metavar="KEY=VALUE", help="as for run")
    plan.add_argument(
        "--device",
        help="plan for this data-sheet device (A100, H100, H200, TPU-v4, TPU-v5e) instead of "
        "the local backend, whose efficiency is measured",
    )
    plan.add_argument(
        "--measure",
        action="store_true",
        help="also train one group per device for one epoch here and print measured_s, "
        "extrapolated to the whole study",
    )
    plan.set_defaults(fn=_cmd_plan)

    return p


def _stop(command: str, signum: int) -> None:
    """End the process now, with one line: a study killed at any moment resumes (finished
    chunks are durable before their markers), so nothing needs unwinding. Inside an uncut
    step the main thread's handler returns and the watcher thread stops after the step."""
    if uncut.inside():
        return
    uncut.hold()  # the handler and the watcher thread may both see one signal: one goes on
    kind = "interrupted" if signum == signal.SIGINT else "terminated"
    name = signal.Signals(signum).name
    where = f" while working on {_where['path']}" if "path" in _where else ""
    lead = "\n" if sys.stderr.isatty() else ""
    line = f"{lead}memjax {command}: {kind} by {name}{where}{_abandoned()}; {RESUME}\n"
    os.write(sys.stderr.fileno(), line.encode())
    os._exit(EXIT_CODES[kind])


def _abandoned() -> str:
    """The chunks a stop abandons (being trained, so without markers), for its message."""
    progress = sys.modules.get("memjax.study._progress")  # not imported: no chunk was started
    chunks = progress.running_chunks() if progress else []
    if not chunks:
        return ""
    named = ", ".join(
        f"{k}" if path == _where.get("path") else f"{path} chunk {k}" for path, k in chunks
    )
    return f"; abandoned chunk {named} (no marker written: it is retrained on resume)"


def _catch_signals(command: str) -> Callable[[], None]:
    """Stop at once on SIGINT/SIGTERM, even while JAX computes in C++ with the main thread
    blocked: the signal's wakeup byte reaches a watcher thread. Returns the undo function."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous = {s: signal.signal(s, lambda n, _f: _stop(command, n)) for s in _STOP_SIGNALS}
    previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def watch() -> None:
        while data := os.read(read_fd, 1):
            if data[0] in _STOP_SIGNALS:
                _stop(command, data[0])

    watcher = threading.Thread(target=watch, name="memjax-signals", daemon=True)
    watcher.start()

    def undo() -> None:
        signal.set_wakeup_fd(previous_fd)
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.close(write_fd)
        watcher.join()
        os.close(read_fd)

    return undo


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _os_error_line(err: OSError) -> str:
    """What the OS refused, where, and that the command resumes once that is fixed."""
    name = errno.errorcode.get(err.errno, "") if err.errno else ""
    what = err.strerror or str(err)
    where = err.filename or _where.get("path")
    fix = {
        errno.ENOSPC: "free some space",
        errno.EDQUOT: "free some space",
        errno.EROFS: "use a writable directory",
        errno.EACCES: "fix the permissions",
        errno.EPERM: "fix the permissions",
    }.get(err.errno, "fix the cause")
    return (
        f"{what}{f' ({name})' if name else ''}{f' at {where}' if where else ''}; {fix}, then "
        f"{RESUME}"
    )


def _warning_line(message, category, filename, lineno, line=None) -> str:
    return f"memjax: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (see EXIT_CODES)."""
    args = _parser().parse_args(argv)
    from memjax.study import service_errors
    from memjax.train import use_cpu_cores

    use_cpu_cores()
    _where.clear()
    named = next((getattr(args, a) for a in ("dir", "study") if hasattr(args, a)), None)
    if named:
        _where["path"] = named
    undo = _catch_signals(args.command)
    fmt, warnings.formatwarning = warnings.formatwarning, _warning_line
    prefix = f"memjax {args.command}: error:"
    try:
        code = args.fn(args)
    except MemjaxError as err:  # bad input, by its class: exit 2, or 3 for a store's
        print(f"{prefix} {err}", file=sys.stderr)
        return err.exit_code
    except (FileNotFoundError, ImportError) as err:  # a missing file or optional dependency
        print(f"{prefix} {err}", file=sys.stderr)
        return EXIT_CODES["bad input"]
    except OSError as err:
        print(f"{prefix} {_os_error_line(err)}", file=sys.stderr)
        return EXIT_CODES["os"]
    except service_errors() as err:  # evaluated once an error reaches it: clients loaded
        where = f" at {_where['path']}" if "path" in _where else ""
        why = " ".join(str(err).split())
        print(
            f"{prefix} the object store refused{where}: {why} (endpoint and credentials come "
            "from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or "
            f"GOOGLE_APPLICATION_CREDENTIALS); fix that, then {RESUME}",
            file=sys.stderr,
        )
        return EXIT_CODES["os"]
    finally:
        warnings.formatwarning = fmt
        undo()
    return code or 0
