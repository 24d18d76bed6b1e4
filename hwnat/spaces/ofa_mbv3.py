"""The Once-for-All MobileNetV3 space, as searched by NAT.

Cai et al., "Once-for-All: Train One Network and Specialize it for Efficient Deployment", ICLR 2020;
Lu et al., "Neural Architecture Transfer", TPAMI 2021 (resolutions 192..256, width multipliers 1.0/1.2).

Network (width 1.0): 3x3 conv s2 -> 16 (h-swish); MBConv k3 e1 16->16 (ReLU, identity); five elastic
stages of 2..4 MBConv layers with (width, first stride, activation, SE) = (24,2,relu,-), (40,2,relu,SE),
(80,2,hswish,-), (112,1,hswish,SE), (160,2,hswish,SE), kernel 3/5/7 and expand ratio 3/4/6 per layer;
1x1 conv -> 960 (h-swish); global pool; 1x1 conv -> 1280 (h-swish); linear -> 1000. Widths are multiplied
by ``w`` and rounded to multiples of 8 (the 1280 feature width is kept at w <= 1).

Canonical string: OFA's compact JSON ``{"ks":[20],"e":[20],"d":[5],"r":int}`` with an optional ``"w"``.
Entries of ``ks``/``e`` beyond a stage's depth are inactive but kept (so strings round-trip).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from hwnat.errors import BadInputError
from hwnat.spaces._base import BlockSpec, SearchSpace
from hwnat.spaces._registry import register_space

KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
DEPTHS = (2, 3, 4)
N_STAGES, MAX_DEPTH = 5, 4
N_LAYERS = N_STAGES * MAX_DEPTH
#: (base width, first stride, activation, SE) of the five elastic stages
STAGES = ((24, 2, "relu", False), (40, 2, "relu", True), (80, 2, "hswish", False),
          (112, 1, "hswish", True), (160, 2, "hswish", True))
STEM_WIDTH, FIRST_BLOCK_WIDTH, FINAL_EXPAND, FEATURE, CLASSES = 16, 16, 960, 1280, 1000
#: every resolution the network accepts (OFA's 128..224 and NAT's 192..256, step 4)
SUPPORTED_RESOLUTIONS = tuple(range(128, 257, 4))
NAT_RESOLUTIONS = tuple(range(192, 257, 4))
SUPPORTED_WIDTHS = (1.0, 1.2)
#: fixed blocks per (resolution, width), then 9 (kernel x expand) choices per layer
N_FIXED = 4
PER_RW = N_FIXED + N_LAYERS * len(KERNELS) * len(EXPANDS)


@dataclass(frozen=True)
class OFAArch:
    """One subnet: kernel and expand ratio of all 20 layer slots, depth of the 5 stages, resolution, width."""

    ks: tuple[int, ...]
    e: tuple[int, ...]
    d: tuple[int, ...]
    r: int
    w: float = 1.0

    def active_layers(self) -> list[int]:
        """Indices (0..19) of the layers that run."""
        return [s * MAX_DEPTH + j for s in range(N_STAGES) for j in range(self.d[s])]


def _widths(w: float) -> dict:
    from hwnat.nn.costs import make_divisible

    return {
        "stem": make_divisible(STEM_WIDTH * w), "first": make_divisible(FIRST_BLOCK_WIDTH * w),
        "stages": [make_divisible(c * w) for c, *_ in STAGES],
        "final": make_divisible(FINAL_EXPAND * w),
        "feature": make_divisible(FEATURE * w) if w > 1.0 else FEATURE,
    }


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@register_space("ofa-mbv3")
class OFAMobileNetV3Space(SearchSpace):
    """OFA MobileNetV3 space.

    Args:
        resolutions: resolutions that ``sample`` draws from (default NAT's 192..256 step 4); every
            resolution in ``SUPPORTED_RESOLUTIONS`` (128..256 step 4) parses and builds.
        widths: width multipliers ``sample`` draws from (default 1.0); 1.0 and 1.2 are supported.
        classes: classifier outputs.

    Example:
        >>> s = OFAMobileNetV3Space()
        >>> a = s.parse('{"ks":[3]*20,...}')  # doctest: +SKIP
    """

    def __init__(self, resolutions=NAT_RESOLUTIONS, widths=(1.0,), classes: int = CLASSES):
        bad = [r for r in resolutions if r not in SUPPORTED_RESOLUTIONS]
        if bad or not resolutions:
            raise BadInputError(f"resolution {bad[0] if bad else '(none)'} is not supported by ofa-mbv3; "
                                f"expected values in 128..256 with step 4")
        badw = [w for w in widths if float(w) not in SUPPORTED_WIDTHS]
        if badw or not widths:
            raise BadInputError(f"width multiplier {badw[0] if badw else '(none)'} is not supported; "
                                f"expected one of {SUPPORTED_WIDTHS}")
        self.resolutions = tuple(int(r) for r in resolutions)
        self.widths = tuple(float(w) for w in widths)
        self.classes = int(classes)

    # ---- strings -----------------------------------------------------------------------------
    def parse(self, text: str) -> OFAArch:
        try:
            d = json.loads(text)
        except (json.JSONDecodeError, TypeError) as e:
            raise BadInputError(f"ofa-mbv3 arch is not JSON ({e}): {str(text)[:80]!r}; expected "
                                '{"ks":[20 ints],"e":[20 ints],"d":[5 ints],"r":int}') from None
        if not isinstance(d, dict):
            raise BadInputError("ofa-mbv3 arch must be a JSON object with fields ks, e, d, r")
        unknown = set(d) - {"ks", "e", "d", "r", "w"}
        if unknown:
            raise BadInputError(f"ofa-mbv3 arch: unknown field {sorted(unknown)[0]!r}; expected ks, e, d, r, w")
        for field, n, allowed in (("ks", N_LAYERS, KERNELS), ("e", N_LAYERS, EXPANDS), ("d", N_STAGES, DEPTHS)):
            v = d.get(field)
            if not isinstance(v, list) or len(v) != n:
                raise BadInputError(f"ofa-mbv3 arch field {field!r}: expected a list of {n} integers, "
                                    f"got {v!r}")
            for i, x in enumerate(v):
                if isinstance(x, bool) or x not in allowed:
                    raise BadInputError(f"ofa-mbv3 arch field {field!r}[{i}] = {x!r}; expected one of "
                                        f"{list(allowed)}")
        r = d.get("r")
        if isinstance(r, bool) or not isinstance(r, int) or r not in SUPPORTED_RESOLUTIONS:
            raise BadInputError(f"ofa-mbv3 arch field 'r' = {r!r}; expected a resolution in 128..256 "
                                "with step 4")
        w = d.get("w", 1.0)
        if isinstance(w, bool) or not isinstance(w, (int, float)) or float(w) not in SUPPORTED_WIDTHS:
            raise BadInputError(f"ofa-mbv3 arch field 'w' = {w!r}; expected one of {list(SUPPORTED_WIDTHS)}")
        return OFAArch(tuple(d["ks"]), tuple(d["e"]), tuple(d["d"]), r, float(w))

    def format(self, arch: OFAArch) -> str:
        d = {"ks": list(arch.ks), "e": list(arch.e), "d": list(arch.d), "r": arch.r}
        if arch.w != 1.0:
            d["w"] = arch.w
        return json.dumps(d, separators=(",", ":"))

    # ---- genome ------------------------------------------------------------------------------
    #: layout: 20 kernel indices, 20 expand indices, 5 depth indices, resolution index, width index
    def genome_bounds(self):
        lo = np.zeros(2 * N_LAYERS + N_STAGES + 2, dtype=np.int64)
        hi = np.array([2] * (2 * N_LAYERS + N_STAGES) + [len(SUPPORTED_RESOLUTIONS) - 1,
                                                           len(SUPPORTED_WIDTHS) - 1], dtype=np.int64)
        return lo, hi

    def encode(self, arch: OFAArch) -> np.ndarray:
        return np.array([KERNELS.index(k) for k in arch.ks] + [EXPANDS.index(e) for e in arch.e]
                        + [DEPTHS.index(x) for x in arch.d]
                        + [SUPPORTED_RESOLUTIONS.index(arch.r), SUPPORTED_WIDTHS.index(arch.w)],
                        dtype=np.int64)

    def decode(self, genome) -> OFAArch:
        g = [int(x) for x in genome]
        return OFAArch(tuple(KERNELS[i] for i in g[:20]), tuple(EXPANDS[i] for i in g[20:40]),
                       tuple(DEPTHS[i] for i in g[40:45]), SUPPORTED_RESOLUTIONS[g[45]],
                       SUPPORTED_WIDTHS[g[46]])

    def sample_genomes(self, rng, n):
        lo, hi = self.genome_bounds()
        g = rng.integers(lo, hi + 1, size=(n, len(lo)), dtype=np.int64)
        g[:, 45] = rng.choice([SUPPORTED_RESOLUTIONS.index(r) for r in self.resolutions], size=n)
        g[:, 46] = rng.choice([SUPPORTED_WIDTHS.index(w) for w in self.widths], size=n)
        return g

    def mutate(self, arch: OFAArch, rng, prob: float = 0.1) -> OFAArch:
        """Base mutation, then resolution and width kept within this space's search settings."""
        out = super().mutate(arch, rng, prob)
        r = out.r if out.r in self.resolutions else min(self.resolutions, key=lambda x: abs(x - out.r))
        w = out.w if out.w in self.widths else arch.w if arch.w in self.widths else self.widths[0]
        return OFAArch(out.ks, out.e, out.d, r, w)

    # ---- latency structure ---------------------------------------------------------------------
    @cached_property
    def _slot_table(self) -> list[BlockSpec | None]:
        table: list[BlockSpec | None] = [None]
        for r in SUPPORTED_RESOLUTIONS:
            for w in SUPPORTED_WIDTHS:
                table.extend(self._blocks_for(r, w))
        return table

    def _blocks_for(self, r: int, w: float) -> list[BlockSpec]:
        """The PER_RW blocks of one (resolution, width): stem, first block, final expand, head, then
        layer-major (kernel x expand) choices."""
        wd = _widths(w)
        hw = _ceil_div(r, 2)
        out = [
            BlockSpec.make("conv_bn_act", (3, r, r), (wd["stem"], hw, hw), k=3, s=2, act="hswish"),
            BlockSpec.make("mbconv", (wd["stem"], hw, hw), (wd["first"], hw, hw), k=3, mid=wd["stem"],
                           s=1, se=False, act="relu", skip=wd["stem"] == wd["first"]),
        ]
        layers = []
        cin = wd["first"]
        for s, (_, stride, act, se) in enumerate(STAGES):
            cout = wd["stages"][s]
            for j in range(MAX_DEPTH):
                st = stride if j == 0 else 1
                ohw = _ceil_div(hw, st)
                for k in KERNELS:
                    for e in EXPANDS:
                        from hwnat.nn.costs import make_divisible

                        mid = make_divisible(round(cin * e), 8)
                        layers.append(BlockSpec.make("mbconv", (cin, hw, hw), (cout, ohw, ohw), k=k, mid=mid,
                                                     s=st, se=se, act=act, skip=(st == 1 and cin == cout)))
                hw, cin = ohw, cout
        out.append(BlockSpec.make("conv_bn_act", (cin, hw, hw), (wd["final"], hw, hw), k=1, s=1, act="hswish"))
        out.append(BlockSpec.make("mbv3_head", (wd["final"], hw, hw), (self.classes, 1, 1),
                                  feature=wd["feature"], act="hswish"))
        return out + layers

    def slot_blocks(self):
        return self._slot_table

    def slots(self, genomes) -> np.ndarray:
        g = np.asarray(genomes, dtype=np.int64).reshape(-1, 47)
        base = 1 + (g[:, 45] * len(SUPPORTED_WIDTHS) + g[:, 46]) * PER_RW
        depth = np.asarray(DEPTHS)[g[:, 40:45]]                                # (n, 5)
        layer = np.arange(N_LAYERS)
        active = (layer % MAX_DEPTH)[None, :] < np.repeat(depth, MAX_DEPTH, axis=1)
        layer_ids = base[:, None] + N_FIXED + layer[None, :] * 9 + g[:, :20] * 3 + g[:, 20:40]
        layer_ids = np.where(active, layer_ids, 0)
        fixed = base[:, None] + np.arange(N_FIXED)[None, :]
        return np.concatenate([fixed[:, :2], layer_ids, fixed[:, 2:]], axis=1)

    def all_blocks(self, resolutions=None, widths=None) -> list[BlockSpec]:
        """Unique blocks for the given resolutions/widths (default: this space's search settings)."""
        resolutions = self.resolutions if resolutions is None else resolutions
        widths = self.widths if widths is None else widths
        for r in resolutions:
            if r not in SUPPORTED_RESOLUTIONS:
                raise BadInputError(f"resolution {r} is not supported by ofa-mbv3; expected values in "
                                    "128..256 with step 4")
        seen: dict[str, BlockSpec] = {}
        for r in resolutions:
            for w in widths:
                for b in self._blocks_for(int(r), float(w)):
                    seen.setdefault(b.key, b)
        return list(seen.values())

    # ---- models ---------------------------------------------------------------------------------
    def input_shape(self, arch: OFAArch):
        return (1, 3, arch.r, arch.r)

    def build_block(self, spec: BlockSpec):
        from torch import nn

        from hwnat.nn.mbconv import ClassifierHead, ConvBNAct, MBConv

        cin, cout = spec.in_shape[0], spec.out_shape[0]
        if spec.op == "conv_bn_act":
            return ConvBNAct(cin, cout, spec.param("k"), spec.param("s"), act=spec.param("act")).eval()
        if spec.op == "mbconv":
            return MBConv(cin, cout, spec.param("mid"), spec.param("k"), spec.param("s"), spec.param("act"),
                          bool(spec.param("se")), bool(spec.param("skip"))).eval()
        if spec.op == "mbv3_head":
            return ClassifierHead(cin, spec.param("feature"), cout, spec.param("act")).eval()
        raise BadInputError(f"ofa-mbv3 has no block type {spec.op!r}")
        return nn.Identity()  # pragma: no cover

    def build(self, arch: OFAArch):
        from torch import nn

        return nn.Sequential(*[self.build_block(b) for b in self.blocks(arch)]).eval()

    def flops(self, arch: OFAArch) -> float:
        return self._cost(arch)[0]

    def params(self, arch: OFAArch) -> float:
        return self._cost(arch)[1]

    def _cost(self, arch: OFAArch) -> tuple[float, float]:
        f = p = 0.0
        for b in self.blocks(arch):
            a, c = _block_cost(b)
            f, p = f + a, p + c
        return f, p

    @cached_property
    def _slot_costs(self) -> tuple[np.ndarray, np.ndarray]:
        fl = np.zeros(len(self._slot_table))
        pa = np.zeros(len(self._slot_table))
        for i, b in enumerate(self._slot_table):
            if b is not None:
                fl[i], pa[i] = _block_cost(b)
        return fl, pa

    def flops_many(self, genomes) -> np.ndarray:
        """Vectorised FLOPs of many genomes ``(n, 47)``."""
        return self._slot_costs[0][self.slots(genomes)].sum(axis=1)

    def params_many(self, genomes) -> np.ndarray:
        """Vectorised parameter counts of many genomes ``(n, 47)``."""
        return self._slot_costs[1][self.slots(genomes)].sum(axis=1)


def _block_cost(b: BlockSpec) -> tuple[float, float]:
    from hwnat.nn.costs import conv_cost, head_cost, mbconv_cost

    cin, hw = b.in_shape[0], b.in_shape[1]
    cout = b.out_shape[0]
    if b.op == "conv_bn_act":
        return conv_cost(cin, cout, b.param("k"), b.out_shape[1])
    if b.op == "mbconv":
        return mbconv_cost(cin, cout, b.param("mid"), b.param("k"), b.param("s"), hw, bool(b.param("se")))
    if b.op == "mbv3_head":
        return head_cost(cin, b.param("feature"), cout)
    raise ValueError(b.op)
