"""One registry type for every "registered by name" family (spaces, runtimes, transports, exporters):
``register`` as a decorator or a call, ``get`` with an error listing the valid names, ``names``."""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatch
from typing import Generic, TypeVar

from hwnat.errors import BadInputError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object.

    Args:
        what: what the names are, for error messages ("search space", "runtime"...).
        normalize: maps a user-given name to its registered form (e.g. ``_`` -> ``-``).
        attr: when set, ``register`` stores the name on the registered class under this attribute.

    Example:
        >>> r = Registry("colour")
        >>> r.register("red", 1)
        1
        >>> r.get("blue")
        Traceback (most recent call last):
        hwnat.errors.BadInputError: unknown colour 'blue'; expected one of: red
    """

    def __init__(self, what: str, normalize: Callable[[str], str] | None = None, attr: str | None = None):
        self.what = what
        self._normalize = normalize or (lambda s: s)
        self._attr = attr
        self._items: dict[str, T] = {}

    def register(self, name: str, obj=None):
        """``@registry.register("name")`` on a class, or ``registry.register("name", obj)``."""

        def add(o):
            if self._attr is not None:
                setattr(o, self._attr, name)
            self._items[name] = o
            return o

        return add if obj is None else add(obj)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a glob pattern, sorted."""
        return sorted(n for n in self._items if fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._normalize(name) in self._items

    def get(self, name: str) -> T:
        """The object registered under ``name``; ``BadInputError`` listing the valid names otherwise."""
        key = self._normalize(name) if isinstance(name, str) else name
        if key not in self._items:
            raise BadInputError(f"unknown {self.what} {name!r}; expected one of: {', '.join(self.names())}")
        return self._items[key]
