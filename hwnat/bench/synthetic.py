"""Synthetic workloads of known relative cost, to check that a bench setup catches real slowdowns.

A *conv stack* is ``blocks`` identical 3x3 convolution + ReLU layers at a fixed width and resolution.
Its latency is a fixed overhead plus ``blocks`` times one layer's cost, so a stack with 10% more blocks
does about 10% more work (slightly less in relative time, because of the overhead; measure the ratio
when it matters -- ``benchmarks/bench_false_alarms.py`` does).
"""

from __future__ import annotations

from pathlib import Path


def conv_stack(blocks: int, channels: int = 32, seed: int = 0):
    """A ``torch.nn.Sequential`` of a 1x1 stem to ``channels`` and ``blocks`` x (3x3 conv, ReLU).

    Example:
        >>> m = conv_stack(4, channels=8)
        >>> sum(isinstance(x, __import__("torch").nn.Conv2d) for x in m.modules())
        5
    """
    import torch
    from torch import nn

    if blocks < 1:
        raise ValueError("a conv stack needs at least one block")
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, channels, 1)]
    for _ in range(blocks):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers).eval()


def write_conv_stack(path: str | Path, blocks: int, channels: int = 32, size: int = 32,
                     seed: int = 0) -> Path:
    """Export a conv stack for input ``(1, 3, size, size)`` to an ONNX file; returns the path."""
    from hwnat.export.onnx import export_onnx

    return export_onnx(conv_stack(blocks, channels, seed), (1, 3, size, size), Path(path))
