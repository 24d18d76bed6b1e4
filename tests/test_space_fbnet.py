"""Tests of the FBNet search space: encoding, slots and blocks, models, FLOPs/params, ONNX export."""

from __future__ import annotations

import ast
import csv
import gzip
from pathlib import Path

import numpy as np
import pytest

from hwnat.data import latency_dataset
from hwnat.errors import BadInputError
from hwnat.spaces import BlockSpec, get_space, list_spaces
from hwnat.spaces import fbnet as fb

CSV = latency_dataset("fbnet")  # shipped with the package: never skipped


@pytest.fixture(scope="module")
def space():
    return get_space("fbnet")


def _arch(space, *names):
    """An arch from a repeating pattern of names."""
    return space.parse("-".join((list(names) * 22)[:22]))


# ---- registry and encoding ----------------------------------------------------------------------

def test_registry_and_round_trip(space):
    assert "fbnet" in list_spaces()
    assert isinstance(space, fb.FBNetSpace) and space.name == "fbnet"
    rng = np.random.default_rng(0)
    archs = space.sample(rng, 50)
    assert len({hash(a) for a in archs}) > 1
    for a in archs:
        text = space.format(a)
        assert len(text.split("-")) == 22
        assert space.parse(text) == a
        assert space.decode(space.encode(a)) == a
        m = space.mutate(a, rng, prob=0.5)
        assert space.parse(space.format(m)) == m
        b = space.crossover(a, archs[0], rng)
        assert all(o in (x, y) for o, x, y in zip(b.ops, a.ops, archs[0].ops, strict=True))
    lo, hi = space.genome_bounds()
    assert lo.tolist() == [0] * 22 and hi.tolist() == [8] * 22
    assert space.encode(_arch(space, *fb.CHOICES)).tolist() == (list(range(9)) * 3)[:22]


def test_macro_architecture_matches_table1(space):
    assert fb.STAGES == ((16, 1, 1), (24, 4, 2), (32, 4, 2), (64, 4, 2), (112, 4, 1), (184, 4, 2), (352, 1, 1))
    assert fb.NUM_LAYERS == 22
    sides = [(cin, cout, s, h, ho) for cin, cout, s, h, ho in space._layers]
    assert sides[0] == (16, 16, 1, 112, 112)
    assert sides[1] == (16, 24, 2, 112, 56)
    assert sides[-1] == (184, 352, 1, 7, 7)
    assert space.input_shape(None) == (1, 3, 224, 224)


def test_parse_format_whole_published_csv(space):
    with gzip.open(CSV, "rt", newline="") as f:
        texts = [row["arch"] for row in csv.DictReader(f)]
    assert len(texts) >= 1000
    archs = space.parse_many(texts)
    assert [space.format(a) for a in archs] == texts
    g = space.encode_many(archs)
    assert g.shape == (len(texts), 22)
    # the vectorised FLOPs/params agree with the per-arch ones
    fl, pa = space.flops_many(g), space.params_many(g)
    for i in (0, 1, len(texts) - 1):
        assert fl[i] == space.flops(archs[i]) and pa[i] == space.params(archs[i])


GOOD = "-".join(["k3_e1"] * 22)


@pytest.mark.parametrize("text, needles", [
    ("-".join(["k3_e1"] * 21), ["expected 22", "got 21"]),
    ("-".join(["k3_e1"] * 23), ["expected 22", "got 23"]),
    ("", ["expected 22", "got 1"]),
    (GOOD.replace("k3_e1", "k7_e6", 6).replace("k7_e6", "k3_e1", 5), ["layer 5", "'k7_e6'", "k3_e1_g2", "skip"]),
    ("K3_E1" + GOOD[5:], ["layer 0", "'K3_E1'"]),
    (GOOD[:-6] + "--k3_e1", ["expected 22", "got 23"]),
    (GOOD[:-5] + "k3 e1", ["layer 21", "'k3 e1'"]),
    (GOOD.replace("-", ",", 1), ["expected 22"]),
    (None, ["expected a string"]),
])
def test_bad_strings(space, text, needles):
    with pytest.raises(BadInputError) as ei:
        space.parse(text)
    for n in needles:
        assert n in str(ei.value)


