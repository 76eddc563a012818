"""The paper's figures, regenerated from stored memjax studies with one command.

Each figure is a module ``figNN_<name>.py`` exposing ``FIGURE`` (a ``FigureSpec``): which
studies it needs, ``compute(ctx) -> data`` (a JSON-ready dict of every number it plots, read
from the stored studies) and ``draw(data) -> matplotlib Figure`` (a pure function of that
dict, so the JSON written beside each picture holds exactly what the picture shows).

    memjax figures [NAME ...] [--quick] [--out DIR]     # or: python -m paper_figures ...

paper_figures lives in the source checkout next to ``memjax/`` (like ``experiments/``, whose
theory experiment figure 6 uses); it is not part of the installed library.
"""

from __future__ import annotations

from paper_figures.registry import FIGURE_NAMES, figure_spec
from paper_figures.runner import make_figures

__all__ = ["FIGURE_NAMES", "figure_spec", "make_figures"]
