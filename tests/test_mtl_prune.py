"""Latency-aware fusion pruning: the exact knapsack against brute force, the physical rebuild against the
masked network (same weights, fewer MACs in the exported graph), per-edge costs from a latency table."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hwnat.errors import BadInputError
from hwnat.mtl.prune import (
    edge_costs_ms,
    fusion_subset_costs_ms,
    group_knapsack,
    knapsack,
    rebuild,
    subset_table_ms,
)
from hwnat.spaces import get_space

TINY = {"widths": (4, 8, 8), "in_shape": (1, 12, 12)}


def _brute_force(v, c, budget):
    best = -1.0
    for bits in itertools.product([False, True], repeat=len(v)):
        b = np.array(bits, dtype=bool)
        if c[b].sum() <= budget + 1e-12:
            best = max(best, float(v[b].sum()))
    return best


@pytest.mark.parametrize("seed", range(8))
def test_knapsack_is_optimal_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(25):
        n = int(rng.integers(1, 11))
        v = rng.random(n) * (rng.random(n) < 0.85)  # some zero values
        c = rng.random(n) * 2.0 - (0.3 if seed % 2 else 0.0)  # odd seeds: some costs <= 0 (noisy marginals)
        budget = float(rng.random() * c.clip(0).sum()) + 0.05
        kept = knapsack(v, c, budget)
        assert kept.dtype == bool and kept.shape == (n,)
        assert c[kept].sum() <= budget + 1e-9
        assert v[kept].sum() == pytest.approx(_brute_force(v, c, budget), abs=1e-9)


def test_knapsack_beats_greedy_on_a_classic_case():
    # greedy by value/cost takes item 0 (ratio 1.09) and then nothing fits (value 6); optimum: items 1 + 2
    kept = knapsack([6.0, 5.0, 5.0], [5.5, 5.0, 5.0], 10.0)
    assert kept.tolist() == [False, True, True]


@pytest.mark.parametrize("args, match", [(([1.0], [1.0, 2.0], 1.0), "1 values but 2 costs"),
                                         (([-1.0], [1.0], 1.0), ">= 0"),
                                         (([1.0], [float("nan")], 1.0), "finite"),
                                         (([1.0], [1.0], -0.5), "no subset fits")])
def test_knapsack_bad_input(args, match):
    with pytest.raises(BadInputError, match=match):
        knapsack(*args)


def _trained_like(space, seed=0):
    """The all-edges network with every weight and BN statistic moved off its initialisation."""
    torch.manual_seed(seed)
    net = space.build(space.parse("all"))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def test_rebuild_equals_the_masked_network_and_exports_fewer_macs(tmp_path):
    from hwnat.export import check_onnx, export_onnx, onnx_macs

    sp = get_space("mtl-vgg", **TINY)
    full = _trained_like(sp)
    rng = np.random.default_rng(0)
    x = torch.randn(4, *sp.in_shape)
    cases = [np.zeros(len(sp.edges()), dtype=bool), rng.random(len(sp.edges())) < 0.5]
    cases[1][sp.candidates(0, 1)] = False  # a layer with every source dropped keeps only its own path
    for kept in cases:
        small = rebuild(full, sp, kept)
        assert len(small.edges) == int(kept.sum())
        assert sum(p.numel() for p in small.parameters()) == sp.params(sp.decode(kept.astype(np.int64)))
        assert small.fusions[0][1].conv.in_channels == sp.widths[1]
        with torch.no_grad():
            masked = full(x, gates=torch.from_numpy(kept.astype(np.float32)))
            got = small(x)
        for a, b in zip(got, masked, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        p_small = export_onnx(small, sp.input_shape(), tmp_path / "small.onnx")
        p_full = export_onnx(full, sp.input_shape(), tmp_path / "full.onnx")
        check_onnx(small, p_small, sp.input_shape())
        want_saved = float(sp.edge_flops()[~kept].sum()) / 2  # MACs of the dropped sources' conv channels
        assert onnx_macs(p_full) - onnx_macs(p_small) == want_saved > 0
        assert onnx_macs(p_small) == sp.flops(sp.decode(kept.astype(np.int64))) / 2


def test_rebuild_refuses_a_network_of_another_space():
    sp = get_space("mtl-vgg", **TINY)
    other = get_space("mtl-vgg", widths=(4, 8, 16), in_shape=(1, 12, 12))
    with pytest.raises(BadInputError, match="is not of this mtl-vgg space"):
        rebuild(other.build(other.parse("all")), sp, [True] * len(other.edges()))
    with pytest.raises(BadInputError, match="kept flags"):
        rebuild(sp.build(sp.parse("all")), sp, [True])
    with pytest.raises(BadInputError, match="fused MTLNet"):
        rebuild(sp.build_backbones(), sp, [])


def test_edge_costs_from_a_table_are_fusion_op_differences():
    sp = get_space("mtl-vgg", **TINY)
    # a synthetic table: each block costs its FLOPs-derived number, so the expected costs are computable
    table = {b.key: {"median_ms": 0.01 + 1e-6 * (len(b.in_shapes) * 7 + sum(int(np.prod(s)) for s in b.in_shapes))}
             for b in sp.all_blocks()}
    base, cost = edge_costs_ms(sp, table)
    none = sp.parse("none")
    assert base == pytest.approx(sum(table[b.key]["median_ms"] for b in sp.blocks(none)))
    for n, e in enumerate(sp.edges()):
        src = sp.shapes[e.src_layer]
        assert cost[n] == pytest.approx(1e-6 * (7 + int(np.prod(src))))
    # in this table costs add exactly, so base + sum(costs) is the table sum of any architecture
    for a in sp.sample(np.random.default_rng(0), 5):
        g = sp.encode(a).astype(bool)
        assert base + cost[g].sum() == pytest.approx(sum(table[b.key]["median_ms"] for b in sp.blocks(a)))
    with pytest.raises(BadInputError, match="hwnat profile --space mtl-vgg"):
        edge_costs_ms(sp, {})


def test_latency_fit_is_the_two_point_anchor_and_a_least_squares_line():
    from hwnat.mtl.pipeline import calibration_sets, choose_edges, fit_costs, local_sets

    table_cost = np.array([1.0, 2.0, 3.0, 4.0])
    two = fit_costs(9.0, table_cost, [np.zeros(4, bool), np.ones(4, bool)], [0.5, 1.5])
    assert two.base_ms == pytest.approx(0.5) and two.cost_ms == pytest.approx(table_cost / 10)
    assert two.margin_ms == 0.0 and two.table_ms(np.ones(4, bool)) == pytest.approx(19.0)
    searched = np.array([True, False, True, True])
    local = local_sets(searched, extra=3)
    assert local["searched_set"].tolist() == searched.tolist() and not local["none"].any()
    assert all(not (k & ~searched).any() for k in local.values()) and len(local) == 5
    assert len({k.tobytes() for k in local.values()}) == 5  # no network measured twice (an empty subset = none)
    assert len(local_sets(np.array([True, False]), extra=3)) == 2  # one searched edge: no proper subset left
    sets = list(calibration_sets(4, extra=4).values())
    assert not sets[0].any() and sets[1].all() and len(sets) == 6
    true = [0.5 + 0.1 * table_cost[k].sum() for k in sets]
    noisy = [t + e for t, e in zip(true, [0.02, -0.01, 0.01, -0.02, 0.0, 0.01], strict=True)]
    fit = fit_costs(9.0, table_cost, sets, noisy)
    assert fit.base_ms == pytest.approx(0.5, abs=0.03) and fit.cost_ms == pytest.approx(table_cost / 10, rel=0.1)
    assert 0.005 < fit.margin_ms < 0.03
    assert [c["measured_ms"] for c in fit.calibration] == noisy
    assert fit.predict_ms(np.zeros(4, bool)) == noisy[0]  # the no-edge network: its own measurement
    # the knapsack keeps the margin in reserve: a budget exactly at the all-edge prediction loses an edge
    gates = np.full(4, 0.9)
    assert choose_edges(gates, two, two.predict_ms(np.ones(4, bool))).all()
    assert not choose_edges(gates, fit, fit.predict_ms(np.ones(4, bool))).all()
    flat = fit_costs(9.0, table_cost, sets[:2], [1.0, 0.9])  # slower with fewer edges: no negative cost
    assert (flat.cost_ms == 0).all()


def test_choose_edges_prices_each_fusion_op_by_its_own_subset_cost():
    """Two edges into one op cost more together (3 ms) than apart (1 ms each): the additive model would
    keep both at a budget of 2 ms, the per-op model keeps one (the higher gate) and predicts it right."""
    from hwnat.mtl.pipeline import choose_edges, fit_costs

    layers = [([0, 1], np.array([0.0, 1.0, 1.0, 3.0])), ([2], np.array([0.0, 0.5]))]
    sets = [np.zeros(3, bool), np.ones(3, bool)]
    costs = fit_costs(10.0, [1.0, 1.0, 0.5], sets, [1.0, 4.5], layers)
    assert costs.scale == pytest.approx(1.0) and costs.predict_ms(np.ones(3, bool)) == pytest.approx(4.5)
    gates = np.array([0.9, 0.8, 0.7])
    kept = choose_edges(gates, costs, 3.0)
    assert kept.tolist() == [True, False, True] and costs.predict_ms(kept) == pytest.approx(2.5)
    additive = fit_costs(10.0, [1.0, 1.0, 0.5], sets, [1.0, 3.5])
    assert choose_edges(gates, additive, 3.0).tolist() == [True, True, False]
    assert not choose_edges(np.array([0.9, 0.8, 0.2]), costs, 1.9)[2]  # a gate < 0.5 never comes back


@pytest.mark.parametrize("seed", range(6))
def test_group_knapsack_is_optimal_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    groups = [[(0.0, 0.0)] + [(float(rng.random() * 3), float(rng.random())) for _ in range(rng.integers(0, 4))]
              for _ in range(rng.integers(1, 6))]
    budget = float(rng.random() * 2)
    choice = group_knapsack(groups, budget)
    value = sum(groups[g][j][0] for g, j in enumerate(choice))
    assert sum(groups[g][j][1] for g, j in enumerate(choice)) <= budget + 1e-12
    best = max(sum(g[j][0] for g, j in zip(groups, pick, strict=True))
               for pick in itertools.product(*(range(len(g)) for g in groups))
               if sum(g[j][1] for g, j in zip(groups, pick, strict=True)) <= budget)
    assert value == pytest.approx(best)
    with pytest.raises(BadInputError, match="no selection fits"):
        group_knapsack([[(1.0, 2.0)]], 1.0)


def test_subset_costs_are_each_fusion_op_with_its_kept_sources():
    sp = get_space("mtl-vgg", **TINY)
    # non-additive synthetic table: a fusion op costs the square of its number of inputs
    table = {b.key: float(len(b.in_shapes)) ** 2 for b in sp.all_blocks()}
    layers = fusion_subset_costs_ms(sp, table)
    assert len(layers) == sp.tasks * sp.layers
    base, _ = edge_costs_ms(sp, table)
    for a in sp.sample(np.random.default_rng(1), 8):  # the exact table sum of any architecture
        g = sp.encode(a).astype(bool)
        assert base + subset_table_ms(layers, g) == pytest.approx(sum(table[b.key] for b in sp.blocks(a)))
