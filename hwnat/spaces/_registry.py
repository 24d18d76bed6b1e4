"""Registry of search spaces: one front door, ``get_space(name)``; no I/O at import."""

from __future__ import annotations

from hwnat._registry import Registry
from hwnat.spaces._base import SearchSpace

SPACES: Registry[type[SearchSpace]] = Registry("search space", normalize=lambda s: s.replace("_", "-"),
                                               attr="name")


def register_space(name: str):
    """Class decorator: register a ``SearchSpace`` subclass under ``name``."""
    return SPACES.register(name)


def list_spaces(pattern: str = "*") -> list[str]:
    """Registered space names matching a glob pattern, sorted."""
    return SPACES.names(pattern)


def get_space(name: str, **options) -> SearchSpace:
    """Instantiate a registered space (``ofa_mbv3`` is accepted for ``ofa-mbv3``).

    Raises:
        BadInputError: unknown name (the message lists the valid ones) or bad options.
    """
    return SPACES.get(name)(**options)