def test_bad_genomes_and_options(space):
    with pytest.raises(BadInputError, match="0..8"):
        space.decode(np.full(22, 9))
    with pytest.raises(BadInputError, match="0..8"):
        space.slots(np.full((1, 22), 0.5))
    assert space.slots(np.ones((1, 22))).tolist() == space.slots(np.ones((1, 22), dtype=np.int64)).tolist()
    with pytest.raises(BadInputError, match=r"\(n, 22\)"):
        space.slots(np.zeros((3, 21), dtype=np.int64))
    with pytest.raises(BadInputError, match="resolution"):
        get_space("fbnet", resolution=8)
    with pytest.raises(BadInputError, match="layer 3"):
        fb.FBNetArch(("k3_e1",) * 3 + ("k9",) + ("k3_e1",) * 18)


# ---- slots and blocks ---------------------------------------------------------------------------

def test_blocks_equal_slot_derived_blocks(space):
    table = space.slot_blocks()
    assert len(table) == 201
    rng = np.random.default_rng(1)
    genomes = space.sample_genomes(rng, 64)
    ids = space.slots(genomes)
    assert ids.shape == (64, 25) and ids.dtype == np.int64
    assert (ids[:, 0] == fb.STEM_SLOT).all() and (ids[:, -1] == fb.CLASSIFIER_SLOT).all()
    assert (ids[:, 1:23] == np.arange(22) * 9 + genomes).all()
    for g, row in zip(genomes, ids, strict=True):
        arch = space.decode(g)
        blocks = space.blocks(arch)
        assert blocks == [table[i] for i in row if table[i] is not None]
        # shapes chain through the network (identity skips keep the shape)
        for a, b in zip(blocks, blocks[1:], strict=False):
            assert a.out_shape == b.in_shape
        n_identity = sum(o == "skip" and i not in (1, 5, 9, 13, 17, 21) for i, o in enumerate(arch.ops))
        assert len(blocks) == 25 - n_identity


def test_skip_blocks(space):
    table = space.slot_blocks()
    skip = fb.CHOICES.index("skip")
    projecting = [i for i in range(22) if table[i * 9 + skip] is not None]
    assert projecting == [1, 5, 9, 13, 17, 21]  # first layers of stages 24, 32, 64, 112, 184, 352
    spec = table[1 * 9 + skip]
    assert spec.key == "fbnet_skip-in:112x112x16-out:56x56x24-act:relu-k:1-s:2"
    mb = table[4 * 9 + fb.CHOICES.index("k5_e1_g2")]
    assert mb.key == "fbnet_mb-in:56x56x24-out:56x56x24-act:relu-g:2-k:5-mid:24-s:1-skip:1"
    # unique blocks: layers 2..4 of a stage share their specs; per stage 8 blocks + a projecting skip
    # on its first layer (none for stage 16), then stem, head conv, classifier
    assert len(space.all_blocks()) == 8 + 5 * (9 + 8) + 9 + 3


