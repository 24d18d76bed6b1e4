"""Latency-aware fusion pruning for MTL-NAS (Gao et al., "MTL-NAS: Task-Agnostic Neural Architecture
Search towards General-Purpose Multi-Task Learning", CVPR 2020): per-edge latency costs from a device's
table, the exact 0/1 knapsack that picks the kept edges under a budget, and the physical rebuild of the
network without the dropped edges (MTL-NAS's released code only multiplies a pruned edge by zero, so its
pruned network costs as much as the full one).

Cost model (``edge_costs_ms``, additive; ``fusion_subset_costs_ms``, exact per fusion op): ``latency(kept) ~= base_ms + sum(cost_ms[kept])`` where ``base_ms`` is the
table sum of the network with no edge (K backbones, every fusion op on its own channels only, K heads)
and an edge's marginal cost is the fusion op of its target with that source alone minus the op with no
source: the extra pooling, concatenation and 1x1-conv input channels the edge brings. The exact table
sum (``LatencyTable.sum``) holds each layer's fusion op with exactly its kept sources; the linear model
drops the interaction of several sources at one layer, which ``fusion_subset_costs_ms`` keeps (one entry
per subset of each op's sources) and ``group_knapsack`` optimises over exactly (one subset per op).

Checked against end-to-end measurements of pruned networks on ``cpu`` (``benchmarks/fusion_cost_model.py``,
default space): the table *base* overstates the measured no-edge network about 2x (its 18 blocks are
timed separately and each pays ONNX Runtime's per-call overhead), while the per-edge costs have about the
right size. So consumers fit the base and the scale of the costs to measured networks
(``hwnat.mtl.pipeline.fit_costs``). On a run at load ~5 on 2 cores, the per-op (subset) costs predicted
the searched network within 5-8% where the additive ones were 13-16% low (two sources at one op cost
more than the sum of each alone).

Example:
    >>> knapsack([3.0, 2.0, 2.0], [2.0, 1.0, 1.0], 2.0).tolist()
    [False, True, True]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hwnat.errors import BadInputError

#: branch-and-bound node limit of ``knapsack`` (far above what 100 edges with real gate values need)
MAX_NODES = 5_000_000
#: most items ``knapsack`` takes (the search recurses once per item)
MAX_ITEMS = 500


# ---- the exact 0/1 knapsack ----------------------------------------------------------------------

def knapsack(values: Sequence[float], costs_ms: Sequence[float], budget_ms: float) -> np.ndarray:
    """The subset of items with the largest total value whose total cost is at most ``budget_ms``.

    Exact for real-valued costs (no discretisation): depth-first branch and bound over items in
    decreasing value/cost order, bounded by the fractional (LP) relaxation. Items with a cost <= 0 (a
    marginal latency measured as no slower) are always taken: with values >= 0 they never hurt.

    Args:
        values: value of each item (>= 0), e.g. the final gate values of the edges.
        costs_ms: cost of each item, e.g. the edges' marginal latencies.
        budget_ms: the most the kept items may cost in total.

    Returns:
        bool array, True for the kept items.

    Raises:
        BadInputError: mismatched lengths, a negative or non-finite value, or a budget that even the
            cheapest subset exceeds.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    c = np.asarray(costs_ms, dtype=np.float64).ravel()
    if v.shape != c.shape:
        raise BadInputError(f"knapsack: {len(v)} values but {len(c)} costs")
    if not (np.isfinite(v).all() and np.isfinite(c).all() and np.isfinite(budget_ms)):
        raise BadInputError("knapsack: values, costs and the budget must be finite numbers")
    if (v < 0).any():
        raise BadInputError(f"knapsack: values must be >= 0, got {v.min():g}")
    take = c <= 0
    room = float(budget_ms) - float(c[take].sum())
    if room < 0:
        raise BadInputError(f"knapsack: no subset fits the budget {budget_ms:g} ms (the cheapest costs "
                            f"{float(c[take].sum()):g} ms)")
    idx = np.flatnonzero(~take & (v > 0) & (c <= room))
    if len(idx):
        chosen = _branch_and_bound(v[idx], c[idx], room)
        take[idx[chosen]] = True
    return take


