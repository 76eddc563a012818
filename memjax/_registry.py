"""Registries: an option's name and its implementation in one place (big_vision's shape).

An implementation registers itself where it is defined, with ``@REGISTRY.register(name)``;
the registry is the list of allowed names that configs, ``--help`` and errors show, so no name
list sits beside an if-chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from memjax.errors import UnknownOptionError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Names (in registration order) -> implementations of one kind of option."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")`` above the implementation registers it."""

        def add(item: T) -> T:
            if name in self._items:
                raise RuntimeError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = item
            return item

        return add

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise UnknownOptionError(
                f"unknown {self.kind} {name!r}: use one of {list(self._items)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"
