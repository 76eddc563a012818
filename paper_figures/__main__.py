"""The paper's figures from the command line (run from the repository root):

    python -m paper_figures [NAME ...] [--quick] [--out DIR]
    python -m paper_figures --list

Studies the figures need are trained on first use into ``OUT/studies`` and reused after, so
a second run only redraws; a run that was stopped resumes when started again. Exit status:
0 when every requested figure was written, 1 when some failed (the others are written and
indexed), 2 for bad input (unknown names, configs), 4 when the operating system refused,
130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys

from memjax import use_cpu_cores
from memjax.cli import EXIT_CODES
from paper_figures.registry import figures
from paper_figures.runner import FiguresFailedError, make_figures

__all__ = ["main", "figure_table"]

PROG = "python -m paper_figures"


def figure_table() -> str:
    """Every figure as a Markdown table: number, name, title and the studies it reads."""
    lines = ["| # | name | title | studies |", "|---|---|---|---|"]
    for spec in figures().values():
        studies = ", ".join(spec.studies) or "none (its inputs are recorded as it runs)"
        lines.append(f"| {spec.number} | `{spec.name}` | {spec.title} | {studies} |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="The paper's figures (PNG, PDF, JSON and index.md) from stored studies.",
        epilog=f"figures: {', '.join(figures())}",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="figures to make (default: all)")
    p.add_argument(
        "--quick", action="store_true", help="quick configs (CPU, minutes) instead of full ones"
    )
    p.add_argument("--out", help="output directory (default: results/figures/<mode>)")
    p.add_argument(
        "--list", action="store_true", help="print the figures and their studies, make none"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Make the requested figures; returns the exit status (see the module docstring)."""
    args = _parser().parse_args(argv)
    if args.list:
        print(figure_table())
        return 0
    use_cpu_cores()
    prefix = f"{PROG}: error:"
    try:
        make_figures(args.names, quick=args.quick, out=args.out)
    except FiguresFailedError as err:
        print(f"{prefix} {err}", file=sys.stderr)
        return EXIT_CODES["unfinished"]
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"{prefix} {err}", file=sys.stderr)
        return EXIT_CODES["bad input"]
    except OSError as err:
        print(f"{prefix} {err}", file=sys.stderr)
        return EXIT_CODES["os"]
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; run it again to resume", file=sys.stderr)
        return EXIT_CODES["interrupted"]
    return 0


if __name__ == "__main__":
    sys.exit(main())
