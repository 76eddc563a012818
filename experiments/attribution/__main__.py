"""Run the attribution experiment (resumed if interrupted), then write its tables.

    python -m experiments.attribution --mode quick --out DIR [--parts lds loo control]

``experiment.run`` trains (or reuses) the studies of each part under ``DIR/<part>``; the
summary goes to ``DIR/summary.json`` and ``DIR/tables.md`` (figure 12 reads the same).
"""

from __future__ import annotations

import argparse
from typing import Any

import memjax as mj
from experiments.attribution.analysis import tables, write
from experiments.attribution.experiment import PARTS, run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=("quick", "full"), required=True, help="the config's mode")
    p.add_argument("--out", required=True, help="directory for the studies and tables")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run")
    args = p.parse_args(argv)
    mj.use_cpu_cores()
    summary = run(args.mode, args.out, tuple(args.parts))
    write(args.out, summary)
    print(tables(summary))
    return summary


if __name__ == "__main__":
    main()
