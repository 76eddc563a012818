"""memjax's errors: every refusal of bad input is a ``MemjaxError`` (a ``ValueError``), one
class per kind of problem, each with the exit status the command line gives it.

    MemjaxError                  bad input (exit 2)
    ├── ConfigError              a setting, argument or config file
    │   ├── SettingError         one setting's value: ``setting``, ``value``, ``allowed``
    │   └── UnknownOptionError   a name no registry holds (also a ``KeyError``)
    ├── DataError                a dataset, data file or the arrays given to a function
    │   ├── DataTypeError        an array of the wrong dtype (also a ``TypeError``)
    │   └── MissingArraysError   a file without arrays it must hold (also a ``KeyError``)
    ├── SizeError                more than the memory or disk can hold
    └── StoreError               a store holds another study or partition (exit 3)
        └── CorruptionError      stored bytes that are damaged or another study's
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MemjaxError",
    "ConfigError",
    "SettingError",
    "DataError",
    "DataTypeError",
    "SizeError",
    "StoreError",
    "CorruptionError",
    "MissingArraysError",
    "UnknownOptionError",
]


class MemjaxError(ValueError):
    """Bad input, refused before anything is written, with a message that names it."""

    exit_code = 2  # `memjax` exits with this status, printing the message as one line


class ConfigError(MemjaxError):
    """A setting, argument or config file is not allowed."""


class SettingError(ConfigError):
    """One setting's value is not allowed: ``setting`` (dotted path), ``value``, ``allowed``."""

    def __init__(self, setting: str, value: Any, allowed: str, unknown: bool = False) -> None:
        self.setting, self.value, self.allowed, self.unknown = setting, value, allowed, unknown
        if unknown:
            super().__init__(f"unknown setting {setting} (value {value!r}); {allowed}")
        else:
            super().__init__(f"setting {setting}: got {value!r}; allowed: {allowed}")

    def within(self, prefix: str) -> SettingError:
        """The same error for the setting seen from an enclosing section ``prefix``."""
        return SettingError(f"{prefix}.{self.setting}", self.value, self.allowed, self.unknown)


class DataError(MemjaxError):
    """A dataset, a data file or arrays given to a function are not what they must be."""


class DataTypeError(DataError, TypeError):
    """An array of the wrong dtype."""


class SizeError(MemjaxError):
    """The work asked for needs more memory or disk than there is."""


class StoreError(MemjaxError):
    """A store holds another study, another job partition, or lacks what was asked of it."""

    exit_code = 3


class CorruptionError(StoreError):
    """Stored bytes disagree with what was written, or were written by another study."""


class MissingArraysError(DataError, KeyError):
    """A file lacks arrays it must hold (also a ``KeyError``, printed as its plain message)."""

    __str__ = ValueError.__str__


class UnknownOptionError(ConfigError, KeyError):
    """A name no registry holds (also a ``KeyError``, printed as its plain message)."""

    __str__ = ValueError.__str__
