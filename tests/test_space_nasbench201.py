"""Tests of the nasbench201 space: strings, genomes, slots/blocks, analytic FLOPs/params vs counters, ONNX."""

from __future__ import annotations

import csv
import gzip
import subprocess
import sys

import numpy as np
import pytest

from hwnat.data import latency_dataset
from hwnat.errors import BadInputError
from hwnat.spaces import get_space, list_spaces
from hwnat.spaces.nasbench201 import EDGES, OPS, NASBench201Space, NB201Arch

CSV = latency_dataset("nasbench201")  # shipped with the package: never skipped

EXAMPLE = "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|"
# special cells: all none; all skip; all 3x3 convs; node 1 unreachable (1<-0 none) but its out-edges
# still run; output reachable only through ops on a zero node; only a 1x1 conv into node 1 (dead end);
# node 2 dead (3<-2 none) so 2<-0, 2<-1 and then 1<-0 are dead; node 2 dead but node 1 live through 3<-1
SPECIAL = [
    ("none",) * 6,
    ("skip_connect",) * 6,
    ("nor_conv_3x3",) * 6,
    ("none", "avg_pool_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_1x1", "nor_conv_3x3"),
    ("none", "none", "nor_conv_3x3", "none", "nor_conv_1x1", "nor_conv_3x3"),
    ("nor_conv_1x1", "none", "none", "none", "none", "none"),
    ("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "none", "none"),
    ("nor_conv_3x3", "nor_conv_1x1", "nor_conv_3x3", "none", "avg_pool_3x3", "none"),
]


@pytest.fixture(scope="module")
def sp() -> NASBench201Space:
    return get_space("nasbench201")


def _random_archs(sp, n, seed=0):
    return sp.sample(np.random.default_rng(seed), n)


# ---- registry and strings ------------------------------------------------------------------------

def test_registered(sp):
    assert "nasbench201" in list_spaces()
    assert isinstance(sp, NASBench201Space) and sp.name == "nasbench201"
    assert get_space("nasbench201", num_classes=10).num_classes == 10
    with pytest.raises(BadInputError, match="num_classes"):
        get_space("nasbench201", num_classes=0)


def test_parse_format_example(sp):
    a = sp.parse(EXAMPLE)
    assert a == NB201Arch(("nor_conv_3x3", "skip_connect", "avg_pool_3x3", "none", "nor_conv_1x1",
                           "skip_connect"))
    assert a.op(3, 1) == "nor_conv_1x1"
    assert sp.format(a) == str(a) == EXAMPLE
    assert hash(a) == hash(sp.parse(EXAMPLE))
    assert sp.format(list(a.ops)) == EXAMPLE and sp.format(EXAMPLE) == EXAMPLE


def test_roundtrip_published_csv(sp):
    with gzip.open(CSV, "rt", newline="") as f:
        texts = [row["arch"] for row in csv.DictReader(f)]
    assert len(texts) == 15625
    archs = sp.parse_many(texts)
    assert [sp.format(a) for a in archs] == texts
    genomes = sp.encode_many(archs)
    assert len({tuple(g) for g in genomes}) == 15625 == len(OPS) ** len(EDGES)
    assert all(sp.decode(g) == a for g, a in zip(genomes[::97], archs[::97], strict=True))


@pytest.mark.parametrize("text, fragments", [
    ("", ["3 nodes", "'+'"]),
    ("|none~0|+|none~0|none~1|", ["3 nodes", "got 2"]),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|", ["got 4"]),
    ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", ["node 1", "|op~0|"]),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", ["node 2", "1 edge", "expected 2"]),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|", ["node 3", "expected 3"]),
    ("|none~0|+|none~0|conv~1|+|none~0|none~1|none~2|", ["edge 2<-1", "'conv'", "skip_connect", "avg_pool_3x3"]),
    ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", ["edge 2<-1", "expected 1"]),
    ("|none~0|+|none~0|none~1|+|none~0|none1|none~2|", ["edge 3<-1", "'none1'", "op~1"]),
    ("|none~0|+|none~0|none~1|+|none~0|~1|none~2|", ["edge 3<-1", "op~1"]),
    ("|None~0|+|none~0|none~1|+|none~0|none~1|none~2|", ["edge 1<-0", "'None'", "valid ops"]),
])
def test_parse_errors(sp, text, fragments):
    with pytest.raises(BadInputError) as e:
        sp.parse(text)
    for frag in fragments:
        assert frag in str(e.value), (frag, str(e.value))


