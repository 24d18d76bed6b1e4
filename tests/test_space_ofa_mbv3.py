"""OFA MobileNetV3 space: canonical strings, analytic costs vs real counters, blocks, export."""

from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest
import torch
from _hw import published
from torch.utils.flop_counter import FlopCounterMode

from hwnat.errors import BadInputError
from hwnat.export import check_onnx, export_onnx
from hwnat.spaces import get_space

SP = get_space("ofa-mbv3")


def test_every_published_arch_parses_and_roundtrips():
    with gzip.open(published("ofa-mbv3"), "rt", newline="") as f:
        rows = [r["arch"] for r in csv.DictReader(f)]
    assert len(rows) == 5000
    for s in rows:
        assert SP.format(SP.parse(s)) == s


def _arch(**over):
    d = {"ks": [3, 5, 7, 3] * 5, "e": [3, 4, 6, 6] * 5, "d": [2, 3, 4, 2, 3], "r": 224}
    d.update(over)
    return json.dumps(d, separators=(",", ":"))


@pytest.mark.parametrize("text,field", [
    ("not json", "not JSON"),
    (_arch(ks=[3] * 19), "'ks'"),
    (_arch(e=[3] * 19 + [5]), r"'e'\[19\] = 5"),
    (_arch(d=[1, 2, 3, 4, 4]), r"'d'\[0\] = 1"),
    (_arch(r=225), "'r' = 225"),
    (_arch(r=300), "'r' = 300"),
    (_arch(w=1.5), "'w' = 1.5"),
    ('{"ks":[]}', "'ks'"),
    ("[1,2]", "JSON object"),
])
def test_malformed_arch_names_the_field(text, field):
    with pytest.raises(BadInputError, match=field):
        SP.parse(text)


def test_width_roundtrip_and_default_omitted():
    a = SP.parse(_arch(w=1.2))
    assert a.w == 1.2 and '"w":1.2' in SP.format(a)
    assert '"w"' not in SP.format(SP.parse(_arch()))


@pytest.mark.parametrize("over", [{}, {"r": 128}, {"r": 256, "w": 1.2}, {"d": [4, 4, 4, 4, 4], "r": 160}])
def test_analytic_costs_match_counters(over):
    a = SP.parse(_arch(**over))
    m = SP.build(a)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        y = m(torch.zeros(SP.input_shape(a)))
    assert y.shape == (1, 1000)
    assert abs(fc.get_total_flops() / SP.flops(a) - 1) < 0.01
    assert abs(sum(p.numel() for p in m.parameters()) / SP.params(a) - 1) < 0.01


def test_mobilenetv3_large_like_size():
    # all kernel 3.. (not MBv3-Large exactly) but the head and stem fix the scale: 2..8 M params
    a = SP.parse(_arch())
    assert 2e6 < SP.params(a) < 8e6
    assert 100e6 < SP.flops(a) / 2 < 600e6


def test_unique_blocks_per_resolution_and_range():
    assert len(SP.all_blocks(resolutions=[224])) == 94
    assert len(SP.all_blocks()) > 94
    with pytest.raises(BadInputError, match="resolution 230"):
        SP.all_blocks(resolutions=[230])
    with pytest.raises(BadInputError, match="resolution 100"):
        get_space("ofa-mbv3", resolutions=[100])


def test_sample_respects_search_resolutions():
    sp = get_space("ofa-mbv3", resolutions=(160, 224))
    archs = sp.sample(np.random.default_rng(0), 50)
    assert {a.r for a in archs} <= {160, 224}
    rng = np.random.default_rng(1)
    assert all(sp.mutate(a, rng, prob=0.5).r in (160, 224) for a in archs)


def test_inactive_layers_cost_nothing():
    a = SP.parse(_arch(d=[2, 2, 2, 2, 2]))
    b = SP.parse(_arch(d=[2, 2, 2, 2, 2], ks=[7] * 20))
    # layers 2,3 of each stage are inactive: changing only them leaves blocks unchanged
    ks = [3, 5, 7, 7] * 5
    c = SP.parse(_arch(d=[2, 2, 2, 2, 2], ks=ks))
    assert [x.key for x in SP.blocks(a)] == [x.key for x in SP.blocks(c)]
    assert [x.key for x in SP.blocks(a)] != [x.key for x in SP.blocks(b)]
    assert len(SP.blocks(a)) == 2 + 10 + 2


def test_subnet_and_blocks_export_to_onnx(tmp_path):
    a = SP.parse(_arch(r=128))
    net = SP.build(a)
    export_onnx(net, SP.input_shape(a), tmp_path / "net.onnx")
    check_onnx(net, tmp_path / "net.onnx", SP.input_shape(a))
    blocks = SP.blocks(a)
    for b in (blocks[0], blocks[1], blocks[2], blocks[7], blocks[-1]):
        m = SP.build_block(b)
        export_onnx(m, (1, *b.in_shape), tmp_path / "b.onnx")
        check_onnx(m, tmp_path / "b.onnx", (1, *b.in_shape))
