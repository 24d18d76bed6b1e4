"""The FBNet search space (Wu et al., "FBNet: Hardware-Aware Efficient ConvNet Design via Differentiable
Neural Architecture Search", CVPR 2019), as HW-NAS-Bench (Li et al., ICLR 2021) uses it.

Macro-architecture (the paper's Table 1; ``n`` layers, the first of a stage has stride ``s``), for the
default 224x224 input:

=========================  ===================  ======  ===  ===
input (H x W x C)          block                out C   n    s
=========================  ===================  ======  ===  ===
224 x 224 x 3              3x3 conv             16      1    2
112 x 112 x 16             searchable (TBS)     16      1    1
112 x 112 x 16             searchable (TBS)     24      4    2
56 x 56 x 24               searchable (TBS)     32      4    2
28 x 28 x 32               searchable (TBS)     64      4    2
14 x 14 x 64               searchable (TBS)     112     4    1
14 x 14 x 112              searchable (TBS)     184     4    2
7 x 7 x 184                searchable (TBS)     352     1    1
7 x 7 x 352                1x1 conv             1984    1    1
7 x 7 x 1984               7x7 avg pool         -       1    1
1984                       fc                   1000    1    -
=========================  ===================  ======  ===  ===

22 searchable layers, each one of 9 blocks (the paper's Table 2), in this order (the genome value is the
index): ``k3_e1 k3_e1_g2 k3_e3 k3_e6 k5_e1 k5_e1_g2 k5_e3 k5_e6 skip``. ``kK_eE[_gG]`` is the block of
:class:`hwnat.nn.fbnet.FBNetBlock`: 1x1 conv with ``G`` groups to ``E x`` the input channels + BN + ReLU,
channel shuffle when ``G > 1``, KxK depthwise conv with the layer's stride + BN + ReLU, 1x1 conv with
``G`` groups to the output channels + BN; the input is added when the stride is 1 and the channel count
is kept. The stem and head convs are followed by BN + ReLU; convs have no bias, the fc has one.

``skip`` is the identity where the layer keeps the shape (it then costs nothing: a ``None`` slot). The
first layer of stages 24, 32, 64, 184 (stride 2) and of stages 112 and 352 (channel change) cannot be an
identity; there ``skip`` is a 1x1 conv with the layer's stride + BN + ReLU, as FBNet's reference code
(``Identity`` in the FBNet builder of maskrcnn-benchmark, which HW-NAS-Bench runs) builds it. These six
layers are therefore never free.

Canonical string: the 22 block names joined by ``-``. Other resolutions (``resolution=``) keep the same
layers; each stride-2 layer maps a side ``h`` to ``(h - 1) // 2 + 1``.

Example:
    >>> from hwnat.spaces import get_space
    >>> space = get_space("fbnet")
    >>> arch = space.parse("-".join(["k3_e6"] * 22))
    >>> space.format(arch) == "-".join(["k3_e6"] * 22)
    True
    >>> len(space.blocks(space.parse("-".join(["skip"] * 22))))  # stem, 6 projections, head, classifier
    9
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hwnat.errors import BadInputError
from hwnat.spaces._base import BlockSpec, SearchSpace
from hwnat.spaces._registry import register_space

#: the 9 block choices, in genome order
CHOICES: tuple[str, ...] = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
#: (kernel, expansion, groups) of each choice; ``None`` for ``skip``
CHOICE_CFG: dict[str, tuple[int, int, int] | None] = {
    "k3_e1": (3, 1, 1), "k3_e1_g2": (3, 1, 2), "k3_e3": (3, 3, 1), "k3_e6": (3, 6, 1),
    "k5_e1": (5, 1, 1), "k5_e1_g2": (5, 1, 2), "k5_e3": (5, 3, 1), "k5_e6": (5, 6, 1), "skip": None,
}
_INDEX = {name: i for i, name in enumerate(CHOICES)}

#: searchable stages: (output channels, number of layers, stride of the first layer)
STAGES: tuple[tuple[int, int, int], ...] = (
    (16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))
STEM_CHANNELS = 16
HEAD_CHANNELS = 1984
NUM_CLASSES = 1000
NUM_LAYERS = sum(n for _, n, _ in STAGES)  # 22
N_CHOICES = len(CHOICES)  # 9

#: fixed slot ids after the 22 x 9 searchable ones (slot id of layer i, choice c = i * 9 + c)
STEM_SLOT = NUM_LAYERS * N_CHOICES  # 198
HEAD_SLOT = STEM_SLOT + 1  # 199: 1x1 conv to 1984 + BN + ReLU
CLASSIFIER_SLOT = STEM_SLOT + 2  # 200: global average pool + fc

_MIN_RES, _MAX_RES = 32, 1024


def _down(h: int, s: int) -> int:
    """Output side of a conv with an odd kernel ``k``, padding ``k // 2`` and stride ``s``."""
    return (h - 1) // s + 1


