"""A small name -> object registry, in the style of timm's ``@register_model``.

One instance per kind of thing (models, data sets, optimisers, studies); each raises on a duplicate
name and answers an unknown name with close matches.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from bench.errors import unknown_value

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects, with optional per-name metadata."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def add(self, name: str, obj: T, **meta: Any) -> T:
        """Register ``obj`` under ``name``; a second object under the same name is an error."""
        if name in self._items:
            raise ValueError(f"duplicate {self.kind} name {name!r}")
        self._items[name] = obj
        self._meta[name] = dict(meta)
        return obj

    def remove(self, name: str) -> T:
        """Unregister ``name`` (for tests that register temporary entries); returns the object."""
        self._meta.pop(name, None)
        return self._items.pop(name)

    def register(self, name: str | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; the name defaults to the object's ``__name__``."""

        def deco(obj: T) -> T:
            return self.add(name or getattr(obj, "__name__"), obj, **meta)  # noqa: B009 - T need not have one

        return deco

    def get(self, name: str) -> T:
        """The object registered under ``name``; a :class:`UserError` with close matches if none."""
        try:
            return self._items[name]
        except KeyError:
            raise unknown_value(self.kind, name, self._items) from None

    def meta(self, name: str) -> dict[str, Any]:
        """Metadata given at registration (empty dict if none)."""
        self.get(name)
        return dict(self._meta[name])

    def names(self, pattern: str = "*") -> list[str]:
        """Sorted names matching a shell-style ``pattern`` (e.g. ``'resnet*'``)."""
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
