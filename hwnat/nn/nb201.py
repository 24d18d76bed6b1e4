"""Torch modules of the NAS-Bench-201 cell network (Dong & Yang, "NAS-Bench-201: Extending the Scope of
Reproducible Neural Architecture Search", ICLR 2020).

The network for CIFAR: a 3x3 conv stem, three stages of identical cells (16, 32, 64 channels) joined by
residual reduction blocks, then BN-ReLU, global average pooling and a linear classifier. A cell is a DAG of
four nodes; node ``j`` sums the ops on its edges ``i -> j`` (``i < j``); node 3 is the output.

Every op whose name is not ``none`` is built and run. ``hwnat.spaces.nasbench201`` passes the ops of
*dead* edges (into a node that cannot reach the cell output) as ``none``: their result is never used, so
ONNX export and runtimes would drop them anyway, and the space's FLOPs and block slots count the same
network (``live_edges`` there holds the rule). A node
with no incoming op is ``x * 0``, not a constant, so that an exporter's constant folding cannot remove the
ops that consume it. The element-wise work of a node (its ``Add`` operators, or the ``Mul`` of ``x * 0``)
runs as separate operators in the exported graph; ``SumOfCopies`` and ``Zero`` time that work alone as
blocks of the space.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: edges of a cell as (to, from), in the order of the canonical string and the genome
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv2d (no bias, "same" padding) -> BatchNorm2d."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1):
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


def make_op(name: str, c: int) -> nn.Module | None:
    """The module of one cell op on ``c`` channels (stride 1, shape-preserving); ``None`` for ``none``.

    Raises:
        ValueError: unknown op name.
    """
    if name == "none":
        return None
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}")


class SumOfCopies(nn.Module):
    """``n`` copies of the input summed with ``n - 1`` element-wise adds: the work of a cell node that sums
    ``n`` live inputs, timed alone (the input is read ``n`` times, as the node reads ``n`` tensors)."""

    def __init__(self, n: int):
        super().__init__()
        if n < 2:
            raise ValueError(f"a sum needs at least 2 inputs, got {n}")
        self.n = int(n)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + x
        for _ in range(self.n - 2):
            out = out + x
        return out


class Zero(nn.Module):
    """``x * 0``: a cell node with no live input (kept as a ``Mul`` so export cannot fold it away)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.0


class Cell(nn.Module):
    """One NAS-Bench-201 cell on ``c`` channels; ``ops`` are the six op names in ``EDGES`` order."""

    def __init__(self, ops: Sequence[str], c: int):
        super().__init__()
        if len(ops) != len(EDGES):
            raise ValueError(f"a cell needs {len(EDGES)} ops, got {len(ops)}")
        self.edges = nn.ModuleDict()
        self._inputs: dict[int, list[tuple[str, int]]] = {1: [], 2: [], 3: []}
        for (to, frm), name in zip(EDGES, ops, strict=True):
            op = make_op(name, c)
            if op is not None:
                key = f"e{to}_{frm}"
                self.edges[key] = op
                self._inputs[to].append((key, frm))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for to in (1, 2, 3):
            terms = [self.edges[key](nodes[frm]) for key, frm in self._inputs[to]]
            if not terms:
                nodes.append(x * 0.0)
                continue
            out = terms[0]
            for t in terms[1:]:
                out = out + t
            nodes.append(out)
        return nodes[3]


class ResidualReduction(nn.Module):
    """NAS-Bench-201's ``ResNetBasicblock`` with stride 2 between stages: ReLU-Conv3x3(s2)-BN,
    ReLU-Conv3x3-BN, plus the shortcut AvgPool2d(2) -> Conv1x1 (no BN)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class Stem(nn.Sequential):
    """Conv3x3 (no bias) -> BatchNorm2d."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))


class Head(nn.Sequential):
    """BatchNorm2d -> ReLU -> global average pool -> flatten -> Linear; output ``(N, num_classes)``."""

    def __init__(self, c: int, num_classes: int):
        super().__init__(nn.BatchNorm2d(c), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(1),
                         nn.Linear(c, num_classes))


class NB201Network(nn.Sequential):
    """The NAS-Bench-201 network: stem, ``len(channels)`` stages of ``cells`` identical cells with a
    residual reduction between stages, head.

    Args:
        ops: the six op names of the cell, in ``EDGES`` order (shared by every cell).
        channels: channels of each stage (default 16, 32, 64).
        cells: cells per stage (default 5).
        num_classes: classifier outputs (default 100).
    """

    def __init__(self, ops: Sequence[str], channels: Sequence[int] = (16, 32, 64), cells: int = 5,
                 num_classes: int = 100):
        layers: list[nn.Module] = [Stem(3, channels[0])]
        for s, c in enumerate(channels):
            if s:
                layers.append(ResidualReduction(channels[s - 1], c))
            layers += [Cell(ops, c) for _ in range(cells)]
        layers.append(Head(channels[-1], num_classes))
        super().__init__(*layers)
