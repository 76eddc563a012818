"""The paper's figures, regenerated from stored memjax studies with one command.

Each figure is one module ``figNN_<name>.py`` exposing ``FIGURE`` (a ``FigureSpec``), found
by ``registry.figures()``: which studies it needs, ``compute(ctx) -> data`` (a JSON-ready
dict of every number it plots, read from the stored studies) and ``draw(data) -> matplotlib
Figure`` (a pure function of that dict, so the JSON written beside each picture holds
exactly what the picture shows).

    python -m paper_figures [NAME ...] [--quick] [--out DIR]     # from the repository root

paper_figures lives in the source checkout next to ``memjax/`` (like ``experiments/``, whose
theory experiment figure 6 uses); it is a client of the library, never imported by it.
"""

from __future__ import annotations

from paper_figures.registry import figure_names, figure_spec, figures
from paper_figures.runner import make_figures

__all__ = ["figures", "figure_names", "figure_spec", "make_figures"]