def _check_ops(ops) -> tuple[str, ...]:
    """Validate 22 block names; the error names the layer (0-based), the token and what was expected."""
    ops = tuple(ops)
    if len(ops) != NUM_LAYERS:
        raise BadInputError(f"fbnet arch: expected {NUM_LAYERS} block names joined by '-', got {len(ops)}")
    for i, t in enumerate(ops):
        if t not in _INDEX:
            raise BadInputError(f"fbnet arch: layer {i} (0-based): unknown block {t!r}; "
                                f"expected one of: {', '.join(CHOICES)}")
    return ops


@dataclass(frozen=True)
class FBNetArch:
    """One FBNet architecture: the block name of each of the 22 searchable layers (hashable).

    Attributes:
        ops: 22 names out of :data:`CHOICES`, in network order.
    """

    ops: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "ops", _check_ops(self.ops))

    def __str__(self) -> str:
        return "-".join(self.ops)


@register_space("fbnet")
class FBNetSpace(SearchSpace):
    """The FBNet space (see the module docstring). Genome: 22 ints in ``0..8``, the choice index per layer.

    Slots (25 per architecture, in network order): stem (198), then ``layer * 9 + choice`` for the 22
    layers (a shape-keeping ``skip`` is a ``None`` slot), then the head conv (199) and the classifier (200).

    Args:
        resolution: input side in pixels (default 224, FBNet's and HW-NAS-Bench's), 32..1024.

    Example:
        >>> space = FBNetSpace()
        >>> g = space.sample_genomes(np.random.default_rng(0), 1000)
        >>> space.flops_many(g).shape
        (1000,)
    """

    def __init__(self, resolution: int = 224):
        if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) \
                or not _MIN_RES <= int(resolution) <= _MAX_RES:
            raise BadInputError(f"fbnet: resolution {resolution!r} is not supported; "
                                f"expected an integer in {_MIN_RES}..{_MAX_RES} (default 224)")
        self.resolution = int(resolution)
        # geometry of the 22 layers: (cin, cout, stride, side in, side out)
        layers = []
        c, h = STEM_CHANNELS, _down(self.resolution, 2)
        self._stem_side = h
        for cout, n, s0 in STAGES:
            for j in range(n):
                s = s0 if j == 0 else 1
                layers.append((c, cout, s, h, _down(h, s)))
                c, h = cout, _down(h, s)
        self._layers = tuple(layers)
        self._final = (c, h)
        self._slot_table: list[BlockSpec | None] | None = None
        self._tables: tuple[np.ndarray, float, np.ndarray, float] | None = None

    # ---- encoding ---------------------------------------------------------------------------
    def parse(self, text: str) -> FBNetArch:
        """Parse ``"k3_e1-skip-...-k5_e6"`` (22 names joined by ``-``).

        Raises:
            BadInputError: not a string, wrong count, or an unknown name (naming the layer, 0-based).
        """
        if not isinstance(text, str):
            raise BadInputError(f"fbnet arch: expected a string of block names, got {type(text).__name__}")
        return FBNetArch(tuple(text.strip().split("-")))

    def format(self, arch: FBNetArch) -> str:
        """Canonical string: the 22 block names joined by ``-``."""
        return "-".join(arch.ops)

    def genome_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.zeros(NUM_LAYERS, dtype=np.int64), np.full(NUM_LAYERS, N_CHOICES - 1, dtype=np.int64))

    def encode(self, arch: FBNetArch) -> np.ndarray:
        return np.array([_INDEX[o] for o in arch.ops], dtype=np.int64)

    def decode(self, genome: np.ndarray) -> FBNetArch:
        g = self._check_genomes(np.asarray(genome)[None, :])[0]
        return FBNetArch(tuple(CHOICES[i] for i in g))

    def _check_genomes(self, genomes) -> np.ndarray:
        g = np.asarray(genomes)
        if g.ndim != 2 or g.shape[1] != NUM_LAYERS:
            raise BadInputError(f"fbnet genomes: expected shape (n, {NUM_LAYERS}), got {g.shape}")
        # float arrays holding whole numbers are accepted (pymoo hands integer genomes over as floats)
        whole = np.issubdtype(g.dtype, np.integer) or (
            np.issubdtype(g.dtype, np.floating) and bool(np.all(g == np.round(g))))
        if g.size and (not whole or g.min() < 0 or g.max() >= N_CHOICES):
            raise BadInputError(f"fbnet genomes: expected integers in 0..{N_CHOICES - 1}")
        return g.astype(np.int64, copy=False)

    # ---- latency structure ------------------------------------------------------------------
    def slot_blocks(self) -> list[BlockSpec | None]:
        """201 entries: ``layer * 9 + choice`` (198), then stem, head conv, classifier."""
        if self._slot_table is None:
            r = self.resolution
            table: list[BlockSpec | None] = []
            for cin, cout, s, h, ho in self._layers:
                for name in CHOICES:
                    table.append(_layer_spec(name, cin, cout, s, h, ho))
            table.append(BlockSpec.make("conv_bn_act", (3, r, r), (STEM_CHANNELS, self._stem_side,
                                                                   self._stem_side), k=3, s=2, act="relu"))
            c, h = self._final
            table.append(BlockSpec.make("conv_bn_act", (c, h, h), (HEAD_CHANNELS, h, h), k=1, s=1, act="relu"))
            table.append(BlockSpec.make("avgpool_linear", (HEAD_CHANNELS, h, h), (NUM_CLASSES, 1, 1)))
            self._slot_table = table
        return self._slot_table

    def slots(self, genomes: np.ndarray) -> np.ndarray:
        """Genomes ``(n, 22)`` -> slot ids ``(n, 25)``: stem, 22 layers, head conv, classifier."""
        g = self._check_genomes(genomes)
        n = g.shape[0]
        out = np.empty((n, NUM_LAYERS + 3), dtype=np.int64)
        out[:, 0] = STEM_SLOT
        out[:, 1:NUM_LAYERS + 1] = g + np.arange(NUM_LAYERS, dtype=np.int64) * N_CHOICES
        out[:, NUM_LAYERS + 1] = HEAD_SLOT
        out[:, NUM_LAYERS + 2] = CLASSIFIER_SLOT
        return out

    # ---- models -------------------------------------------------------------------------------
    def build(self, arch: FBNetArch):
        """The network (eval mode, random init) for ``arch``; input :meth:`input_shape`, output (1, 1000)."""
        from torch import nn

        from hwnat.nn.fbnet import FBNet

        table = self.slot_blocks()
        ids = self.slots(self.encode(arch)[None, :])[0]
        mods = [nn.Identity() if table[i] is None else self.build_block(table[i]) for i in ids]
        return FBNet(mods[0], mods[1:-2], mods[-2], mods[-1]).eval()

    def build_block(self, spec: BlockSpec):
        """A module for one spec of :meth:`slot_blocks`, taking ``(1, *spec.in_shape)``. The classifier's
        output is ``(1, 1000)`` (its ``out_shape`` is written ``(1000, 1, 1)``)."""
        from hwnat.nn.fbnet import Classifier, ConvBNReLU, FBNetBlock, FBNetSkip

        cin, cout = spec.in_shape[0], spec.out_shape[0]
        if spec.op == "fbnet_mb":
            m = FBNetBlock(cin, spec.param("mid"), cout, k=spec.param("k"), s=spec.param("s"),
                           g=spec.param("g"))
        elif spec.op == "fbnet_skip":
            m = FBNetSkip(cin, cout, s=spec.param("s"))
        elif spec.op == "conv_bn_act":
            m = ConvBNReLU(cin, cout, spec.param("k"), s=spec.param("s"))
        elif spec.op == "avgpool_linear":
            m = Classifier(cin, cout)
        else:
            raise BadInputError(f"fbnet: cannot build block {spec.op!r}; expected one of: "
                                "fbnet_mb, fbnet_skip, conv_bn_act, avgpool_linear")
        return m.eval()

    def input_shape(self, arch: FBNetArch | None = None) -> tuple[int, int, int, int]:
        return (1, 3, self.resolution, self.resolution)

    # ---- FLOPs and parameters -----------------------------------------------------------------
    def _flop_param_tables(self) -> tuple[np.ndarray, float, np.ndarray, float]:
        """Per-(layer, choice) FLOPs and params ``(22, 9)`` and the fixed (stem + head) totals."""
        if self._tables is None:
            table = self.slot_blocks()
            fl = np.array([_spec_flops(b) for b in table], dtype=np.float64)
            pa = np.array([_spec_params(b) for b in table], dtype=np.float64)
            m = NUM_LAYERS * N_CHOICES
            self._tables = (fl[:m].reshape(NUM_LAYERS, N_CHOICES), float(fl[m:].sum()),
                            pa[:m].reshape(NUM_LAYERS, N_CHOICES), float(pa[m:].sum()))
        return self._tables

    def flops_many(self, genomes: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`flops`: genomes ``(n, 22)`` -> FLOPs ``(n,)`` (float64)."""
        g = self._check_genomes(genomes)
        fl, fixed, _, _ = self._flop_param_tables()
        return fl[np.arange(NUM_LAYERS), g].sum(axis=1) + fixed

    def params_many(self, genomes: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`params`: genomes ``(n, 22)`` -> parameter counts ``(n,)`` (float64)."""
        g = self._check_genomes(genomes)
        _, _, pa, fixed = self._flop_param_tables()
        return pa[np.arange(NUM_LAYERS), g].sum(axis=1) + fixed

    def flops(self, arch: FBNetArch) -> float:
        """FLOPs (2 x MACs of convs and the fc, batch 1), e.g. 1.004e9 for all ``k3_e6`` at 224."""
        return float(self.flops_many(self.encode(arch)[None, :])[0])

    def params(self, arch: FBNetArch) -> float:
        """Parameters: conv weights, BN scale and shift, fc weight and bias."""
        return float(self.params_many(self.encode(arch)[None, :])[0])


def _layer_spec(name: str, cin: int, cout: int, s: int, h: int, ho: int) -> BlockSpec | None:
    """Block spec of one searchable layer with one choice (``None`` for an identity ``skip``)."""
    cfg = CHOICE_CFG[name]
    if cfg is None:
        if cin == cout and s == 1:
            return None
        return BlockSpec.make("fbnet_skip", (cin, h, h), (cout, ho, ho), k=1, s=s, act="relu")
    k, e, g = cfg
    return BlockSpec.make("fbnet_mb", (cin, h, h), (cout, ho, ho), k=k, mid=cin * e, g=g, s=s,
                          skip=(s == 1 and cin == cout), act="relu")


def _spec_flops(spec: BlockSpec | None) -> float:
    """Analytic FLOPs (2 x MACs of convs and linear layers) of one block."""
    if spec is None:
        return 0.0
    cin, h, w = spec.in_shape
    cout, ho, wo = spec.out_shape
    if spec.op == "fbnet_mb":
        mid, k, g = spec.param("mid"), spec.param("k"), spec.param("g")
        macs = h * w * mid * (cin // g) + ho * wo * mid * k * k + ho * wo * cout * (mid // g)
    elif spec.op in ("fbnet_skip", "conv_bn_act"):
        k = spec.param("k")
        macs = ho * wo * cout * cin * k * k
    elif spec.op == "avgpool_linear":
        macs = cin * cout
    else:
        raise BadInputError(f"fbnet: no FLOPs formula for block {spec.op!r}")
    return 2.0 * macs


def _spec_params(spec: BlockSpec | None) -> float:
    """Analytic parameter count (conv weights, BN affine, fc weight + bias) of one block."""
    if spec is None:
        return 0.0
    cin, cout = spec.in_shape[0], spec.out_shape[0]
    if spec.op == "fbnet_mb":
        mid, k, g = spec.param("mid"), spec.param("k"), spec.param("g")
        return float(cin * mid // g + 2 * mid + mid * k * k + 2 * mid + mid * cout // g + 2 * cout)
    if spec.op in ("fbnet_skip", "conv_bn_act"):
        k = spec.param("k")
        return float(cin * cout * k * k + 2 * cout)
    if spec.op == "avgpool_linear":
        return float(cin * cout + cout)
    raise BadInputError(f"fbnet: no parameter formula for block {spec.op!r}")
