"""Run the privacy-preservation families (resumed if interrupted), then write their tables.

    python -m experiments.privacy_preservation --mode quick --out DIR

``experiment.run`` trains (or reuses) the DP-SGD family in ``DIR/dp`` and the random-label
family in ``DIR/labels``; the analysis writes summary.json and tables.md to ``DIR``.
"""

from __future__ import annotations

import argparse
from typing import Any

import memjax as mj
from experiments.privacy_preservation.analysis import tables, write
from experiments.privacy_preservation.experiment import run


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("quick", "full"), required=True, help="the configs' mode")
    p.add_argument("--out", required=True, help="directory for the families and tables")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    mj.use_cpu_cores()
    result = run(args.mode, args.out, progress=not args.no_progress)
    if result is None:
        print(f"{args.out}: unfinished chunks remain (other jobs?); run again to analyse")
        return None
    write(args.out, result)
    print(tables(result))
    return result


if __name__ == "__main__":
    main()
