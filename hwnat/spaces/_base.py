"""The search-space contract: BlockSpec, the SearchSpace base class, and the slot scheme that makes
table lookups vectorised.

Every space encodes an architecture as a fixed-length integer genome (what pymoo operators work on).
Its latency-relevant structure is described by *slots*: ``slots(genomes)`` maps a matrix of genomes to a
matrix of slot ids, and ``slot_blocks()[i]`` is the block a slot id stands for (``None`` for a slot that
costs nothing, e.g. an inactive layer or a ``none`` edge). ``blocks(arch)`` is derived from the same two
functions, so a table sum over ``blocks`` and the vectorised sum over slots can never disagree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwnat.errors import BadInputError


@dataclass(frozen=True)
class BlockSpec:
    """One unit whose latency is measured alone and summed into an architecture's table latency.

    A block with several inputs (a fusion op) lists the shapes of the inputs after the first in
    ``extra_in_shapes``; ``in_shapes`` is all of them. Its key joins the input shapes with ``+``
    (``mtl_fusion-in:14x14x32+28x28x16-out:14x14x32``); single-input keys are unchanged.

    Attributes:
        op: block type, e.g. ``"mbconv"``, ``"conv_bn_act"``, ``"nb201_nor_conv_3x3"``.
        in_shape: (first) input tensor shape ``(C, H, W)`` for batch 1.
        out_shape: output tensor shape ``(C, H, W)``.
        params: the other hyper-parameters that determine latency, as sorted ``(name, value)`` pairs
            (kernel ``k``, mid channels ``mid``, stride ``s``, identity skip ``skip``, ``se``, ``act``...).
        extra_in_shapes: shapes ``(C, H, W)`` of the further inputs of a multi-input block, in order.
    """

    op: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    params: tuple[tuple[str, Any], ...] = field(default=())
    extra_in_shapes: tuple[tuple[int, int, int], ...] = field(default=())

    @staticmethod
    def make(op: str, in_shape, out_shape, **params: Any) -> BlockSpec:
        """Build a spec with params sorted by name (so equal blocks compare and hash equal).

        ``in_shape`` is one shape ``(C, H, W)``, or a sequence of shapes for a block with several inputs.
        """
        shapes = [in_shape] if not len(in_shape) or not isinstance(in_shape[0], (tuple, list)) else in_shape
        first, *rest = (tuple(int(v) for v in s) for s in shapes)
        return BlockSpec(op, first, tuple(int(v) for v in out_shape), tuple(sorted(params.items())),
                         tuple(rest))

    @property
    def in_shapes(self) -> tuple[tuple[int, int, int], ...]:
        """Shapes ``(C, H, W)`` of every input, the first being ``in_shape``."""
        return (self.in_shape, *self.extra_in_shapes)

    def batch_input(self, batch: int = 1):
        """The input shape the exporters and devices take: ``(batch, C, H, W)`` for a one-input block,
        a tuple of such shapes for a block with several inputs."""
        shapes = tuple((batch, *s) for s in self.in_shapes)
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def key(self) -> str:
        """Stable text key, e.g. ``mbconv-in:56x56x24-out:28x28x40-act:relu-k:5-mid:96-s:2-se:1-skip:0``."""
        ins = "+".join(f"{h}x{w}x{c}" for c, h, w in self.in_shapes)
        oc, oh, ow = self.out_shape
        parts = [self.op, f"in:{ins}", f"out:{oh}x{ow}x{oc}"]
        parts += [f"{k}:{_fmt(v)}" for k, v in self.params]
        return "-".join(parts)

    def param(self, name: str, default: Any = None) -> Any:
        """Value of one hyper-parameter, or ``default``."""
        for k, v in self.params:
            if k == name:
                return v
        return default


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


class SearchSpace(ABC):
    """Base class of a search space. Subclasses are registered with ``@register_space``.

    A subclass implements the abstract methods; everything else (``blocks``, ``sample``, ``mutate``,
    ``crossover``, vectorised helpers) follows from the integer genome and the slot scheme.
    """

    #: registry name, e.g. ``"ofa-mbv3"``
    name: str = ""

    # ---- encoding ---------------------------------------------------------------------------
    @abstractmethod
    def parse(self, text: str) -> Any:
        """Parse the canonical architecture string; raise ``BadInputError`` naming the field."""

    @abstractmethod
    def format(self, arch: Any) -> str:
        """Canonical string of an architecture (round-trips with ``parse``)."""

    @abstractmethod
    def genome_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Inclusive integer lower and upper bounds of every genome position."""

    @abstractmethod
    def encode(self, arch: Any) -> np.ndarray:
        """Architecture -> integer genome (1-D int64 array)."""

    @abstractmethod
    def decode(self, genome: np.ndarray) -> Any:
        """Integer genome -> architecture. Every genome within bounds is valid."""

    # ---- latency structure ------------------------------------------------------------------
    @abstractmethod
    def slot_blocks(self) -> list[BlockSpec | None]:
        """The block each slot id stands for (``None``: the slot costs nothing). Cached by subclasses."""

    @abstractmethod
    def slots(self, genomes: np.ndarray) -> np.ndarray:
        """Vectorised: genomes ``(n, g)`` -> slot ids ``(n, m)`` (int64). Fixed blocks (stem, head)
        appear as slots too, so that the table sum is ``lut[slots].sum(axis=1)``."""

    # ---- models -------------------------------------------------------------------------------
    @abstractmethod
    def build(self, arch: Any) -> Any:
        """A ``torch.nn.Module`` (eval mode, random init unless weights are given) for the architecture."""

    @abstractmethod
    def build_block(self, spec: BlockSpec) -> Any:
        """A ``torch.nn.Module`` for one block spec, taking ``(1, *spec.in_shape)``."""

    @abstractmethod
    def input_shape(self, arch: Any) -> tuple[int, int, int, int]:
        """Input shape ``(1, 3, H, W)`` of the network for this architecture."""

    @abstractmethod
    def flops(self, arch: Any) -> float:
        """Analytic FLOPs (2 x multiply-accumulates of convolutions and linear layers, the convention of
        ``torch.utils.flop_counter.FlopCounterMode``), batch 1."""

    @abstractmethod
    def params(self, arch: Any) -> float:
        """Analytic number of parameters (weights, biases, BatchNorm affine)."""

    # ---- derived ------------------------------------------------------------------------------
    def slot_keys(self) -> tuple[list[str], np.ndarray]:
        """The distinct block keys of ``slot_blocks()`` and, per slot id, the index of its key in that list
        (-1 for a free slot). Computed once per space object (a space's slots never change), so a table
        lookup costs one dict access per distinct block, not one key formatting per slot."""
        cached = self.__dict__.get("_slot_keys")
        if cached is None:
            keys: dict[str, int] = {}
            index = np.array([-1 if b is None else keys.setdefault(b.key, len(keys)) for b in self.slot_blocks()],
                             dtype=np.int64)
            cached = self.__dict__["_slot_keys"] = (list(keys), index)
        return cached

    def blocks(self, arch: Any) -> list[BlockSpec]:
        """The blocks whose latencies add up to the architecture's table latency, in network order."""
        table = self.slot_blocks()
        ids = self.slots(self.encode(arch)[None, :])[0]
        return [table[i] for i in ids if table[i] is not None]

    def sample(self, rng: np.random.Generator, n: int) -> list[Any]:
        """``n`` architectures drawn uniformly over the genome."""
        return [self.decode(g) for g in self.sample_genomes(rng, n)]

    def sample_genomes(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` genomes drawn uniformly within bounds, shape ``(n, g)``."""
        lo, hi = self.genome_bounds()
        return rng.integers(lo, hi + 1, size=(n, len(lo)), dtype=np.int64)

    def mutate(self, arch: Any, rng: np.random.Generator, prob: float = 0.1) -> Any:
        """Resample each genome position with probability ``prob``; the result always differs from ``arch``."""
        g = self.encode(arch).copy()
        lo, hi = self.genome_bounds()
        mask = rng.random(len(g)) < prob
        g[mask] = rng.integers(lo[mask], hi[mask] + 1)
        if (g == self.encode(arch)).all():  # force one real change where a position has a choice
            free = np.flatnonzero(hi > lo)
            i = rng.choice(free)
            choices = [v for v in range(lo[i], hi[i] + 1) if v != g[i]]
            g[i] = rng.choice(choices)
        return self.decode(g)

    def crossover(self, a: Any, b: Any, rng: np.random.Generator) -> Any:
        """Uniform crossover of two architectures' genomes."""
        ga, gb = self.encode(a), self.encode(b)
        return self.decode(np.where(rng.random(len(ga)) < 0.5, ga, gb))

    def parse_many(self, texts) -> list[Any]:
        """Parse many strings; the error names the row (0-based) that failed."""
        out = []
        for i, t in enumerate(texts):
            try:
                out.append(self.parse(t))
            except BadInputError as e:
                raise BadInputError(f"row {i}: {e}") from None
        return out

    def encode_many(self, archs) -> np.ndarray:
        """Stack the genomes of many architectures into ``(n, g)``."""
        if not len(archs):
            return np.zeros((0, len(self.genome_bounds()[0])), dtype=np.int64)
        return np.stack([self.encode(a) for a in archs])

    def all_blocks(self, **restrict: Any) -> list[BlockSpec]:
        """Every unique block the space can produce (optionally restricted, see subclasses)."""
        seen: dict[str, BlockSpec] = {}
        for b in self.slot_blocks():
            if b is not None and b.key not in seen:
                seen[b.key] = b
        return list(seen.values())
