"""The NAS-Bench-201 cell search space (Dong & Yang, "NAS-Bench-201: Extending the Scope of Reproducible
Neural Architecture Search", ICLR 2020): 5 ops on the 6 edges of one cell shared by the 15 cells of the
CIFAR network, 5^6 = 15,625 architectures.

Canonical string: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (node 1, 2, 3; ``op~i`` is the op on edge
``i -> node``). Genome: 6 op indices into ``OPS`` in the edge order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.

Latency structure (slots, network order): stem; 5 cells of stage 1 (32x32x16), each 6 edge slots then
3 node slots; reduction; stage 2 (16x16x32); reduction; stage 3 (8x8x64); head. An edge's slot is the
block of its op at its stage's shape; ``none`` costs nothing (``None`` slot), and neither does a *dead*
edge: one into node 1 or 2 when that node cannot reach the cell output (node 2 is dead when edge 3<-2 is
``none``; node 1 when 3<-1 is ``none`` and 2<-1 is ``none`` or node 2 is dead). ONNX export and every
runtime drop such ops (their result is never used), so ``build`` leaves them out, and FLOPs, params and
the block list count the network that runs. This differs from the NAS-Bench-201 API's FLOPs for the cells
with dead edges, which count them. Ops fed by a node with no input (a zero tensor) do run and count.

A node's slot is the element-wise work that joins its edges, which the exported graph runs as separate
operators: ``nb201_add`` (``n:2`` or ``n:3`` live inputs summed: one or two ``Add``), ``nb201_zero``
(a live node with no live input is ``x * 0``: one ``Mul``), or nothing (one input, or a dead node).
These blocks cost no FLOPs (the FLOP convention counts convolutions and linear layers only).

Example:
    >>> from hwnat.spaces import get_space
    >>> sp = get_space("nasbench201")
    >>> a = sp.parse("|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|")
    >>> sp.flops(a) / 1e6  # MFLOPs, 2 x MACs
    94.2208
    >>> sp.params(a)
    350196.0
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from hwnat.errors import BadInputError
from hwnat.spaces._base import BlockSpec, SearchSpace
from hwnat.spaces._registry import register_space

#: the op names; a genome entry is an index into this tuple
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: cell edges as (to, from), in canonical-string and genome order
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
#: (channels, height = width) of each stage for the 32x32 CIFAR input
STAGES: tuple[tuple[int, int], ...] = ((16, 32), (32, 16), (64, 8))
#: identical cells per stage
CELLS_PER_STAGE = 5
#: input resolution (the only one this space has)
RESOLUTION = 32

_OP_INDEX = {op: i for i, op in enumerate(OPS)}
_VALID_OPS = ", ".join(OPS)
_FORM = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"


#: node slot kinds (``_cell_program``): 0 = nothing runs, 1 = ``x * 0``, 2/3 = a sum of 2/3 tensors (1/2 adds)
NODE_FREE, NODE_ZERO = 0, 1


def live_edges(genomes: np.ndarray) -> np.ndarray:
    """``(n, 6)`` bool: whether each edge's result can reach the cell output (genome order of ``EDGES``:
    1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2; op index 0 is ``none``). Edges into node 3 always can."""
    g = np.asarray(genomes)
    node2 = g[:, 5] != 0
    node1 = (g[:, 4] != 0) | ((g[:, 2] != 0) & node2)
    out = np.ones(g.shape, dtype=bool)
    out[:, 0] = node1
    out[:, 1] = node2
    out[:, 2] = node2
    return out


def _cell_program(ops: tuple[int, ...]) -> tuple[list[bool], list[int]]:
    """What the exported graph of one cell runs: per edge, whether its op is timed; per node, its kind.

    The cell is evaluated symbolically, as the exporter and ONNX Runtime see it: a skip is its input
    tensor; a pool is a function of its input alone, so two pools of one tensor are one operator (common
    subexpression elimination); a conv has its own weights, so it is always distinct; a node sums its live
    inputs left to right in edge order (``((a + b) + c)``: an add already computed elsewhere in the cell
    is not run again), and a node without inputs is ``x * 0`` (one per cell at most, for the same reason).
    Only what the cell output depends on runs. Skip edges come out as not run (no operator);
    ``cell_programs`` keeps their block where the edge is live (the table times an empty model for them).
    """
    ids: dict[tuple, int] = {}  # expression (kind, operand ids...) -> id: equal expressions, equal ids

    def expr(*key) -> int:
        return ids.setdefault(key, len(ids))

    x = expr("x")
    nodes, operands = [x], {x: ()}
    made: list[tuple[int, int, str]] = []  # (owner, expression id, kind); owner: edge e, or 5 + node j
    for j in (1, 2, 3):
        terms = []
        for e, (to, frm) in enumerate(EDGES):
            if to != j or ops[e] == 0:
                continue
            op, src = OPS[ops[e]], nodes[frm]
            if op == "skip_connect":
                t = src
            else:
                t = expr("pool", src) if op == "avg_pool_3x3" else expr("conv", e, src)
                operands[t] = (src,)
                made.append((e, t, "op"))
            terms.append(t)
        if not terms:
            v = expr("mul0", x)
            operands[v] = (x,)
            made.append((5 + j, v, "mul0"))
        else:
            v = terms[0]
            for t in terms[1:]:
                a = expr("add", v, t)
                operands[a] = (v, t)
                made.append((5 + j, a, "add"))
                v = a
        nodes.append(v)
    used: set[int] = set()
    stack = [nodes[3]]
    while stack:
        ex = stack.pop()
        if ex not in used:
            used.add(ex)
            stack += operands[ex]
    run: set[int] = set()
    kept, adds, zero = [False] * len(EDGES), [0, 0, 0], [False] * 3
    for owner, ex, kind in made:
        if ex not in used or ex in run:
            continue
        run.add(ex)
        if kind == "op":
            kept[owner] = True
        elif kind == "mul0":
            zero[owner - 6] = True
        else:
            adds[owner - 6] += 1
    kinds = [NODE_ZERO if z else (a + 1 if a else NODE_FREE) for a, z in zip(adds, zero, strict=True)]
    return kept, kinds


class _Programs:
    """``_cell_program`` of every cell genome, filled in on demand (all 15,625 take about half a second)."""

    def __init__(self) -> None:
        n = len(OPS) ** len(EDGES)
        self.kept = np.zeros((n, len(EDGES)), dtype=bool)
        self.kinds = np.zeros((n, 3), dtype=np.int64)
        self.done = np.zeros(n, dtype=bool)

    def get(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = genome_index(genomes)
        todo = np.unique(idx[~self.done[idx]])
        if len(todo):
            g = genomes_of(todo)
            for i, ops in zip(todo.tolist(), g.tolist(), strict=True):
                self.kept[i], self.kinds[i] = _cell_program(tuple(ops))
            skip = g == OPS.index("skip_connect")
            self.kept[todo] = np.where(skip, live_edges(g), self.kept[todo])
            self.done[todo] = True
        return self.kept[idx], self.kinds[idx]


_PROGRAMS = _Programs()


def cell_programs(genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the exported cell of each genome ``(n, 6)`` runs (``_cell_program``): the edge ops that run
    ``(n, 6)`` bool (a skip: where the edge is live) and the node kinds ``(n, 3)``."""
    return _PROGRAMS.get(np.asarray(genomes, dtype=np.int64))