def test_parse_rejects_non_strings_and_parse_many_names_row(sp):
    with pytest.raises(BadInputError, match="string"):
        sp.parse(3)
    with pytest.raises(BadInputError, match="row 1"):
        sp.parse_many([EXAMPLE, "bad"])
    with pytest.raises(BadInputError, match="edge 3<-2.*valid ops"):
        NB201Arch(("none",) * 5 + ("conv",))


# ---- genome --------------------------------------------------------------------------------------

def test_genome_roundtrip_and_bounds(sp):
    lo, hi = sp.genome_bounds()
    assert lo.tolist() == [0] * 6 and hi.tolist() == [4] * 6
    for a in _random_archs(sp, 50) + [NB201Arch(ops) for ops in SPECIAL]:
        g = sp.encode(a)
        assert g.dtype == np.int64 and sp.decode(g) == a
    assert sp.encode(sp.parse(EXAMPLE)).tolist() == [3, 1, 4, 0, 2, 1]
    with pytest.raises(BadInputError, match="position 2 is 5"):
        sp.decode(np.array([0, 0, 5, 0, 0, 0]))
    with pytest.raises(BadInputError, match="shape"):
        sp.decode(np.zeros(5, dtype=np.int64))
    rng = np.random.default_rng(1)
    a, b = _random_archs(sp, 2, seed=2)
    assert isinstance(sp.mutate(a, rng), NB201Arch) and isinstance(sp.mutate(a, rng, prob=0.0), NB201Arch)
    assert all(x in (y, z) for x, y, z in zip(sp.crossover(a, b, rng).ops, a.ops, b.ops, strict=True))


# ---- slots and blocks ----------------------------------------------------------------------------

def _no_shared_work(arch) -> bool:
    """No two ops or nodes of the cell can compute the same tensor: no skip (a node equal to another), at
    most one pool, at most one node without inputs. ``_expected_blocks`` holds for these cells; for the
    others the exported graph is the reference (``test_element_wise_nodes_...``)."""
    zero_nodes = (arch.ops[0] == "none") + (arch.ops[1] == arch.ops[2] == "none")
    return "skip_connect" not in arch.ops and arch.ops.count("avg_pool_3x3") <= 1 and zero_nodes <= 1


def _expected_blocks(sp, arch):
    """Blocks of an architecture enumerated by hand, independent of the slot code (cells without shared
    work, ``_no_shared_work``)."""
    by_key = {b.key: b for b in sp.all_blocks()}
    out = [by_key["nb201_stem-in:32x32x3-out:32x32x16-k:3-s:1"]]
    for s, (c, h) in enumerate([(16, 32), (32, 16), (64, 8)]):
        if s:
            pc, ph = (16, 32) if s == 1 else (32, 16)
            out.append(by_key[f"nb201_resblock-in:{ph}x{ph}x{pc}-out:{h}x{h}x{c}-k:3-s:2"])
        reach = {3: True}  # node -> reaches the cell output, by hand from the edge list
        reach[2] = arch.ops[5] != "none"
        reach[1] = arch.ops[4] != "none" or (arch.ops[2] != "none" and reach[2])
        for _cell in range(5):
            inputs = {1: 0, 2: 0, 3: 0}
            for (to, _frm), op in zip(EDGES, arch.ops, strict=True):
                if op == "none" or not reach[to]:
                    continue
                inputs[to] += 1
                extra = "" if op == "skip_connect" else f"-k:{3 if op.endswith('3x3') else 1}-s:1"
                out.append(by_key[f"nb201_{op}-in:{h}x{h}x{c}-out:{h}x{h}x{c}{extra}"])
            for node in (1, 2, 3):  # a live node sums its inputs, or is x * 0 without any
                if reach[node] and inputs[node] == 0:
                    out.append(by_key[f"nb201_zero-in:{h}x{h}x{c}-out:{h}x{h}x{c}"])
                elif reach[node] and inputs[node] > 1:
                    out.append(by_key[f"nb201_add-in:{h}x{h}x{c}-out:{h}x{h}x{c}-n:{inputs[node]}"])
    out.append(by_key["nb201_head-in:8x8x64-out:1x1x100"])
    return out


