"""Torch modules of the MTL-NAS fusion network (Gao et al., "MTL-NAS: Task-Agnostic Neural Architecture
Search towards General-Purpose Multi-Task Learning", CVPR 2020), with NDDR fusion ops (Gao et al.,
"NDDR-CNN: Layerwise Feature Fusing in Multi-Task CNNs by Neural Discriminative Dimensionality
Reduction", CVPR 2019).

``MTLNet`` holds K single-task backbones of conv3x3-BN-ReLU layers of the same shape, one classifier head
per task, and one fusion op after every layer of every task. Layer ``i`` of every task is computed first
(``h[t][i] = layer(f[t][i-1])``); then the fusion op of ``(t, i)`` mixes the task's own ``h[t][i]`` with
the ``h`` of its source edges (other tasks' layers ``j <= i``; a source of a larger spatial size is
average-pooled down by the product of the strides in between). Sources are the backbone outputs before
fusion, so two tasks can fuse each other at the same layer without a cycle.

A fusion op (``Fusion``) is concat -> 1x1 conv (no bias) -> BN -> ReLU, initialised so that in eval mode
it returns its own input exactly: the own slice of the conv is the identity, the source slices are zero,
and the BN's running variance is ``1 - eps`` (so it divides by exactly 1). Own features are the output
of a ReLU, so the final ReLU keeps them. At initialisation the fused network therefore computes exactly
what the K single-task networks do.

A layer whose edges were all dropped keeps its fusion op on the own slice alone (a 1x1 conv over its
own channels): after training that op is a learned transform the outputs depend on. ``MTLNet(...,
fusion=False)`` builds the plain single-task backbones with no fusion ops at all.

``forward(x, gates)`` multiplies each edge's source by its gate (``gates``: ``(n_edges,)`` or
``(batch, n_edges)``, in the order of ``MTLNet.edges``): the relaxed network of the search, and with 0/1
gates the masked network that the physically pruned one (``hwnat.mtl.prune.rebuild``) must equal.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from hwnat.nn.costs import layer_shapes


def pool_factor(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> int:
    """Average-pool factor that maps a source's side to the target's (``ceil(h / f) == target``).

    Raises:
        ValueError: the source is smaller than the target, or no integer factor maps it.
    """
    (sh, sw), (dh, dw) = src_hw, dst_hw
    if (sh, sw) == (dh, dw):
        return 1
    f = -(-sh // dh)
    if sh < dh or sw < dw or -(-sh // f) != dh or -(-sw // f) != dw:
        raise ValueError(f"cannot pool a {sh}x{sw} source to {dh}x{dw}")
    return f


class ConvBNReLU(nn.Sequential):
    """Conv3x3 (no bias, padding 1) -> BatchNorm2d -> ReLU: one backbone layer."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU())


class Head(nn.Sequential):
    """Flatten -> Linear: one task's classifier over the whole ``(C, H, W)`` feature map, output
    ``(N, classes)``.

    Position-aware on purpose: MultiMNIST's tasks are the digit in the upper left and the one in the lower
    right of the same image, and a global-average-pooled head sees the two as the same features (it
    cannot tell which digit it is asked about). Flatten + Linear exports to ONNX as Flatten + Gemm.
    """

    def __init__(self, in_shape: Sequence[int], classes: int):
        c, h, w = (int(v) for v in in_shape)
        super().__init__(nn.Flatten(1), nn.Linear(c * h * w, classes))


