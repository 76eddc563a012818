"""FigureSpec: what one figure needs (studies), computes (numbers) and draws (a picture)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from paper_figures.context import Context

__all__ = ["FigureSpec"]

Data = dict[str, Any]


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the paper.

    ``compute`` reads stored studies through the context and returns every number the
    figure shows (JSON-ready); ``draw`` and ``caption`` are pure functions of that dict, so
    the JSON written beside the picture is exactly what was plotted. ``studies`` names the
    study configs (stems under ``configs/studies``) the figure reads (checked before
    anything runs); inputs beyond studies are recorded through ``Context.note``.
    """

    number: int
    name: str
    title: str
    studies: tuple[str, ...]
    compute: Callable[[Context], Data]
    draw: Callable[[Data], Figure]
    caption: Callable[[Data], str]

    @property
    def stem(self) -> str:
        """File name stem of the outputs, e.g. ``fig01_memorization``."""
        return f"fig{self.number:02d}_{self.name}"