def test_all_blocks(sp):
    blocks = sp.all_blocks()
    assert len(blocks) == 25 == len({b.key for b in blocks})  # 16 op blocks, 3 stages x (zero, add 2, add 3)
    assert sp.resolution == 32 and not hasattr(sp, "resolutions")
    assert sp.all_blocks(resolution=32) == blocks == sp.all_blocks(resolution=[32])
    with pytest.raises(BadInputError, match="resolution 224"):
        sp.all_blocks(resolution=224)
    with pytest.raises(BadInputError, match="restriction"):
        sp.all_blocks(width=1.2)


def test_slots_shape_and_blocks_match(sp):
    archs = _random_archs(sp, 80) + [NB201Arch(ops) for ops in SPECIAL]
    assert sum(map(_no_shared_work, archs)) >= 10
    genomes = sp.encode_many(archs)
    ids = sp.slots(genomes)
    assert ids.dtype == np.int64 and ids.shape == (len(archs), 1 + 3 * 5 * (6 + 3) + 2 + 1)
    table = sp.slot_blocks()
    assert table[0] is None and all(b is not None for b in table[1:])
    for a, row in zip(archs, ids, strict=True):
        keys = [b.key for b in sp.blocks(a)]
        assert keys == [table[i].key for i in row if table[i] is not None]
        if _no_shared_work(a):
            assert keys == [b.key for b in _expected_blocks(sp, a)]
    # a table sum over blocks(arch) equals the vectorised sum over slots
    rng = np.random.default_rng(3)
    lut = {b.key: float(rng.uniform(0.01, 1.0)) for b in sp.all_blocks()}
    vec = np.array([0.0 if b is None else lut[b.key] for b in table])
    np.testing.assert_allclose(vec[ids].sum(axis=1), [sum(lut[b.key] for b in sp.blocks(a)) for a in archs])
    with pytest.raises(BadInputError, match=r"\(n, 6\)"):
        sp.slots(np.zeros((2, 7), dtype=np.int64))
    with pytest.raises(BadInputError, match="expected 0..4"):
        sp.slots(np.full((1, 6), -1))
    assert sp.slots(np.zeros((0, 6), dtype=np.int64)).shape == (0, 139)


# ---- FLOPs and params ----------------------------------------------------------------------------

def _count(module, shape):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        y = module(torch.randn(shape))
    return fc.get_total_flops(), sum(p.numel() for p in module.parameters()), y


@pytest.mark.parametrize("ops", SPECIAL[:5] + [a.ops for a in _random_archs(NASBench201Space(), 3, seed=7)],
                         ids=lambda ops: "-".join(o[:6] for o in ops))
def test_flops_params_match_counters(sp, ops):
    arch = NB201Arch(ops)
    model = sp.build(arch)
    assert not model.training
    flops, params, y = _count(model, sp.input_shape(arch))
    assert tuple(y.shape) == (1, 100)
    assert sp.flops(arch) == pytest.approx(flops, rel=0.01)
    assert sp.params(arch) == pytest.approx(params, rel=0.01)