_PLACE = len(OPS) ** np.arange(len(EDGES) - 1, -1, -1)


def genome_index(genomes: np.ndarray) -> np.ndarray:
    """The genome ``(n, 6)`` read as a base-5 number: 0..15,624."""
    return np.asarray(genomes, dtype=np.int64) @ _PLACE


def genomes_of(index: np.ndarray) -> np.ndarray:
    """Inverse of ``genome_index``."""
    return (np.asarray(index, dtype=np.int64)[:, None] // _PLACE) % len(OPS)


@dataclass(frozen=True)
class NB201Arch:
    """One NAS-Bench-201 cell: the six op names in ``EDGES`` order (hashable; ``str()`` is canonical)."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        ops = tuple(self.ops)
        if len(ops) != len(EDGES):
            raise BadInputError(f"nasbench201 arch needs {len(EDGES)} edge ops, got {len(ops)}")
        for (to, frm), op in zip(EDGES, ops, strict=True):
            if op not in _OP_INDEX:
                raise BadInputError(f"nasbench201 edge {to}<-{frm}: unknown op {op!r}; "
                                    f"valid ops: {_VALID_OPS}")
        object.__setattr__(self, "ops", ops)

    def op(self, to: int, frm: int) -> str:
        """The op on edge ``frm -> to``."""
        return self.ops[EDGES.index((to, frm))]

    def __str__(self) -> str:
        o = self.ops
        return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"


# ---- closed-form costs (FLOPs = 2 x MACs of conv and linear layers; params incl. BN affine) ----------

def _conv_flops(c_in: int, c_out: int, k: int, h_out: int, w_out: int) -> int:
    return 2 * c_in * c_out * k * k * h_out * w_out


def _block_cost(spec: BlockSpec) -> tuple[int, int]:
    """(FLOPs, params) of one block, in closed form."""
    c, h, w = spec.in_shape
    oc, oh, ow = spec.out_shape
    if spec.op in ("nb201_nor_conv_1x1", "nb201_nor_conv_3x3"):
        k = spec.param("k")
        return _conv_flops(c, oc, k, oh, ow), c * oc * k * k + 2 * oc
    if spec.op in ("nb201_skip_connect", "nb201_avg_pool_3x3", "nb201_add", "nb201_zero"):
        return 0, 0
    if spec.op == "nb201_stem":
        return _conv_flops(c, oc, 3, oh, ow), c * oc * 9 + 2 * oc
    if spec.op == "nb201_resblock":
        flops = _conv_flops(c, oc, 3, oh, ow) + _conv_flops(oc, oc, 3, oh, ow) + _conv_flops(c, oc, 1, oh, ow)
        params = (c * oc * 9 + 2 * oc) + (oc * oc * 9 + 2 * oc) + c * oc
        return flops, params
    if spec.op == "nb201_head":
        return 2 * c * oc, 2 * c + c * oc + oc
    raise BadInputError(f"nasbench201: unknown block op {spec.op!r}; expected one of: {', '.join(_BLOCK_OPS)}")


_BLOCK_OPS = (("nb201_stem", "nb201_resblock", "nb201_head") + tuple(f"nb201_{op}" for op in OPS[1:])
              + ("nb201_add", "nb201_zero"))


@register_space("nasbench201")
class NASBench201Space(SearchSpace):
    """The NAS-Bench-201 space on CIFAR (32x32x3 input).

    Args:
        num_classes: classifier outputs (default 100, CIFAR-100 as in the shared latency data).
    """

    #: the fixed input resolution (no ``resolutions`` option: the CLI refuses any other ``--resolution``)
    resolution: int = RESOLUTION

    def __init__(self, num_classes: int = 100):
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise BadInputError(f"nasbench201: num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self._slot_blocks, self._fixed, self._op_slot, self._node_slot = self._make_slots()
        costs = np.array([_block_cost(b) if b is not None else (0, 0) for b in self._slot_blocks],
                         dtype=np.float64).reshape(-1, 2)
        self._slot_flops, self._slot_params = costs[:, 0], costs[:, 1]
        # per (stage, op) cost of one edge, and the cost of the fixed blocks
        self._op_flops = self._slot_flops[self._op_slot]
        self._op_params = self._slot_params[self._op_slot]
        self._fixed_flops = float(self._slot_flops[self._fixed].sum())
        self._fixed_params = float(self._slot_params[self._fixed].sum())

    # ---- encoding -----------------------------------------------------------------------------
    def parse(self, text: str) -> NB201Arch:
        """Parse ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``; ``BadInputError`` names the node/edge at fault."""
        if not isinstance(text, str):
            raise BadInputError(f"nasbench201 arch must be a string like {_FORM}, got {type(text).__name__}")
        s = text.strip()
        groups = s.split("+")
        if len(groups) != 3:
            raise BadInputError(f"nasbench201 arch {text!r}: expected 3 nodes joined by '+' like {_FORM}, "
                                f"got {len(groups)} part(s)")
        ops: list[str] = []
        for to, grp in enumerate(groups, start=1):
            want = "|" + "|".join(f"op~{i}" for i in range(to)) + "|"
            if len(grp) < 2 or not (grp.startswith("|") and grp.endswith("|")):
                raise BadInputError(f"nasbench201 arch {text!r}: node {to} is {grp!r}, expected {want}")
            tokens = grp[1:-1].split("|")
            if len(tokens) != to:
                raise BadInputError(f"nasbench201 arch {text!r}: node {to} has {len(tokens)} edge(s) in "
                                    f"{grp!r}, expected {to} as {want}")
            for frm, tok in enumerate(tokens):
                where = f"nasbench201 arch {text!r}: edge {to}<-{frm}"
                op, sep, idx = tok.rpartition("~")
                if not sep or not op:
                    raise BadInputError(f"{where}: token {tok!r} is not 'op~{frm}'")
                if idx != str(frm):
                    raise BadInputError(f"{where}: token {tok!r} names input node {idx!r}, expected {frm}")
                if op not in _OP_INDEX:
                    raise BadInputError(f"{where}: unknown op {op!r}; valid ops: {_VALID_OPS}")
                ops.append(op)
        return NB201Arch(tuple(ops))

    def format(self, arch: Any) -> str:
        """Canonical string of an architecture."""
        return str(self._arch(arch))

    def genome_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(EDGES)
        return np.zeros(n, dtype=np.int64), np.full(n, len(OPS) - 1, dtype=np.int64)

    def encode(self, arch: Any) -> np.ndarray:
        return np.array([_OP_INDEX[op] for op in self._arch(arch).ops], dtype=np.int64)

    def decode(self, genome: np.ndarray) -> NB201Arch:
        g = self._check_genomes(np.asarray(genome)[None, :] if np.ndim(genome) == 1 else genome)
        if g.shape[0] != 1:
            raise BadInputError(f"nasbench201: decode takes one genome of {len(EDGES)} ints, got shape {g.shape}")
        return NB201Arch(tuple(OPS[i] for i in g[0]))

    def _arch(self, arch: Any) -> NB201Arch:
        """Accept an ``NB201Arch``, a canonical string or a sequence of six op names."""
        if isinstance(arch, NB201Arch):
            return arch
        if isinstance(arch, str):
            return self.parse(arch)
        if isinstance(arch, (tuple, list)) and all(isinstance(o, str) for o in arch):
            return NB201Arch(tuple(arch))
        raise BadInputError(f"nasbench201: expected an NB201Arch, a string like {_FORM} or six op names, "
                            f"got {type(arch).__name__}")

    @staticmethod
    def _check_genomes(genomes: Any) -> np.ndarray:
        g = np.asarray(genomes)
        if g.ndim != 2 or g.shape[1] != len(EDGES):
            raise BadInputError(f"nasbench201: genomes must have shape (n, {len(EDGES)}), got {g.shape}")
        if g.size and not np.issubdtype(g.dtype, np.integer):
            if not np.all(np.equal(np.mod(g, 1), 0)):
                raise BadInputError("nasbench201: genomes must be integers")
        g = g.astype(np.int64, copy=False)
        if g.size and (g.min() < 0 or g.max() >= len(OPS)):
            bad = np.argwhere((g < 0) | (g >= len(OPS)))[0]
            raise BadInputError(f"nasbench201: genome {bad[0]} position {bad[1]} is {g[bad[0], bad[1]]}, "
                                f"expected 0..{len(OPS) - 1} (index into {_VALID_OPS})")
        return g

    # ---- latency structure --------------------------------------------------------------------
    def _make_slots(self) -> tuple[list[BlockSpec | None], np.ndarray, np.ndarray, np.ndarray]:
        """Slot table: id 0 = ``None``; then stem, reductions, head; then one block per (stage, op); then
        per stage the node blocks (``x * 0``, sum of 2, sum of 3)."""
        table: list[BlockSpec | None] = [None]
        c0, h0 = STAGES[0]
        table.append(BlockSpec.make("nb201_stem", (3, RESOLUTION, RESOLUTION), (c0, h0, h0), k=3, s=1))
        for (ci, hi), (co, ho) in zip(STAGES[:-1], STAGES[1:], strict=True):
            table.append(BlockSpec.make("nb201_resblock", (ci, hi, hi), (co, ho, ho), k=3, s=2))
        cl, hl = STAGES[-1]
        table.append(BlockSpec.make("nb201_head", (cl, hl, hl), (self.num_classes, 1, 1)))
        fixed = np.arange(1, len(table), dtype=np.int64)  # stem, reductions..., head
        op_slot = np.zeros((len(STAGES), len(OPS)), dtype=np.int64)  # column 0 ('none') stays slot 0
        for s, (c, h) in enumerate(STAGES):
            for o, op in enumerate(OPS):
                if op == "none":
                    continue
                shape = (c, h, h)
                if op == "skip_connect":
                    spec = BlockSpec.make("nb201_" + op, shape, shape)
                else:
                    spec = BlockSpec.make("nb201_" + op, shape, shape, k=3 if op.endswith("3x3") else 1, s=1)
                op_slot[s, o] = len(table)
                table.append(spec)
        node_slot = np.zeros((len(STAGES), 4), dtype=np.int64)  # by node kind; NODE_FREE stays slot 0
        for s, (c, h) in enumerate(STAGES):
            shape = (c, h, h)
            node_slot[s, NODE_ZERO] = len(table)
            table.append(BlockSpec.make("nb201_zero", shape, shape))
            for n in (2, 3):
                node_slot[s, n] = len(table)
                table.append(BlockSpec.make("nb201_add", shape, shape, n=n))
        return table, fixed, op_slot, node_slot

    def slot_blocks(self) -> list[BlockSpec | None]:
        return self._slot_blocks

    def live_genomes(self, genomes: np.ndarray) -> np.ndarray:
        """Genomes with every dead edge (its target node cannot reach the cell output) set to ``none``."""
        g = self._check_genomes(genomes)
        return np.where(live_edges(g), g, 0)

    def slots(self, genomes: np.ndarray) -> np.ndarray:
        """Genomes ``(n, 6)`` -> slot ids ``(n, 139)``: stem; per stage 5 cells of 6 edge slots and 3 node
        slots; reductions between stages; head. An edge slot is empty where its op does not run (``none``,
        a dead edge, or a pool computed already by another edge: ``cell_programs``). Rows are computed
        once per cell genome and then looked up (there are 15,625)."""
        idx = genome_index(self._check_genomes(genomes))
        todo = np.unique(idx[~self._rows_done[idx]])
        if len(todo):
            g = genomes_of(todo)
            kept, kinds = cell_programs(g)
            g = np.where(kept, g, 0)
            stage, edge, node, fixed = self._column_map
            ids = np.where(fixed > 0, fixed, self._op_slot[stage, g[:, edge]])
            self._rows[todo] = np.where(node >= 0, self._node_slot[stage, kinds[:, np.maximum(node, 0)]], ids)
            self._rows_done[todo] = True
        return self._rows[idx].astype(np.int64)

    @cached_property
    def _rows(self) -> np.ndarray:
        return np.zeros((len(OPS) ** len(EDGES), len(self._column_map[0])), dtype=np.int32)

    @cached_property
    def _rows_done(self) -> np.ndarray:
        return np.zeros(len(OPS) ** len(EDGES), dtype=bool)

    @cached_property
    def _column_map(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per slot column: its stage, its edge (genome position), its node (0..2 for node columns, -1
        otherwise) and, for fixed blocks, their slot id."""
        stem, *reds, head = self._fixed
        stage, edge, node, fixed = [0], [0], [-1], [stem]
        for s in range(len(STAGES)):
            if s:
                stage, edge, node, fixed = stage + [s], edge + [0], node + [-1], fixed + [reds[s - 1]]
            for _ in range(CELLS_PER_STAGE):
                stage += [s] * (len(EDGES) + 3)
                edge += list(range(len(EDGES))) + [0] * 3
                node += [-1] * len(EDGES) + [0, 1, 2]
                fixed += [0] * (len(EDGES) + 3)
        stage, edge, node, fixed = stage + [0], edge + [0], node + [-1], fixed + [head]
        return tuple(np.array(v, dtype=np.int64) for v in (stage, edge, node, fixed))

    def all_blocks(self, resolution: int | Iterable[int] | None = None, **restrict: Any) -> list[BlockSpec]:
        """Every unique block (25). ``resolution`` is accepted for symmetry with other spaces; only 32 exists.

        Raises:
            BadInputError: a resolution other than 32, or an unknown restriction.
        """
        if restrict:
            raise BadInputError(f"nasbench201: unknown block restriction(s) {', '.join(sorted(restrict))}; "
                                f"only 'resolution' is accepted")
        if resolution is not None:
            res = [resolution] if isinstance(resolution, (int, np.integer)) else list(resolution)
            bad = [r for r in res if r != RESOLUTION]
            if bad:
                raise BadInputError(f"nasbench201: resolution {bad[0]} is not supported; "
                                    f"the space has only {RESOLUTION}")
        return super().all_blocks()

    # ---- models -------------------------------------------------------------------------------
    def build(self, arch: Any):
        """The CIFAR network (``hwnat.nn.nb201.NB201Network``) in eval mode, randomly initialised."""
        from hwnat.nn.nb201 import NB201Network

        live = self.live_genomes(self.encode(arch)[None, :])[0]  # dead edges are not built
        return NB201Network([OPS[i] for i in live], channels=[c for c, _ in STAGES], cells=CELLS_PER_STAGE,
                            num_classes=self.num_classes).eval()

    def build_block(self, spec: BlockSpec):
        """A module for one block from ``slot_blocks()``, taking ``(1, *spec.in_shape)``. The head returns
        ``(1, num_classes)`` (its spec's out_shape is ``(num_classes, 1, 1)``)."""
        from hwnat.nn import nb201

        c, h, w = spec.in_shape
        oc, oh, ow = spec.out_shape
        op = spec.op
        if op == "nb201_stem":
            m = nb201.Stem(c, oc)
        elif op == "nb201_resblock":
            m = nb201.ResidualReduction(c, oc)
        elif op == "nb201_head":
            m = nb201.Head(c, oc)
        elif op in _BLOCK_OPS:  # an edge op or a node's element-wise work
            if spec.in_shape != spec.out_shape:
                raise BadInputError(f"nasbench201: block {spec.key}: a cell op keeps its shape")
            if op == "nb201_add":
                m = nb201.SumOfCopies(spec.param("n"))
            elif op == "nb201_zero":
                m = nb201.Zero()
            else:
                m = nb201.make_op(op[6:], c)
        else:
            raise BadInputError(f"nasbench201: unknown block op {op!r}; expected one of: {', '.join(_BLOCK_OPS)}")
        return m.eval()

    def input_shape(self, arch: Any = None) -> tuple[int, int, int, int]:
        return (1, 3, RESOLUTION, RESOLUTION)

    def flops(self, arch: Any) -> float:
        """FLOPs (2 x MACs of conv and linear layers), batch 1, as ``FlopCounterMode`` counts them."""
        return float(self.flops_many(self.encode(arch)[None, :])[0])

    def params(self, arch: Any) -> float:
        """Number of parameters: conv weights, BatchNorm affine, linear weight and bias."""
        return float(self.params_many(self.encode(arch)[None, :])[0])

    def flops_many(self, genomes: np.ndarray) -> np.ndarray:
        """Vectorised ``flops`` over genomes ``(n, 6)`` -> float64 ``(n,)``."""
        return self._network_flops(self.live_genomes(genomes))

    def params_many(self, genomes: np.ndarray) -> np.ndarray:
        """Vectorised ``params`` over genomes ``(n, 6)`` -> float64 ``(n,)``."""
        return self._network_params(self.live_genomes(genomes))

    def eager_costs_many(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FLOPs and params of the network with dead edges kept, as eager PyTorch runs the reference
        implementation (and as the NAS-Bench-201 API and HW-NAS-Bench count): predictor features for
        latencies measured that way."""
        g = self._check_genomes(genomes)
        return self._network_flops(g), self._network_params(g)

    def _network_flops(self, g: np.ndarray) -> np.ndarray:
        return self._fixed_flops + CELLS_PER_STAGE * self._op_flops[:, g].sum(axis=(0, 2))

    def _network_params(self, g: np.ndarray) -> np.ndarray:
        return self._fixed_params + CELLS_PER_STAGE * self._op_params[:, g].sum(axis=(0, 2))
