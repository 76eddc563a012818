"""Config files: one YAML document with optional modes (named overrides) and --set overrides.

A config file is a study's settings (a family's, with ``sweep:``) plus, optionally,
``modes: {NAME: {dotted.setting: value, ...}}``: e.g. ``quick`` and ``full`` variants of one
study in one file. ``resolve`` applies the selected mode's overrides, then each ``--set
dotted.setting=value`` (value read as YAML), and returns the plain document, which the
study or family schema then checks strictly (so a misspelt key or a bad value is named).
``sweep.<dotted.setting>`` addresses one swept setting (sweep keys contain dots themselves).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from memjax import schema
from memjax.errors import ConfigError

__all__ = ["resolve", "set_setting", "setting_parts", "parse_set", "read", "ConfigFileError"]

MODE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
# A config file is settings: kilobytes (this bound is reached only by something else).
MAX_CONFIG_BYTES = 10_000_000
KEY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def setting_parts(key: Any) -> list[str]:
    """The path of a dotted setting name (``sweep.a.b`` is [sweep, a.b]); refused if malformed."""
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise schema.SettingError(
            str(key), key, "a dotted setting name such as train.epochs", unknown=True
        )
    parts = key.split(".")
    return ["sweep", ".".join(parts[1:])] if parts[0] == "sweep" and len(parts) > 1 else parts


def set_setting(doc: Mapping[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with the dotted setting ``key`` set to ``value``; missing sections
    are created (the schema then refuses unknown ones, naming them)."""
    parts = setting_parts(key)
    out = copy.deepcopy(dict(doc))
    node = out
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif i == 0 and part == "dataset" and isinstance(child, str):
            child = node[part] = {"name": child}  # the shorthand `dataset: NAME`
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise schema.SettingError(where, child, f"a mapping of settings (to set {key})")
        node = child
    node[parts[-1]] = copy.deepcopy(value)
    return out


def parse_set(item: str) -> tuple[str, Any]:
    """``"train.epochs=10"`` -> ("train.epochs", 10): the value is read as YAML."""
    key, eq, text = item.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"--set {item!r}: expected dotted.setting=value, e.g. train.epochs=10")
    key = key.strip()
    setting_parts(key)
    try:
        return key, schema.load_yaml(text)
    except yaml.YAMLError:
        raise schema.SettingError(
            key, text, "a YAML value (e.g. 3, 0.1, true, [64, 64], {name: digits})"
        ) from None


def _modes(value: Any) -> dict[str, dict[str, Any]]:
    modes = {} if value is None else value
    if not isinstance(modes, Mapping):
        raise schema.SettingError("modes", value, "a mapping of mode names to overrides")
    for name, overrides in modes.items():
        schema.text(name, f"modes.{name}", MODE_PATTERN, "a mode name (letters, digits, _ -)")
        if overrides is not None and not isinstance(overrides, Mapping):
            raise schema.SettingError(
                f"modes.{name}", overrides, "a mapping of dotted settings to values"
            )
    return {name: dict(overrides or {}) for name, overrides in modes.items()}


def resolve(doc: Any, mode: str | None = None, sets: Iterable[str] = ()) -> dict[str, Any]:
    """The document with mode ``mode``'s overrides, then ``sets``, applied; ``modes`` removed.

    A config that declares modes needs one chosen; an unknown mode is refused naming them.
    """
    if not isinstance(doc, Mapping):
        raise schema.SettingError("config", doc, "a YAML mapping of settings")
    out = dict(doc)
    modes = _modes(out.pop("modes", None))
    if mode is not None:
        if mode not in modes:
            have = f"its modes are {list(modes)}" if modes else "it declares no modes"
            raise ConfigError(f"unknown mode {mode!r}: {have}")
        for key, value in modes[mode].items():
            out = set_setting(out, key, value)
    elif modes:
        raise ConfigError(f"this config declares modes {list(modes)}: choose one with --mode")
    for item in sets:
        out = set_setting(out, *parse_set(item))
    return out


class ConfigFileError(ConfigError):
    """A config file is not a readable YAML document within memjax's bounds."""


def read(path: str) -> Any:
    """The YAML document of a config file (``1e-2`` reads as a number; see memjax.schema),
    parsed safely (no ``!!python`` tags) and bounded: at most MAX_CONFIG_BYTES, and
    ``schema.MAX_YAML_NODES`` nodes and ``MAX_YAML_DEPTH`` levels with aliases expanded.
    Anything else is one ConfigFileError naming the file and the line."""
    with open(path, "rb") as fh:
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigFileError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes: not a config file")
    try:
        return schema.load_yaml(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigFileError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ConfigFileError(f"{path}: {schema.yaml_problem(err)}") from None