def test_known_extremes(sp):
    # NAS-Bench-201 on CIFAR-100: 7.78 to 220.1 M multiply-accumulates, 0.079 to 1.537 M parameters
    assert sp.flops(("none",) * 6) / 2e6 == pytest.approx(7.79, abs=0.01)
    assert sp.flops(("nor_conv_3x3",) * 6) / 2e6 == pytest.approx(220.1, abs=0.1)
    assert sp.params(("none",) * 6) / 1e6 == pytest.approx(0.0792, abs=1e-4)
    assert sp.params(("nor_conv_3x3",) * 6) / 1e6 == pytest.approx(1.5374, abs=1e-4)
    assert get_space("nasbench201", num_classes=10).params(("none",) * 6) == sp.params(("none",) * 6) - 90 * 65


def test_flops_params_many_match_scalar(sp):
    genomes = sp.sample_genomes(np.random.default_rng(5), 300)
    fm, pm = sp.flops_many(genomes), sp.params_many(genomes)
    assert fm.shape == pm.shape == (300,) and fm.dtype == pm.dtype == np.float64
    archs = [sp.decode(g) for g in genomes]
    np.testing.assert_array_equal(fm, [sp.flops(a) for a in archs])
    np.testing.assert_array_equal(pm, [sp.params(a) for a in archs])
    assert sp.flops_many(np.zeros((0, 6), dtype=np.int64)).shape == (0,)


def test_block_costs_add_up_to_the_network(sp):
    """Counting each block module alone and summing over blocks(arch) gives the network's FLOPs/params:
    build, build_block, slots and the closed forms agree."""
    cost = {}
    for b in sp.all_blocks():
        f, p, y = _count(sp.build_block(b), (1, *b.in_shape))
        expect = (1, b.out_shape[0]) if b.op == "nb201_head" else (1, *b.out_shape)
        assert tuple(y.shape) == expect, b.key
        cost[b.key] = (f, p)
    for a in _random_archs(sp, 20, seed=11) + [NB201Arch(ops) for ops in SPECIAL]:
        blocks = sp.blocks(a)
        assert sum(cost[b.key][0] for b in blocks) == sp.flops(a)
        assert sum(cost[b.key][1] for b in blocks) == sp.params(a)


# ---- models and export ---------------------------------------------------------------------------

def test_build_block_rejects_unknown(sp):
    from hwnat.spaces import BlockSpec

    with pytest.raises(BadInputError, match="unknown block op"):
        sp.build_block(BlockSpec.make("mbconv", (16, 8, 8), (16, 8, 8)))
    with pytest.raises(BadInputError, match="keeps its shape"):
        sp.build_block(BlockSpec.make("nb201_nor_conv_3x3", (16, 8, 8), (32, 8, 8), k=3, s=1))


def test_every_block_exports_to_onnx(sp, tmp_path):
    from hwnat.export import check_onnx, export_onnx

    for i, b in enumerate(sp.all_blocks()):
        m = sp.build_block(b)
        shape = (1, *b.in_shape)
        path = export_onnx(m, shape, tmp_path / f"b{i}.onnx")
        check_onnx(m, path, shape)


def test_network_exports_to_onnx_with_every_edge(sp, tmp_path):
    """The exported network keeps the convs fed by a zero node (no constant folding removes them)."""
    import onnx

    from hwnat.export import check_onnx, export_onnx

    arch = NB201Arch(SPECIAL[4])  # node 1 is zero; edges 2<-1 and 3<-1 are convs on it
    m = sp.build(arch)
    path = export_onnx(m, sp.input_shape(arch), tmp_path / "net.onnx")
    check_onnx(m, path, sp.input_shape(arch))
    n_conv = sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)
    assert n_conv == 1 + 2 * 3 + 3 * 5 * 3  # stem, 2 reductions x 3 convs, 3 conv edges in 15 cells


def test_import_is_light():
    code = "import sys, hwnat.spaces; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", "import hwnat.spaces imported torch; spaces must import torch lazily"


