"""The figures, found rather than listed: every module ``paper_figures/figNN_<name>.py``
exposing ``FIGURE`` (a FigureSpec) is a figure, so adding a figure is adding one file.

The FigureSpec is the figure's only registration (number, name, title, studies); its module
must be named after it (``FigureSpec.stem``), so file names and specs cannot disagree.
"""

from __future__ import annotations

import pkgutil
import re
from collections.abc import Mapping
from functools import cache
from importlib import import_module
from pathlib import Path
from typing import Any

from paper_figures.spec import FigureSpec

__all__ = ["figures", "figure_names", "figure_spec", "check_names", "collect"]

MODULE_NAME = re.compile(r"fig\d+_\w+")


def collect(modules: Mapping[str, Any]) -> dict[str, FigureSpec]:
    """The figures of ``modules`` (module name -> module) by name, in paper order.

    A module without a FigureSpec ``FIGURE``, one not named after its figure, and two figures
    with one number or one name are refused, naming the modules.
    """
    specs: dict[str, FigureSpec] = {}
    for module_name, module in modules.items():
        spec = getattr(module, "FIGURE", None)
        if not isinstance(spec, FigureSpec):
            raise TypeError(f"figure module {module_name} defines no FIGURE (a FigureSpec)")
        if spec.stem != module_name:
            raise ValueError(
                f"figure module {module_name} holds figure {spec.stem}: name the module "
                f"{spec.stem}.py (figNN_<name>) or correct its FIGURE's number and name"
            )
        specs[module_name] = spec
    for field in ("number", "name"):
        seen: dict[Any, str] = {}
        for module_name, spec in specs.items():
            value = getattr(spec, field)
            if value in seen:
                raise ValueError(
                    f"figure modules {seen[value]} and {module_name} share the {field} {value!r}"
                )
            seen[value] = module_name
    ordered = sorted(specs.values(), key=lambda s: s.number)
    return {spec.name: spec for spec in ordered}


@cache
def figures() -> dict[str, FigureSpec]:
    """Every figure of the paper by name, in paper order (the modules are imported once)."""
    found = pkgutil.iter_modules([str(Path(__file__).parent)])
    names = sorted(info.name for info in found if MODULE_NAME.fullmatch(info.name))
    return collect({name: import_module(f"{__package__}.{name}") for name in names})


def figure_names() -> tuple[str, ...]:
    """Every figure's name, in paper order (what ``python -m paper_figures NAME`` takes)."""
    return tuple(figures())


def check_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """The requested figures in paper order (all if none); unknown names fail with the list."""
    valid = figure_names()
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(
            f"unknown figure name(s) {', '.join(map(repr, unknown))}: "
            f"valid names are {', '.join(valid)}"
        )
    return [n for n in valid if n in names] if names else list(valid)


def figure_spec(name: str) -> FigureSpec:
    """The FigureSpec of one figure; an unknown name fails with the valid names."""
    (name,) = check_names([name])
    return figures()[name]
