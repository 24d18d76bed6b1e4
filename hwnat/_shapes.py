"""Input shapes of a model: one shape ``(1, C, H, W)``, or a tuple of shapes for a model with several
inputs (a fusion block). Exporters, runtimes and devices accept either; this is the one place that tells
them apart."""

from __future__ import annotations

from collections.abc import Sequence

from hwnat.errors import BadInputError


def as_shapes(shape: Sequence) -> tuple[tuple[int, ...], ...]:
    """The shapes of every input: ``(1, 3, 8, 8)`` -> ``((1, 3, 8, 8),)``; a sequence of shapes is kept.

    Example:
        >>> as_shapes([[1, 16, 8, 8], (1, 32, 16, 16)])
        ((1, 16, 8, 8), (1, 32, 16, 16))
    """
    try:
        if len(shape) and isinstance(shape[0], (Sequence,)) and not isinstance(shape[0], str):
            out = tuple(tuple(int(d) for d in s) for s in shape)
        else:
            out = (tuple(int(d) for d in shape),)
    except (TypeError, ValueError):
        raise BadInputError(f"input shape {shape!r}: expected a list of integers or a list of such lists") from None
    if not out:
        raise BadInputError("input shape: no input")
    return out


def one_or_many(shapes: Sequence[Sequence[int]]):
    """Inverse of ``as_shapes``: one shape when there is one input, else the tuple of shapes."""
    shapes = tuple(tuple(int(d) for d in s) for s in shapes)
    return shapes[0] if len(shapes) == 1 else shapes
