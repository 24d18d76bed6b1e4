"""The MTL-NAS fusion space (Gao et al., "MTL-NAS: Task-Agnostic Neural Architecture Search towards
General-Purpose Multi-Task Learning", CVPR 2020): K single-task VGG-style backbones and the set of
cross-task fusion edges inserted between them, registered as ``mtl-vgg``.

Candidate edges go from layer ``j`` of task ``t'`` into layer ``i`` of task ``t`` for ``t' != t``,
``j <= i`` and ``i - j < 3`` (the paper's feed-forward, depth-limited rule). The network
(``hwnat.nn.fusion.MTLNet``) has a fusion op (NDDR: concat, 1x1 conv, BN, ReLU) after every layer of every
task; a layer without kept edges keeps the op on its own channels alone, so that a physically pruned
network (``hwnat.mtl.prune.rebuild``) computes what the trained, masked one does. ``build_backbones()``
gives the plain single-task networks without any fusion op.

Architecture = the set of kept edges. Genome: one bit per candidate edge, in ``edges()`` order.
Canonical string: the kept edges in ``edges()`` order joined by ``+``, each ``st.sl>dt.dl`` (source task
and layer, target task and layer, 0-based), or ``none``; ``parse`` also accepts ``all`` and a bit string
of the genome (``"0110..."``).

Latency structure (slots, network order): for each layer, every task's conv block, then every task's
fusion block; then every task's head. A fusion slot's block is the fusion op with exactly the kept
sources of that (task, layer) (``mtl_fusion``, several inputs: ``in_shapes`` = own, then each source at its
own size, pooled inside the block), so a table sum is exact per layer. ``all_blocks()`` holds the fusion op
for every subset of a layer's candidate sources (19 unique blocks in the default space, 14 of them fusion
ops). Per-edge marginal costs (``hwnat.mtl.prune.edge_costs_ms``) are read from the same table: the
fusion op with the edge's source alone minus the op with no source.

Example:
    >>> from hwnat.spaces import get_space
    >>> sp = get_space("mtl-vgg")
    >>> len(sp.edges())  # 9 per ordered pair of the 2 tasks, 4 layers
    18
    >>> a = sp.parse("0.1>1.2+1.3>0.3")
    >>> sp.format(a)
    '0.1>1.2+1.3>0.3'
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from hwnat.errors import BadInputError
from hwnat.nn.costs import layer_shapes
from hwnat.spaces._base import BlockSpec, SearchSpace
from hwnat.spaces._registry import register_space

#: the layer distance limit of a candidate edge (``i - j < MAX_SPAN``)
MAX_SPAN = 3
#: most candidate sources of one (task, layer): its fusion op has one block per subset of them
MAX_SOURCES = 12
#: default input ``(C, H, W)`` (the built-in MultiMNIST task) and layer widths
DEFAULT_IN_SHAPE = (1, 28, 28)
DEFAULT_WIDTHS = (16, 32, 32, 64)

_OPS = ("mtl_conv", "mtl_fusion", "mtl_head")


@dataclass(frozen=True, order=True)
class Edge:
    """A fusion edge: the output of layer ``src_layer`` of task ``src_task`` feeds the fusion op after
    layer ``dst_layer`` of task ``dst_task``."""

    src_task: int
    src_layer: int
    dst_task: int
    dst_layer: int

    def __str__(self) -> str:
        return f"{self.src_task}.{self.src_layer}>{self.dst_task}.{self.dst_layer}"


@dataclass(frozen=True)
class MTLArch:
    """A set of kept edges, sorted (hashable; ``str()`` is the canonical string)."""

    edges: tuple[Edge, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "edges", tuple(sorted(set(self.edges))))

    def __str__(self) -> str:
        return "+".join(str(e) for e in self.edges) if self.edges else "none"


def default_widths(layers: int) -> tuple[int, ...]:
    """16 channels, doubled at every second layer: 16, 32, 32, 64, 64, 128, ..."""
    return tuple(16 * 2 ** ((i + 1) // 2) for i in range(layers))


def _int_tuple(name: str, v: Any, lo: int = 1) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in v)
    except (TypeError, ValueError):
        raise BadInputError(f"mtl-vgg: {name} must be a list of integers, got {v!r}") from None
    if any(isinstance(x, bool) for x in v) or any(x < lo for x in out):
        raise BadInputError(f"mtl-vgg: {name} must be integers >= {lo}, got {list(v)!r}")
    return out


@register_space("mtl-vgg")
class MTLVGGSpace(SearchSpace):
    """K VGG-style backbones (conv3x3-BN-ReLU layers) with searchable cross-task fusion edges.

    Args:
        tasks: number of tasks K (>= 2); with ``classes`` given it must match its length.
        layers: number of backbone layers (default: ``len(widths)``, or 4).
        widths: output channels of each layer (default 16, 32, 32, 64).
        strides: stride of each layer, 1 or 2 (default 2 at every second layer: 1, 2, 1, 2, ...).
        in_shape: input ``(C, H, W)`` (default ``(1, 28, 28)``, the built-in MultiMNIST).
        classes: classes of each task (default 10 per task).
        resolution: overrides ``H`` and ``W`` of ``in_shape`` (``hwnat profile --resolution``).
    """

    def __init__(self, tasks: int | None = None, layers: int | None = None, widths=None, strides=None,
                 in_shape=DEFAULT_IN_SHAPE, classes=None, resolution: int | None = None):
        if classes is not None:
            classes = _int_tuple("classes", classes, lo=2)
            if tasks is not None and int(tasks) != len(classes):
                raise BadInputError(f"mtl-vgg: tasks={tasks} but classes has {len(classes)} entries")
        else:
            k = 2 if tasks is None else tasks
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
                raise BadInputError(f"mtl-vgg: tasks must be an integer >= 2, got {k!r}")
            classes = (10,) * max(int(k), 0)
        if len(classes) < 2:
            raise BadInputError(f"mtl-vgg: needs at least 2 tasks (K >= 2), got {len(classes)}")
        if widths is None:
            widths = default_widths(4 if layers is None else max(int(layers), 0))
        widths = _int_tuple("widths", widths)
        if layers is not None and int(layers) != len(widths):
            raise BadInputError(f"mtl-vgg: layers={layers} but widths has {len(widths)} entries")
        if not widths:
            raise BadInputError("mtl-vgg: needs at least one layer")
        strides = _int_tuple("strides", strides) if strides is not None else \
            tuple(2 if i % 2 else 1 for i in range(len(widths)))
        if len(strides) != len(widths) or any(s not in (1, 2) for s in strides):
            raise BadInputError(f"mtl-vgg: strides must be {len(widths)} values of 1 or 2, got {list(strides)}")
        in_shape = _int_tuple("in_shape", in_shape)
        if len(in_shape) != 3:
            raise BadInputError(f"mtl-vgg: in_shape must be (C, H, W), got {list(in_shape)}")
        if resolution is not None:
            if isinstance(resolution, bool) or int(resolution) < 1:
                raise BadInputError(f"mtl-vgg: resolution must be a positive integer, got {resolution!r}")
            in_shape = (in_shape[0], int(resolution), int(resolution))
        self.classes, self.widths, self.strides, self.in_shape = classes, widths, strides, in_shape
        self.tasks, self.layers = len(classes), len(widths)
        self.resolution = in_shape[1] if in_shape[1] == in_shape[2] else None
        self.shapes = layer_shapes(in_shape, widths, strides)
        self._edges = [Edge(st, sl, dt, dl) for st, sl, dt, dl in
                       product(range(self.tasks), range(self.layers), range(self.tasks), range(self.layers))
                       if st != dt and sl <= dl < sl + MAX_SPAN]
        self._edge_index = {e: n for n, e in enumerate(self._edges)}
        # candidate edges (indices) into each (task, layer), in edges() order
        self._cand = [[[n for n, e in enumerate(self._edges) if (e.dst_task, e.dst_layer) == (t, i)]
                       for i in range(self.layers)] for t in range(self.tasks)]
        most = max(len(c) for row in self._cand for c in row)
        if most > MAX_SOURCES:
            raise BadInputError(f"mtl-vgg: a layer has {most} candidate sources; at most {MAX_SOURCES} "
                                f"(fewer tasks) are supported")
        self._make_slots()

    # ---- edges --------------------------------------------------------------------------------
    def edges(self) -> list[Edge]:
        """Every candidate edge, in genome order (sorted: source task, source layer, target task, layer)."""
        return list(self._edges)

    def edge_index(self, edge: Edge) -> int:
        """Genome position of a candidate edge (``BadInputError`` when it is not one)."""
        if edge not in self._edge_index:
            raise BadInputError(f"mtl-vgg: {edge} is not a candidate edge (tasks must differ, the source "
                                f"layer j and target layer i need j <= i < j + {MAX_SPAN}, "
                                f"{self.tasks} tasks x {self.layers} layers)")
        return self._edge_index[edge]

    def candidates(self, task: int, layer: int) -> list[int]:
        """Genome positions of the candidate edges into the fusion op of ``(task, layer)``."""
        return list(self._cand[task][layer])

    # ---- encoding -----------------------------------------------------------------------------
    def parse(self, text: str) -> MTLArch:
        """Parse ``st.sl>dt.dl+...``, ``none``, ``all`` or a bit string of the genome."""
        if not isinstance(text, str):
            raise BadInputError(f"mtl-vgg arch must be a string like '0.1>1.2+1.0>0.0' or 'none', "
                                f"got {type(text).__name__}")
        s = text.strip()
        if s in ("none", ""):
            return MTLArch(())
        if s == "all":
            return MTLArch(tuple(self._edges))
        if set(s) <= {"0", "1"}:
            if len(s) != len(self._edges):
                raise BadInputError(f"mtl-vgg arch {text!r}: a bit string needs {len(self._edges)} bits "
                                    f"(one per candidate edge), got {len(s)}")
            return self.decode(np.array([int(c) for c in s], dtype=np.int64))
        edges = []
        for tok in s.split("+"):
            src, sep, dst = tok.partition(">")
            try:
                st, sl = (int(v) for v in src.split("."))
                dt, dl = (int(v) for v in dst.split("."))
            except ValueError:
                raise BadInputError(f"mtl-vgg arch {text!r}: edge {tok!r} is not 'srctask.layer>dsttask.layer' "
                                    "(e.g. '0.1>1.2')") from None
            if not sep:
                raise BadInputError(f"mtl-vgg arch {text!r}: edge {tok!r} has no '>'")
            e = Edge(st, sl, dt, dl)
            self.edge_index(e)
            edges.append(e)
        if len(set(edges)) != len(edges):
            raise BadInputError(f"mtl-vgg arch {text!r}: an edge is listed twice")
        return MTLArch(tuple(edges))

    def format(self, arch: Any) -> str:
        return str(self._arch(arch))

    def genome_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self._edges)
        return np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)

    def encode(self, arch: Any) -> np.ndarray:
        g = np.zeros(len(self._edges), dtype=np.int64)
        for e in self._arch(arch).edges:
            g[self.edge_index(e)] = 1
        return g

    def decode(self, genome: np.ndarray) -> MTLArch:
        g = self._check_genomes(np.asarray(genome)[None, :] if np.ndim(genome) == 1 else genome)
        if g.shape[0] != 1:
            raise BadInputError(f"mtl-vgg: decode takes one genome of {len(self._edges)} bits, got {g.shape}")
        return MTLArch(tuple(e for e, b in zip(self._edges, g[0], strict=True) if b))

    def _arch(self, arch: Any) -> MTLArch:
        if isinstance(arch, MTLArch):
            for e in arch.edges:
                self.edge_index(e)
            return arch
        if isinstance(arch, str):
            return self.parse(arch)
        if isinstance(arch, np.ndarray):
            return self.decode(arch)
        raise BadInputError(f"mtl-vgg: expected an MTLArch, a canonical string or a genome, "
                            f"got {type(arch).__name__}")

    def _check_genomes(self, genomes: Any) -> np.ndarray:
        g = np.asarray(genomes)
        n = len(self._edges)
        if g.ndim != 2 or g.shape[1] != n:
            raise BadInputError(f"mtl-vgg: genomes must have shape (n, {n}), got {g.shape}")
        if g.size and not np.all((g == 0) | (g == 1)):
            raise BadInputError("mtl-vgg: genome entries must be 0 or 1 (one bit per candidate edge)")
        return g.astype(np.int64, copy=False)

    # ---- latency structure --------------------------------------------------------------------
    def _make_slots(self) -> None:
        """Slot table: id 0 = None; conv blocks per layer; heads per task; then, per (task, layer), one
        fusion block per subset of its candidate sources (bit k of the subset = its k-th candidate)."""
        table: list[BlockSpec | None] = [None]
        conv_slot = []
        c_in = self.in_shape
        for (c, h, w), s in zip(self.shapes, self.strides, strict=True):
            conv_slot.append(len(table))
            table.append(BlockSpec.make("mtl_conv", c_in, (c, h, w), k=3, s=s))
            c_in = (c, h, w)
        head_slot = []
        for n in self.classes:
            head_slot.append(len(table))
            table.append(BlockSpec.make("mtl_head", self.shapes[-1], (n, 1, 1), flat=1))
        self._fusion_offset = np.zeros((self.tasks, self.layers), dtype=np.int64)
        for t in range(self.tasks):
            for i in range(self.layers):
                self._fusion_offset[t, i] = len(table)
                cand = self._cand[t][i]
                for mask in range(2 ** len(cand)):
                    srcs = [self.shapes[self._edges[n].src_layer] for k, n in enumerate(cand) if mask >> k & 1]
                    table.append(BlockSpec.make("mtl_fusion", [self.shapes[i], *srcs], self.shapes[i]))
        self._slot_blocks = table
        # fixed part of the slot row (fusion columns hold their offset and get the subset added)
        fixed: list[int] = []
        cols = []
        for i in range(self.layers):
            fixed += [conv_slot[i]] * self.tasks
            fixed += [int(self._fusion_offset[t, i]) for t in range(self.tasks)]
            cols += [None] * self.tasks + [(t, i) for t in range(self.tasks)]
        fixed += head_slot
        cols += [None] * self.tasks
        weights = np.zeros((len(self._edges), len(fixed)), dtype=np.int64)
        for col, ti in enumerate(cols):
            if ti is not None:
                for k, n in enumerate(self._cand[ti[0]][ti[1]]):
                    weights[n, col] = 2 ** k
        self._fixed_slots, self._subset_weights = np.array(fixed, dtype=np.int64), weights
        # analytic costs: fixed part (convs, heads, own-only fusions) + one term per kept edge
        f = p = 0.0
        c_in = self.in_shape[0]
        for (c, h, w) in self.shapes:
            f += 2.0 * c_in * c * 9 * h * w
            p += c_in * c * 9 + 2 * c
            c_in = c
        f, p = self.tasks * f, self.tasks * p
        feat = int(np.prod(self.shapes[-1]))  # the heads flatten the last feature map
        f += sum(2.0 * feat * n for n in self.classes)
        p += sum(feat * n + n for n in self.classes)
        for (c, h, w) in self.shapes:  # own-only fusion ops
            f += self.tasks * 2.0 * c * c * h * w
            p += self.tasks * (c * c + 2 * c)
        self._fixed_flops, self._fixed_params = f, p
        self._edge_flops = np.array([2.0 * self.widths[e.src_layer] * self.widths[e.dst_layer] *
                                     self.shapes[e.dst_layer][1] * self.shapes[e.dst_layer][2] for e in self._edges])
        self._edge_params = np.array([float(self.widths[e.src_layer] * self.widths[e.dst_layer])
                                      for e in self._edges])

    def slot_blocks(self) -> list[BlockSpec | None]:
        return self._slot_blocks

    def slots(self, genomes: np.ndarray) -> np.ndarray:
        """Genomes ``(n, E)`` -> slot ids ``(n, 2 K L + K)``: per layer K convs then K fusion ops; K heads."""
        g = self._check_genomes(genomes)
        return self._fixed_slots[None, :] + g @ self._subset_weights

    def fusion_block(self, task: int, layer: int, kept_sources: tuple[int, ...] = ()) -> BlockSpec:
        """The fusion block of ``(task, layer)`` with the given kept candidate edges (genome positions)."""
        cand = self._cand[task][layer]
        bad = [n for n in kept_sources if n not in cand]
        if bad:
            raise BadInputError(f"mtl-vgg: edge {bad[0]} does not feed task {task} layer {layer}")
        mask = sum(2 ** cand.index(n) for n in kept_sources)
        return self._slot_blocks[int(self._fusion_offset[task, layer]) + mask]

    def all_blocks(self, resolution=None, **restrict: Any) -> list[BlockSpec]:
        """Every unique block: convs, heads, and every fusion op with every subset of its sources.

        Raises:
            BadInputError: a resolution other than the space's, or an unknown restriction.
        """
        if restrict:
            raise BadInputError(f"mtl-vgg: unknown block restriction(s) {', '.join(sorted(restrict))}")
        if resolution is not None and resolution != self.resolution:
            raise BadInputError(f"mtl-vgg: this space is built at resolution {self.resolution}; make it with "
                                f"resolution={resolution}")
        return super().all_blocks()

    # ---- models -------------------------------------------------------------------------------
    def build(self, arch: Any):
        """The fused network (``hwnat.nn.fusion.MTLNet``) with exactly the kept edges, eval mode, fusion
        ops initialised to the identity (so it computes the single-task networks)."""
        from hwnat.nn.fusion import MTLNet

        edges = [(e.src_task, e.src_layer, e.dst_task, e.dst_layer) for e in self._arch(arch).edges]
        return MTLNet(self.in_shape, self.widths, self.strides, self.classes, edges).eval()

    def build_backbones(self):
        """The K single-task backbones with their heads and no fusion op (one input, K outputs)."""
        from hwnat.nn.fusion import MTLNet

        return MTLNet(self.in_shape, self.widths, self.strides, self.classes, fusion=False).eval()

    def build_block(self, spec: BlockSpec):
        """A module for one block of ``slot_blocks()``; a fusion block takes ``len(spec.in_shapes)``
        inputs (own features first), a head returns ``(1, classes)``."""
        from hwnat.nn import fusion

        if spec.op == "mtl_conv":
            m = fusion.ConvBNReLU(spec.in_shape[0], spec.out_shape[0], stride=spec.param("s"))
        elif spec.op == "mtl_fusion":
            try:
                m = fusion.Fusion(spec.in_shape, spec.extra_in_shapes)
            except ValueError as e:
                raise BadInputError(f"mtl-vgg: block {spec.key}: {e}") from None
        elif spec.op == "mtl_head":
            m = fusion.Head(spec.in_shape, spec.out_shape[0])
        else:
            raise BadInputError(f"mtl-vgg: unknown block op {spec.op!r}; expected one of: {', '.join(_OPS)}")
        return m.eval()

    def input_shape(self, arch: Any = None) -> tuple[int, int, int, int]:
        return (1, *self.in_shape)

    def flops(self, arch: Any) -> float:
        """FLOPs (2 x MACs of convs and linear layers), batch 1, as ``FlopCounterMode`` counts them."""
        return float(self.flops_many(self.encode(arch)[None, :])[0])

    def params(self, arch: Any) -> float:
        """Parameters: conv weights, BatchNorm affine, linear weights and biases."""
        return float(self.params_many(self.encode(arch)[None, :])[0])

    def flops_many(self, genomes: np.ndarray) -> np.ndarray:
        return self._fixed_flops + self._check_genomes(genomes) @ self._edge_flops

    def params_many(self, genomes: np.ndarray) -> np.ndarray:
        return self._fixed_params + self._check_genomes(genomes) @ self._edge_params

    def edge_flops(self) -> np.ndarray:
        """FLOPs each candidate edge adds (its source's channels in the target's 1x1 conv), ``(E,)``."""
        return self._edge_flops.copy()