def _branch_and_bound(v: np.ndarray, c: np.ndarray, cap: float) -> np.ndarray:
    """Exact 0/1 knapsack for values > 0 and 0 < costs <= cap; returns the chosen mask."""
    order = np.argsort(-v / c, kind="stable")
    vs, cs = v[order].tolist(), c[order].tolist()
    n = len(vs)
    if n > MAX_ITEMS:
        raise BadInputError(f"knapsack: {n} items; at most {MAX_ITEMS} are supported")
    eps = 1e-12 * max(1.0, sum(vs))
    best_value, best, cur, nodes = -1.0, [False] * n, [False] * n, 0

    def bound(i: int, value: float, room: float) -> float:
        """Value of the fractional relaxation over items i.. (an upper bound of any completion)."""
        while i < n and cs[i] <= room:
            room -= cs[i]
            value += vs[i]
            i += 1
        return value + (vs[i] * room / cs[i] if i < n else 0.0)

    def visit(i: int, value: float, room: float) -> None:
        nonlocal best_value, best, nodes
        nodes += 1
        if nodes > MAX_NODES:
            raise BadInputError(f"knapsack: more than {MAX_NODES} branch-and-bound nodes for {n} items")
        if value > best_value + eps:  # every node is a feasible selection
            best_value, best = value, cur.copy()
        if i == n or bound(i, value, room) <= best_value + eps:
            return
        if cs[i] <= room:
            cur[i] = True
            visit(i + 1, value + vs[i], room - cs[i])
            cur[i] = False
        visit(i + 1, value, room)

    visit(0, 0.0, cap)
    out = np.zeros(n, dtype=bool)
    out[order[np.array(best, dtype=bool)]] = True
    return out


# ---- per-edge latency costs -------------------------------------------------------------------------

def edge_costs_ms(space, latencies: Any, field_name: str = "median_ms") -> tuple[float, np.ndarray]:
    """Base latency and each candidate edge's marginal latency, from a device's table of the space.

    Args:
        space: an ``mtl-vgg`` space (``hwnat.spaces.mtl.MTLVGGSpace``).
        latencies: a ``LatencyTable`` of the space, or a mapping block key -> milliseconds (or -> an entry
            dict holding ``field_name``).

    Returns:
        ``(base_ms, cost_ms)``: the table latency of the network with no edge, and ``(E,)`` marginal costs
        in ``space.edges()`` order (fusion op with that source alone minus the op with no source).

    Raises:
        BadInputError: a block the costs need is not in the table (the message says how to profile it).
    """
    ms = _table_lookup(space, latencies, field_name)
    base = float(sum(ms(b) for b in space.blocks(space.parse("none"))))
    cost = np.zeros(len(space.edges()))
    for n, e in enumerate(space.edges()):
        t, i = e.dst_task, e.dst_layer
        cost[n] = ms(space.fusion_block(t, i, (n,))) - ms(space.fusion_block(t, i, ()))
    return base, cost


def fusion_subset_costs_ms(space, latencies: Any, field_name: str = "median_ms") -> list[tuple[list[int], np.ndarray]]:
    """Every fusion op's table latency for every subset of its sources, relative to the op with none.

    Several sources at one layer do not cost the sum of their single-source costs (one concatenation,
    one wider 1x1 conv): this is the exact per-layer form of the table sum that ``edge_costs_ms``
    linearises.

    Returns:
        One ``(candidates, extra_ms)`` per (task, layer), in task-major order: the genome positions of its
        candidate edges, and ``extra_ms[mask]`` for every subset (bit ``k`` = ``candidates[k]`` kept).

    Raises:
        BadInputError: a block the costs need is not in the table.
    """
    ms = _table_lookup(space, latencies, field_name)
    out = []
    for t in range(space.tasks):
        for i in range(space.layers):
            cand = space.candidates(t, i)
            none = ms(space.fusion_block(t, i, ()))
            extra = np.array([ms(space.fusion_block(t, i, tuple(n for k, n in enumerate(cand) if mask >> k & 1)))
                              - none for mask in range(2 ** len(cand))])
            out.append((cand, extra))
    return out


def subset_table_ms(layers: Sequence[tuple[Sequence[int], np.ndarray]], kept: Sequence[bool]) -> float:
    """Sum over the fusion ops of ``extra_ms`` of their kept sources (``fusion_subset_costs_ms``' layout)."""
    kept = np.asarray(kept, dtype=bool)
    return float(sum(extra[sum(2 ** k for k, n in enumerate(cand) if kept[n])] for cand, extra in layers))


def _table_lookup(space, latencies: Any, field_name: str):
    """``block -> ms`` from a ``LatencyTable`` or a mapping (``BadInputError`` naming a missing block)."""
    entries = getattr(latencies, "entries", latencies)
    if not isinstance(entries, Mapping):
        raise BadInputError(f"edge costs need a latency table or a mapping of block keys to ms, got "
                            f"{type(latencies).__name__}")

    def ms(block) -> float:
        if block.key not in entries:
            raise BadInputError(f"latency table has no entry for block {block.key}; profile the space first "
                                f"(hwnat profile --space {space.name} --device DEVICE)")
        e = entries[block.key]
        return float(e[field_name] if isinstance(e, Mapping) else e)

    return ms


# ---- the exact multiple-choice knapsack over the fusion ops ---------------------------------------

