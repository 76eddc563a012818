"""Renamed keywords, accepted under their old name with a warning for one release."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def renamed_keyword(old: str, new: str) -> Callable[[F], F]:
    """``fn(old=v)`` means ``fn(new=v)`` and warns (DeprecationWarning); both at once is an
    error. Why: memory tiles are *tiles* in memjax's words (a *block* is the balanced
    design's unit), and a keyword users wrote keeps working while they move."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(f"{fn.__name__}() got both {old}= and {new}=; use {new}=")
                warnings.warn(
                    f"{fn.__name__}({old}=...) is now {new}=; {old}= goes in the next release",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return call  # type: ignore[return-value]

    return wrap
