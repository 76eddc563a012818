"""Command line of the theory-vs-width experiment (the science is in experiment.py).

Writes ``summary.json`` (settings, timings, every number, per-example memorization),
``table.md`` and ``table.csv``:

    python -m experiments.theory_vs_width [--quick] --out DIR [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from experiments.theory_vs_width import experiment
from experiments.theory_vs_width.report import tables, write
from memjax import use_cpu_cores


def parse_overrides(items: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    """Apply ``KEY=VALUE`` overrides (VALUE parsed as YAML) to known settings only."""
    settings = dict(settings)
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in settings:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY in {sorted(settings)}")
        settings[key] = yaml.safe_load(value)
    return settings


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.theory_vs_width",
        description=experiment.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="the CPU-minutes setting")
    parser.add_argument("--out", required=True, help="directory for summary.json and tables")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of config.yaml, e.g. --set widths=[64,4096]",
    )
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    settings = parse_overrides(args.set, experiment.load_settings(mode))
    use_cpu_cores()
    summary = experiment.run(settings)
    write(summary, args.out)
    print(tables(summary))
    return summary


if __name__ == "__main__":
    main()