class Fusion(nn.Module):
    """NDDR fusion op: ``relu(bn(conv1x1(cat(own, pool(src_1), ..., pool(src_n)))))``.

    Args:
        own_shape: ``(C, H, W)`` of the target's own features (also the output shape).
        src_shapes: ``(C, H, W)`` of each source, before pooling (same or larger side than ``own``).
        identity_init: own slice = identity, sources = 0, BN exactly the identity in eval mode.

    ``forward(own, *srcs)`` takes the sources in the order of ``src_shapes``.
    """

    def __init__(self, own_shape: Sequence[int], src_shapes: Sequence[Sequence[int]] = (),
                 identity_init: bool = True):
        super().__init__()
        c, h, w = (int(v) for v in own_shape)
        self.own_channels = c
        self.src_channels = [int(s[0]) for s in src_shapes]
        self.factors = [pool_factor((int(s[1]), int(s[2])), (h, w)) for s in src_shapes]
        self.conv = nn.Conv2d(c + sum(self.src_channels), c, 1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        if identity_init:
            self.reset_identity()

    @torch.no_grad()
    def reset_identity(self) -> None:
        """Own slice = identity, source slices = 0, BN = identity in eval mode (running var ``1 - eps``)."""
        c = self.own_channels
        self.conv.weight.zero_()
        self.conv.weight[:, :c, 0, 0].copy_(torch.eye(c))
        self.bn.reset_parameters()
        self.bn.running_var.fill_(1.0 - self.bn.eps)

    def forward(self, own: torch.Tensor, *srcs: torch.Tensor) -> torch.Tensor:
        parts = [own]
        for s, f in zip(srcs, self.factors, strict=True):
            parts.append(s if f == 1 else F.avg_pool2d(s, f, f, ceil_mode=True))
        x = torch.cat(parts, 1) if len(parts) > 1 else own
        return F.relu(self.bn(self.conv(x)))


class MTLNet(nn.Module):
    """K backbones of conv3x3-BN-ReLU layers, fusion ops after every layer, one head per task.

    Args:
        in_shape: ``(C, H, W)`` of the input image (shared by every task).
        widths: output channels of each layer (the same for every task).
        strides: stride of each layer (1 or 2).
        classes: number of classes of each task (its length is K).
        edges: the fusion edges this network holds, each ``(src_task, src_layer, dst_task, dst_layer)``
            (e.g. ``hwnat.spaces.mtl.Edge``); ``gates`` follow this order.
        fusion: ``False`` builds the plain single-task backbones (no fusion ops; ``edges`` must be empty).

    ``forward(x, gates=None)`` returns the list of the K tasks' logits.
    """

    def __init__(self, in_shape: Sequence[int], widths: Sequence[int], strides: Sequence[int],
                 classes: Sequence[int], edges: Sequence[Sequence[int]] = (), fusion: bool = True):
        super().__init__()
        self.in_shape = tuple(int(v) for v in in_shape)
        self.widths, self.strides = [int(w) for w in widths], [int(s) for s in strides]
        self.classes = [int(c) for c in classes]
        self.edges = [tuple(int(v) for v in e) for e in edges]
        self.has_fusion = bool(fusion)
        if self.edges and not self.has_fusion:
            raise ValueError("fusion=False builds no fusion ops, so it takes no edges")
        k, n = len(self.classes), len(self.widths)
        shapes = layer_shapes(self.in_shape, self.widths, self.strides)
        self.backbones = nn.ModuleList()
        for _ in range(k):
            c_in = self.in_shape[0]
            layers = []
            for w, s in zip(self.widths, self.strides, strict=True):
                layers.append(ConvBNReLU(c_in, w, s))
                c_in = w
            self.backbones.append(nn.ModuleList(layers))
        # sources of every (task, layer): [(edge index, src task, src layer)], in edge order
        self._sources: list[list[list[tuple[int, int, int]]]] = [[[] for _ in range(n)] for _ in range(k)]
        for e, (st, sl, dt, dl) in enumerate(self.edges):
            self._sources[dt][dl].append((e, st, sl))
        self.fusions = nn.ModuleList()
        if self.has_fusion:
            for t in range(k):
                self.fusions.append(nn.ModuleList(
                    Fusion(shapes[i], [shapes[sl] for _, _, sl in self._sources[t][i]]) for i in range(n)))
        self.heads = nn.ModuleList(Head(shapes[-1], c) for c in self.classes)

    @property
    def tasks(self) -> int:
        return len(self.classes)

    def sources(self, task: int, layer: int) -> list[tuple[int, int, int]]:
        """``[(edge index, src task, src layer)]`` feeding the fusion op of ``(task, layer)``."""
        return list(self._sources[task][layer])

    def forward(self, x: torch.Tensor, gates: torch.Tensor | None = None) -> list[torch.Tensor]:
        if gates is not None and gates.shape[-1] != len(self.edges):
            raise ValueError(f"gates has {gates.shape[-1]} entries; this network has {len(self.edges)} edges")
        feats = [x] * self.tasks
        hist: list[list[torch.Tensor]] = [[] for _ in range(self.tasks)]  # h of earlier layers
        for i in range(len(self.widths)):
            h = [self.backbones[t][i](feats[t]) for t in range(self.tasks)]
            if not self.has_fusion:
                feats = h
                continue
            feats = []
            for t in range(self.tasks):
                srcs = []
                for e, st, sl in self._sources[t][i]:
                    s = hist[st][sl] if sl < i else h[st]
                    if gates is not None:
                        g = gates[..., e]
                        s = s * (g.view(-1, 1, 1, 1) if g.dim() else g)
                    srcs.append(s)
                feats.append(self.fusions[t][i](h[t], *srcs))
            for t in range(self.tasks):
                hist[t].append(h[t])
        return [head(f) for head, f in zip(self.heads, feats, strict=True)]