def group_knapsack(groups: Sequence[Sequence[tuple[float, float]]], budget_ms: float) -> list[int]:
    """One option per group, the largest total value with total cost at most ``budget_ms``.

    The multiple-choice knapsack (Sinha & Zoltners, "The Multiple-Choice Knapsack Problem", Operations
    Research 1979) with each fusion op as a group and each subset of its sources as an option, so a
    layer's cost is its own (non-additive) table cost. Exact: dynamic programming over the groups that
    keeps the Pareto front of partial selections (no partial selection is dropped unless another one
    costs no more and is worth at least as much), pruned by the least cost the remaining groups must add.

    Args:
        groups: per group, its options as ``(value, cost_ms)``; values >= 0.
        budget_ms: the most the chosen options may cost in total.

    Returns:
        The chosen option index of each group.

    Raises:
        BadInputError: an empty group, a negative or non-finite value or cost, or no selection fits.
    """
    groups = [[(float(v), float(c)) for v, c in g] for g in groups]
    if any(not g for g in groups):
        raise BadInputError("group_knapsack: every group needs at least one option")
    if any(not (np.isfinite(v) and np.isfinite(c)) or v < 0 for g in groups for v, c in g):
        raise BadInputError("group_knapsack: values must be finite and >= 0, costs finite")
    least = [min(c for _, c in g) for g in groups]
    rest = np.concatenate([np.cumsum(least[::-1])[::-1], [0.0]])  # least cost of groups g.. to the end
    eps = 1e-12 * max(1.0, abs(float(budget_ms)))
    states: list[tuple[float, float, tuple[int, ...]]] = [(0.0, 0.0, ())]
    for g, opts in enumerate(groups):
        grown = [(c + oc, v + ov, ch + (j,)) for c, v, ch in states for j, (ov, oc) in enumerate(opts)
                 if c + oc + rest[g + 1] <= budget_ms + eps]
        grown.sort(key=lambda s: (s[0], -s[1]))
        states, best = [], -1.0
        for st in grown:
            if st[1] > best:
                states.append(st)
                best = st[1]
    if not states:
        raise BadInputError(f"group_knapsack: no selection fits the budget {budget_ms:g} ms (the cheapest "
                            f"costs {float(rest[0]):g} ms)")
    return list(max(states, key=lambda st: st[1])[2])


# ---- physical rebuild ---------------------------------------------------------------------------------

def rebuild(full, space, kept: Sequence[bool]):
    """A physically smaller copy of ``full`` holding only the kept edges, with the same weights.

    Each fusion op's 1x1 conv keeps the input channels of its own features and of its kept sources
    (in order) and drops those of the dropped sources; a layer with no source left keeps the op on its
    own channels (a 1x1 conv, BN, ReLU: a learned transform the outputs depend on). In eval mode the
    result computes exactly ``full(x, gates=kept)``, and in train mode too (BN sees the same features).

    Args:
        full: an ``hwnat.nn.fusion.MTLNet`` of ``space`` (usually with every candidate edge).
        space: its ``mtl-vgg`` space.
        kept: one flag per edge of ``full`` (``full.edges`` order).

    Raises:
        BadInputError: ``full`` is not a network of ``space``, or ``kept`` has the wrong length.
    """
    import torch

    from hwnat.nn.fusion import MTLNet

    _check_network(full, space)
    kept = [bool(k) for k in kept]
    if len(kept) != len(full.edges):
        raise BadInputError(f"rebuild: {len(kept)} kept flags for a network with {len(full.edges)} edges")
    edges = [e for e, k in zip(full.edges, kept, strict=True) if k]
    net = MTLNet(space.in_shape, space.widths, space.strides, space.classes, edges)
    state = {k: v for k, v in full.state_dict().items() if not k.startswith("fusions.")}
    for t in range(full.tasks):
        for i in range(len(full.widths)):
            src_old = full.fusions[t][i]
            own = src_old.own_channels
            cols = list(range(own))
            start = own
            for (e, _, _), c in zip(full.sources(t, i), src_old.src_channels, strict=True):
                if kept[e]:
                    cols += range(start, start + c)
                start += c
            prefix = f"fusions.{t}.{i}."
            for k, v in src_old.state_dict().items():
                state[prefix + k] = v[:, cols] if k == "conv.weight" else v
    with torch.no_grad():
        net.load_state_dict(state, strict=True)
    return net.train(full.training)


def _check_network(net, space) -> None:
    from hwnat.nn.fusion import MTLNet

    if not isinstance(net, MTLNet) or not net.has_fusion:
        raise BadInputError(f"expected a fused MTLNet of space {space.name}, got {type(net).__name__}")
    got = (net.in_shape, tuple(net.widths), tuple(net.strides), tuple(net.classes))
    want = (tuple(space.in_shape), tuple(space.widths), tuple(space.strides), tuple(space.classes))
    if got != want:
        raise BadInputError(f"the network (input, widths, strides, classes) {got} is not of this {space.name} "
                            f"space {want}")
    cand = {(e.src_task, e.src_layer, e.dst_task, e.dst_layer) for e in space.edges()}
    bad = [e for e in net.edges if e not in cand]
    if bad:
        raise BadInputError(f"the network has edge {bad[0]}, not a candidate of this {space.name} space")
