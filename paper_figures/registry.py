"""The figures, in paper order, by the name ``memjax figures NAME`` takes."""

from __future__ import annotations

from importlib import import_module

from paper_figures.spec import FigureSpec

__all__ = ["FIGURE_NAMES", "figure_spec", "check_names"]

MODULES = {
    "memorization": "fig01_memorization",
    "extremes": "fig02_extremes",
    "marginal_utility": "fig03_marginal_utility",
    "influence": "fig04_influence",
    "convergence": "fig05_convergence",
    "theory": "fig06_theory",
    "long_tail": "fig07_long_tail",
    "mislabeled": "fig08_mislabeled",
    "privacy": "fig09_privacy",
    "forgetting": "fig10_forgetting",
    "consistency": "fig11_consistency",
}
FIGURE_NAMES = tuple(MODULES)


def check_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """The requested figures in paper order (all if none); unknown names fail with the list."""
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        raise ValueError(
            f"unknown figure name(s) {', '.join(map(repr, unknown))}: "
            f"valid names are {', '.join(FIGURE_NAMES)}"
        )
    return [n for n in FIGURE_NAMES if n in names] if names else list(FIGURE_NAMES)


def figure_spec(name: str) -> FigureSpec:
    """The FigureSpec of one figure (its module is imported on first use)."""
    (name,) = check_names([name])
    return import_module(f"paper_figures.{MODULES[name]}").FIGURE
