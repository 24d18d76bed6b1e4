"""Smoke tests generated from the space registry: every space honours the same contract."""

from __future__ import annotations

import numpy as np
import pytest

from hwnat.errors import BadInputError
from hwnat.spaces import get_space, list_spaces

SPACES = list_spaces()


def test_registry_lists_the_three_families():
    assert {"ofa-mbv3", "nasbench201", "fbnet"} <= set(SPACES)


def test_unknown_space_lists_valid_names():
    with pytest.raises(BadInputError, match="expected one of: .*nasbench201"):
        get_space("resnet-zoo")


@pytest.mark.parametrize("name", SPACES)
def test_sample_format_parse_roundtrip(name):
    sp = get_space(name)
    rng = np.random.default_rng(1)
    for a in sp.sample(rng, 20):
        s = sp.format(a)
        assert sp.format(sp.parse(s)) == s
        assert sp.decode(sp.encode(a)) == a


@pytest.mark.parametrize("name", SPACES)
def test_genomes_within_bounds_and_operators_valid(name):
    sp = get_space(name)
    rng = np.random.default_rng(2)
    lo, hi = sp.genome_bounds()
    a, b = sp.sample(rng, 2)
    for g in (sp.encode(a), sp.encode(sp.mutate(a, rng)), sp.encode(sp.crossover(a, b, rng))):
        assert ((g >= lo) & (g <= hi)).all()
    for _ in range(20):
        assert sp.mutate(a, rng, prob=0.01) != a


@pytest.mark.parametrize("name", SPACES)
def test_blocks_are_the_slots(name):
    sp = get_space(name)
    rng = np.random.default_rng(3)
    archs = sp.sample(rng, 10)
    table = sp.slot_blocks()
    ids = sp.slots(sp.encode_many(archs))
    assert ids.shape[0] == 10 and ids.dtype == np.int64
    for a, row in zip(archs, ids, strict=True):
        want = [table[i].key for i in row if table[i] is not None]
        assert [b.key for b in sp.blocks(a)] == want
        assert want, "every architecture has at least one block"


@pytest.mark.parametrize("name", SPACES)
def test_vectorised_costs_match_scalar(name):
    sp = get_space(name)
    archs = sp.sample(np.random.default_rng(4), 8)
    g = sp.encode_many(archs)
    np.testing.assert_allclose(sp.flops_many(g), [sp.flops(a) for a in archs], rtol=1e-9)
    np.testing.assert_allclose(sp.params_many(g), [sp.params(a) for a in archs], rtol=1e-9)


@pytest.mark.parametrize("name", SPACES)
def test_block_keys_are_stable_text(name):
    sp = get_space(name)
    for b in sp.all_blocks()[:50]:
        assert b.key.startswith(b.op + "-in:")
        assert " " not in b.key