def test_dead_edges_are_neither_built_nor_counted_and_export_agrees(sp, tmp_path):
    """A cell whose node 2 cannot reach the output: the ops into it (and into node 1, which only feeds
    node 2) are not in the built network, its ONNX file, its blocks or its FLOPs; the same cell with
    3<-2 live has them all."""
    import onnx

    from hwnat.export import export_onnx

    dead = NB201Arch(("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "none", "none"))
    alive = NB201Arch(("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "none", "skip_connect"))
    lean = NB201Arch(("none",) * 3 + ("skip_connect", "none", "none"))  # what `dead` computes
    assert [b.key for b in sp.blocks(dead)] == [b.key for b in sp.blocks(lean)]
    assert sp.flops(dead) == sp.flops(lean) < sp.flops(alive)
    assert sp.params(dead) == sp.params(lean)
    convs = {}
    for name, a in (("dead", dead), ("alive", alive)):
        path = export_onnx(sp.build(a), sp.input_shape(a), tmp_path / f"{name}.onnx")
        convs[name] = sum(n.op_type == "Conv" for n in onnx.load(str(path)).graph.node)
    assert convs["dead"] == 1 + 2 * 3  # stem and reductions only
    assert convs["alive"] == 1 + 2 * 3 + 2 * 15  # plus 1<-0 and 2<-0 in every cell


# cells where the exporter shares work: two pools of the input; all skips (node 3's first add is node
# 2); two nodes without inputs (one x * 0); a pool of node 1 = x and a pool of x
SHARED_WORK = [
    ("avg_pool_3x3", "avg_pool_3x3", "none", "avg_pool_3x3", "nor_conv_1x1", "skip_connect"),
    ("none", "none", "none", "nor_conv_3x3", "nor_conv_1x1", "nor_conv_3x3"),
    ("skip_connect", "nor_conv_3x3", "avg_pool_3x3", "avg_pool_3x3", "none", "skip_connect"),
]


@pytest.mark.parametrize("ops", SPECIAL + SHARED_WORK + [a.ops for a in _random_archs(NASBench201Space(), 6, seed=13)],
                         ids=lambda ops: "-".join(o[:6] for o in ops))
def test_element_wise_nodes_are_blocks_as_the_export_runs_them(sp, ops, tmp_path):
    """The exported network runs exactly the operators of the arch's blocks: every Add and Mul is in a
    node block (the two residual reductions hold one Add each), every pool and conv in an edge block, and
    work the exporter computes once (equal pools, equal sums) is one block."""
    import onnx

    from hwnat.export import export_onnx

    arch = NB201Arch(ops)
    path = export_onnx(sp.build(arch), sp.input_shape(arch), tmp_path / "net.onnx")
    graph = [n.op_type for n in onnx.load(str(path)).graph.node]
    blocks = [b.op for b in sp.blocks(arch)]
    adds = 2 + sum(b.param("n") - 1 for b in sp.blocks(arch) if b.op == "nb201_add")
    assert graph.count("Add") == adds
    assert graph.count("Mul") == blocks.count("nb201_zero")
    assert graph.count("AveragePool") == blocks.count("nb201_avg_pool_3x3") + 2  # + 2 reduction shortcuts
    assert graph.count("Conv") == blocks.count("nb201_nor_conv_1x1") + blocks.count("nb201_nor_conv_3x3") + 7


def test_node_blocks_time_what_they_stand_for(sp):
    """An add block of n inputs runs n - 1 element-wise adds; a zero block one multiply by zero."""
    import torch

    x = torch.randn(1, 16, 32, 32)
    by_key = {b.key: b for b in sp.all_blocks()}
    for n in (2, 3):
        m = sp.build_block(by_key[f"nb201_add-in:32x32x16-out:32x32x16-n:{n}"])
        torch.testing.assert_close(m(x), n * x)
    zero = sp.build_block(by_key["nb201_zero-in:8x8x64-out:8x8x64"])
    assert torch.count_nonzero(zero(torch.randn(1, 64, 8, 8))) == 0
