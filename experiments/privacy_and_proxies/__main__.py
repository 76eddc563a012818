"""Run the privacy-and-proxies study (resumed if interrupted), then write its tables.

    python -m experiments.privacy_and_proxies --mode quick --out DIR

The study is ``config.yaml`` in the chosen mode, stored in ``DIR/study`` exactly as
``memjax run experiments/privacy_and_proxies/config.yaml --mode quick --out DIR/study``
stores it (so a study trained that way, by several jobs and merged, is reused); the
analysis (``analysis.analyze``) writes summary.json, tables.md, per_example.csv and roc.csv
to ``DIR``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import memjax as mj
from experiments.privacy_and_proxies.analysis import analyze, tables, write
from memjax.study import load_config, run_study

CONFIG = os.path.join(os.path.dirname(__file__), "config.yaml")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("quick", "full"), required=True, help="config.yaml's mode")
    p.add_argument("--out", required=True, help="directory for the study (DIR/study) and tables")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of the study, e.g. --set subsets.replicas=64",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    cfg = load_config(CONFIG, args.mode, tuple(args.sets))
    mj.use_cpu_cores()
    study_dir = os.path.join(args.out, "study")
    run_study(cfg, study_dir, progress=not args.no_progress)
    start = time.perf_counter()
    result = analyze(mj.open_study(study_dir))
    write(args.out, result)
    print(tables(result["summary"]))
    print(f"analysis {time.perf_counter() - start:.0f} s; written to {args.out}")
    return result["summary"]


if __name__ == "__main__":
    main()