def test_every_block_builds_with_its_shape_and_flops():
    """Every unique block runs on (1, *in_shape), gives out_shape, and the analytic FLOPs/params match."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    space = get_space("fbnet", resolution=64)  # same structure, cheaper to run
    for spec in space.all_blocks():
        m = space.build_block(spec)
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            y = m(torch.randn(1, *spec.in_shape))
        if spec.op == "avgpool_linear":
            assert tuple(y.shape) == (1, spec.out_shape[0])
        else:
            assert tuple(y.shape) == (1, *spec.out_shape), spec.key
        assert fc.get_total_flops() == fb._spec_flops(spec), spec.key
        assert sum(p.numel() for p in m.parameters()) == fb._spec_params(spec), spec.key
    with pytest.raises(BadInputError, match="cannot build"):
        space.build_block(BlockSpec.make("mbconv", (16, 8, 8), (16, 8, 8)))


def test_block_semantics():
    import torch

    from hwnat.nn.fbnet import ChannelShuffle, FBNetBlock, FBNetSkip

    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    blk = FBNetBlock(16, 16, 16, k=3, s=1, g=2).eval()
    assert blk.residual and isinstance(blk.shuffle, ChannelShuffle)
    torch.nn.init.zeros_(blk.project[1].weight)  # the branch now outputs 0: the block is the identity
    x = torch.randn(1, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(blk(x), x)
    assert not FBNetBlock(16, 96, 24, k=5, s=2).residual
    assert FBNetSkip(16, 16, 1).proj is None and FBNetSkip(16, 24, 2).proj is not None


# ---- networks, FLOPs, params --------------------------------------------------------------------

def test_flops_params_match_counters(space):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    rng = np.random.default_rng(2)
    archs = space.sample(rng, 2) + [_arch(space, "skip"), _arch(space, "k5_e6"), _arch(space, "k3_e1_g2")]
    for a in archs:
        m = space.build(a)
        assert not m.training
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            y = m(torch.zeros(space.input_shape(a)))
        assert tuple(y.shape) == (1, 1000)
        assert space.flops(a) == pytest.approx(fc.get_total_flops(), rel=0.01)
        assert space.params(a) == pytest.approx(sum(p.numel() for p in m.parameters()), rel=0.01)
    assert space.flops(_arch(space, "k3_e6")) == pytest.approx(1.004e9, rel=1e-3)


def test_flops_many_vectorised(space):
    rng = np.random.default_rng(3)
    g = space.sample_genomes(rng, 300)
    fl, pa = space.flops_many(g), space.params_many(g)
    assert fl.shape == pa.shape == (300,)
    for i in range(0, 300, 37):
        a = space.decode(g[i])
        assert fl[i] == space.flops(a) == sum(fb._spec_flops(b) for b in space.blocks(a))
        assert pa[i] == space.params(a) == sum(fb._spec_params(b) for b in space.blocks(a))
    assert space.flops_many(np.zeros((0, 22), dtype=np.int64)).shape == (0,)


def test_other_resolution():
    import torch

    space = get_space("fbnet", resolution=160)
    a = _arch(space, "k3_e3", "skip", "k5_e1_g2")
    assert space.input_shape(a) == (1, 3, 160, 160)
    assert space.blocks(a)[0].out_shape == (16, 80, 80) and space.blocks(a)[-1].in_shape == (1984, 5, 5)
    with torch.no_grad():
        assert tuple(space.build(a)(torch.zeros(1, 3, 160, 160)).shape) == (1, 1000)
    assert space.flops(a) < get_space("fbnet").flops(a)


# ---- export -------------------------------------------------------------------------------------

@pytest.mark.parametrize("slot", [
    fb.STEM_SLOT,
    0 * 9 + fb.CHOICES.index("k3_e1"),  # residual, e=1
    2 * 9 + fb.CHOICES.index("k3_e1_g2"),  # grouped + shuffle, residual
    5 * 9 + fb.CHOICES.index("k5_e1_g2"),  # grouped, stride 2
    9 * 9 + fb.CHOICES.index("k5_e6"),  # stride 2, e=6
    14 * 9 + fb.CHOICES.index("k3_e3"),  # residual
    13 * 9 + fb.CHOICES.index("skip"),  # projecting skip, channel change
    17 * 9 + fb.CHOICES.index("skip"),  # projecting skip, stride 2
    fb.HEAD_SLOT,
    fb.CLASSIFIER_SLOT,
])
def test_blocks_export_to_onnx(space, slot, tmp_path):
    from hwnat.export import check_onnx, export_onnx

    spec = space.slot_blocks()[slot]
    m = space.build_block(spec)
    shape = (1, *spec.in_shape)
    path = export_onnx(m, shape, tmp_path / "block.onnx")
    check_onnx(m, path, shape)


def test_lazy_torch_import():
    """The space module imports torch only inside functions (``import hwnat.spaces`` stays fast)."""
    tree = ast.parse(Path(fb.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.split(".")[0] == "torch" or n.startswith("hwnat.nn")]
