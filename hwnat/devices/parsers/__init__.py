"""Native benchmark harnesses, one module each: read their text output into a ``ParsedRun`` and build
their command lines. One front door: ``get_parser(name)`` / ``list_parsers()``; nothing is read at import.

Example:
    >>> from hwnat.devices.parsers import get_parser, list_parsers
    >>> list_parsers()
    ['benchmark_model', 'onnxruntime_perf_test', 'trtexec']
    >>> get_parser("ort").name
    'onnxruntime_perf_test'
"""

from __future__ import annotations

from hwnat.devices.parsers import benchmark_model, onnxruntime_perf_test, trtexec
from hwnat.devices.parsers._base import HarnessOutputError, HarnessParser, ParsedRun, Summary
from hwnat.errors import BadInputError

_PARSERS: dict[str, HarnessParser] = {h.name: h for h in (trtexec.HARNESS, benchmark_model.HARNESS,
                                                         onnxruntime_perf_test.HARNESS)}
_ALIASES: dict[str, str] = {a: h.name for h in _PARSERS.values() for a in h.aliases}


def list_parsers() -> list[str]:
    """Registered harness names, sorted (aliases such as ``ort`` are accepted by ``get_parser`` too)."""
    return sorted(_PARSERS)


def harness_names() -> list[str]:
    """Every name ``get_parser`` accepts: registered names and aliases, sorted."""
    return sorted([*_PARSERS, *_ALIASES])


def get_parser(name: str) -> HarnessParser:
    """The harness registered under ``name`` or one of its aliases (``ort``, ``tflite``, ``tensorrt``...).

    Raises:
        BadInputError: unknown name; the message lists the valid ones.
    """
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _PARSERS:
        raise BadInputError(f"unknown harness {name!r}; expected one of: {', '.join(list_parsers())} "
                            f"(aliases: {', '.join(sorted(_ALIASES))})")
    return _PARSERS[key]


def parse_log(harness: str, text: str) -> ParsedRun:
    """``get_parser(harness).parse(text)``."""
    return get_parser(harness).parse(text)


__all__ = ["HarnessOutputError", "HarnessParser", "ParsedRun", "Summary", "get_parser", "harness_names",
           "list_parsers", "parse_log"]
