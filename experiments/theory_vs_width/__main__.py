"""Command line of the theory-vs-width experiment (the science is in experiment.py).

Runs (or resumes) the family of network studies in OUT/family, fits the kernel studies into
OUT/kernels once the family is finished, and writes the analysis: ``summary.json`` (settings,
every number, per-example memorization), ``table.md`` and ``table.csv``:

    python -m experiments.theory_vs_width --mode quick --out DIR [--set KEY=VALUE ...]
                                          [--job J --jobs K]

With ``--jobs K`` each job trains its share of the family's chunks (a shared directory);
the job that finds the family finished (or any job run again afterwards) writes the rest.
``memjax run experiments/theory_vs_width/config.yaml --mode M --out OUT/family`` trains the
same family (and ``memjax merge`` joins job directories into OUT/family).
"""

from __future__ import annotations

import argparse
from typing import Any

from experiments.theory_vs_width import experiment
from experiments.theory_vs_width.report import tables, write
from memjax import use_cpu_cores


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.theory_vs_width",
        description=experiment.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--mode", required=True, choices=experiment.MODES)
    parser.add_argument("--out", required=True, help="directory for the studies and summary")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of config.yaml, e.g. --set 'sweep.model.widths=[[64],[4096]]'",
    )
    parser.add_argument("--job", type=int, default=0, help="this job's index")
    parser.add_argument("--jobs", type=int, default=1, help="number of jobs sharing the family")
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples (default: by mode)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    use_cpu_cores()
    summary = experiment.run(
        args.mode,
        args.out,
        tuple(args.set),
        args.job,
        args.jobs,
        args.bootstrap,
        progress=not args.quiet,
    )
    if summary is None:
        print(
            "this job's share is done; other jobs' chunks are unfinished: run them, then "
            "run this command again to fit the kernel models and write the analysis"
        )
        return None
    write(summary, args.out)
    print(tables(summary))
    return summary


if __name__ == "__main__":
    main()
