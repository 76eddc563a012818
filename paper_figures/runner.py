"""make_figures: run or reuse the studies the requested figures need, then write each figure
(PNG, PDF, JSON) and the index. Studies are cached in ``OUT/studies``: a second run only
redraws."""

from __future__ import annotations

import time
from pathlib import Path

from paper_figures.context import Context
from paper_figures.index import write_index
from paper_figures.output import write_figure
from paper_figures.registry import check_names, figure_spec
from paper_figures.studies import log

__all__ = ["make_figures", "default_out", "FiguresFailedError"]


class FiguresFailedError(ValueError):
    """Some figures could not be made; the others were written and are in the index."""


def default_out(mode: str) -> Path:
    return Path("results") / "figures" / mode


def make_figures(
    names: list[str] | tuple[str, ...] = (),
    quick: bool = False,
    out: str | Path | None = None,
    config_dir: str | Path | None = None,
    progress: bool = True,
) -> list[Path]:
    """Make the named figures (all if none) and rewrite the index; return the JSON paths.

    A figure that fails does not stop the others: the rest are written and indexed, then
    ``FiguresFailedError`` names every failure.

    ``quick`` selects the configs' ``quick`` mode (CPU, minutes) instead of ``full``;
    ``config_dir`` replaces ``configs/`` (it must hold ``studies/*.yaml`` and may hold
    ``figures.yaml``, each declaring both modes). Outputs go to ``out`` (default
    ``results/figures/<mode>``).
    """
    mode = "quick" if quick else "full"
    specs = [figure_spec(name) for name in check_names(list(names))]
    out = Path(out) if out is not None else default_out(mode)
    ctx = Context(mode, out, Path(config_dir) if config_dir else None, progress)
    ctx.check_studies({s for spec in specs for s in spec.studies})
    written, failures = [], []
    for spec in specs:
        start = time.perf_counter()
        ctx.begin_figure()
        try:
            data = spec.compute(ctx)
            paths = write_figure(out, spec, data, list(ctx.used), mode)
        except Exception as err:
            failures.append(f"{spec.name}: {type(err).__name__}: {err}")
            log(f"{spec.stem}: FAILED after {time.perf_counter() - start:.1f} s: {err}")
            continue
        written.append(paths["json"])
        log(f"{spec.stem}: {time.perf_counter() - start:.1f} s -> {paths['png']}")
    index = write_index(out)
    log(f"index: {index}")
    if failures:
        raise FiguresFailedError(
            f"{len(failures)} of {len(specs)} figure(s) failed (the others were written): "
            + "; ".join(failures)
        )
    return written
