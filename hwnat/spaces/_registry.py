"""Registry of search spaces: one front door, ``get_space(name)``; no I/O at import."""

from __future__ import annotations

from collections.abc import Callable
from fnmatch import fnmatch

from hwnat.errors import BadInputError
from hwnat.spaces._base import SearchSpace

_SPACES: dict[str, Callable[..., SearchSpace]] = {}


def register_space(name: str):
    """Class decorator: register a ``SearchSpace`` subclass under ``name``."""

    def deco(cls):
        cls.name = name
        _SPACES[name] = cls
        return cls

    return deco


def list_spaces(pattern: str = "*") -> list[str]:
    """Registered space names matching a glob pattern, sorted."""
    return sorted(n for n in _SPACES if fnmatch(n, pattern))


def get_space(name: str, **options) -> SearchSpace:
    """Instantiate a registered space. Accepts ``ofa_mbv3`` for ``ofa-mbv3``.

    Raises:
        BadInputError: unknown name (the message lists the valid ones) or bad options.
    """
    key = name.replace("_", "-")
    if key not in _SPACES:
        raise BadInputError(f"unknown search space {name!r}; expected one of: {', '.join(list_spaces())}")
    return _SPACES[key](**options)
