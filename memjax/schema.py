"""Typed checks of config settings: no silent coercion, every error names the setting.

A config value is accepted only if it already is what the setting means: an integer setting
takes an int (or an integral float such as ``1e4``), never a string, a bool or ``8.9``; a
number setting takes a finite int or float, never a string or NaN/inf; a flag takes a bool,
never ``"no"``. Errors say the setting's dotted path, the value given and what is allowed.

``load_yaml`` reads YAML numbers the way YAML 1.2 and JSON do: ``1e-2`` is a float (PyYAML's
YAML 1.1 resolver reads it as the string "1e-2").
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from memjax.errors import ConfigError, SettingError

__all__ = [
    "ConfigError",
    "SettingError",
    "integer",
    "number",
    "flag",
    "choice",
    "text",
    "positive_ints",
    "section",
    "load_yaml",
    "yaml_problem",
    "MAX_YAML_NODES",
    "MAX_YAML_DEPTH",
]


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    def show(x: float) -> str:
        return str(x) if isinstance(x, int) else f"{x:g}"

    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {show(low)}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {show(high)}")
    return " and ".join(parts)


def _in_bounds(x: float, low, high, low_open: bool, high_open: bool) -> bool:
    if low is not None and (x <= low if low_open else x < low):
        return False
    return not (high is not None and (x >= high if high_open else x > high))


def integer(value: Any, setting: str, low: int | None = None, high: int | None = None) -> int:
    """An int in [low, high]; integral floats (1e4) are accepted, bools and strings are not."""
    allowed = " ".join(filter(None, ("an integer", _bounds(low, high, False, False))))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SettingError(setting, value, allowed)
    integral = isinstance(value, numbers.Integral)
    if not integral and (not math.isfinite(value) or value != math.floor(value)):
        raise SettingError(setting, value, allowed)
    out = int(value)
    if not _in_bounds(out, low, high, False, False):
        raise SettingError(setting, value, allowed)
    return out


def number(
    value: Any,
    setting: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite int or float in the given (open or closed) bounds, as a float."""
    bounds = _bounds(low, high, low_open, high_open)
    allowed = " ".join(filter(None, ("a finite number", bounds)))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SettingError(setting, value, allowed)
    out = float(value)
    if not math.isfinite(out) or not _in_bounds(out, low, high, low_open, high_open):
        raise SettingError(setting, value, allowed)
    return out


def flag(value: Any, setting: str) -> bool:
    """true or false, nothing else (``"no"`` and 0 are refused)."""
    if not isinstance(value, bool):
        raise SettingError(setting, value, "true or false")
    return value


def choice(value: Any, setting: str, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise SettingError(setting, value, f"one of {list(allowed)}")
    return value


def text(value: Any, setting: str, pattern: str | None = None, what: str = "a string") -> str:
    """A string, matching ``pattern`` (a full match) if given; ``what`` describes it."""
    if not isinstance(value, str) or (pattern is not None and not re.fullmatch(pattern, value)):
        raise SettingError(setting, value, what)
    return value


def positive_ints(
    value: Any, setting: str, high: int, length: int | None = None
) -> tuple[int, ...]:
    """A non-empty list of integers in [1, high] (exactly ``length`` of them if given)."""
    size = "a non-empty list" if length is None else f"a list of {length}"
    allowed = f"{size} of integers in [1, {high}]"
    if not isinstance(value, (list, tuple)) or not value:
        raise SettingError(setting, value, allowed)
    if length is not None and len(value) != length:
        raise SettingError(setting, value, allowed)
    return tuple(integer(v, f"{setting}[{i}]", 1, high) for i, v in enumerate(value))


def section(
    value: Any, setting: str, allowed: Iterable[str], required: Iterable[str] = ()
) -> dict[str, Any]:
    """A mapping with string keys among ``allowed`` holding every key of ``required``."""
    allowed = sorted(allowed)
    if not isinstance(value, Mapping):
        raise SettingError(setting, value, f"a mapping of the settings {allowed}")
    unknown = sorted((k for k in value if k not in allowed), key=str)
    if unknown:
        where = f"{setting}." if setting else ""
        known = f"the {setting or 'study'} settings are {allowed}"
        raise SettingError(f"{where}{unknown[0]}", value[unknown[0]], known, unknown=True)
    for key in required:
        if key not in value:
            raise SettingError(f"{setting}.{key}" if setting else key, None, "a value (required)")
    return dict(value)


# YAML 1.2 / JSON floats: an exponent needs no dot (1e-2), a dot needs no digits after it.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


# A config document's bounds with its aliases expanded: configs hold hundreds of settings,
# an alias bomb a few hundred bytes that expand to a billion nodes (refused while composing,
# before any copy, sweep or JSON dump of it multiplies them).
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 100


class _Loader(yaml.SafeLoader):
    """SafeLoader (no ``!!python`` tags) that reads ``1e-2`` as a float and refuses a
    document past MAX_YAML_NODES nodes or MAX_YAML_DEPTH levels, aliases expanded, or one
    whose alias refers to itself."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        # id(node) -> (nodes, depth) of the node's expanded tree, for the aliases to it
        self._extent: dict[int, tuple[int, int]] = {}
        self._expanded = 0  # nodes of the document so far, every alias counted at its extent
        self._level = 0  # nesting as written

    def _refuse(self, problem: str, mark: Any) -> None:
        raise yaml.composer.ComposerError(None, None, problem, mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        self._level += 1
        if self._level > MAX_YAML_DEPTH:
            self._refuse(f"nested deeper than {MAX_YAML_DEPTH} levels", mark)
        node = super().compose_node(parent, index)
        self._level -= 1
        if alias:
            if id(node) not in self._extent:
                self._refuse("an alias to the node that contains it (a recursive alias)", mark)
            nodes, depth = self._extent[id(node)]
        else:
            children = (
                [c for pair in node.value for c in pair]
                if isinstance(node, yaml.MappingNode)
                else node.value
                if isinstance(node, yaml.SequenceNode)
                else []
            )
            inner = [self._extent[id(c)] for c in children]
            nodes = 1 + sum(n for n, _ in inner)
            depth = 1 + max((d for _, d in inner), default=0)
            self._extent[id(node)] = (nodes, depth)
            nodes = 1  # its children were counted as they were composed
        self._expanded += nodes
        if self._expanded > MAX_YAML_NODES:
            self._refuse(f"more than {MAX_YAML_NODES} nodes with aliases expanded", mark)
        if self._level + depth > MAX_YAML_DEPTH:
            self._refuse(f"nested deeper than {MAX_YAML_DEPTH} levels with aliases expanded", mark)
        return node


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def load_yaml(text_or_stream: Any) -> Any:
    """``yaml.safe_load`` with YAML 1.2 floats (``1e-2`` is 0.01, not a string), bounded in
    size and depth (a ``yaml.YAMLError`` past MAX_YAML_NODES or MAX_YAML_DEPTH)."""
    return yaml.load(text_or_stream, Loader=_Loader)


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error in one line: where (line, column) and what."""
    mark = getattr(err, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = " ".join(
        str(part) for part in (getattr(err, "context", None), getattr(err, "problem", None)) if part
    )
    return where + " ".join((what or str(err)).split())
