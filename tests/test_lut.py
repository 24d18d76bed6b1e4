"""Latency tables: file format, validation of bad files, vectorised sums."""

from __future__ import annotations

import numpy as np
import pytest

from hwnat.errors import BadInputError
from hwnat.latency.table import LatencyTable
from hwnat.spaces import get_space

SP = get_space("nasbench201")


def _table():
    entries = {b.key: {"median_ms": 0.1 + i / 100, "p10_ms": 0.1, "p90_ms": 0.2, "n": 10, "cv": 0.01}
               for i, b in enumerate(SP.all_blocks())}
    return LatencyTable("nasbench201", "cpu", {"cpu_model": "x"}, {"rounds": 3}, entries)


def test_save_load_roundtrip(tmp_path):
    p = _table().save(tmp_path / "t.json")
    t = LatencyTable.load(p, space="nasbench201", device="cpu")
    assert t.entries == _table().entries and t.fingerprint == {"cpu_model": "x"}
    assert not list(tmp_path.glob(".*tmp*")), "no temp file left behind"


def test_vectorised_sum_equals_blocks_sum():
    t = _table()
    archs = SP.sample(np.random.default_rng(0), 200)
    fast = t.sum_many(SP, SP.encode_many(archs))
    slow = [sum(t.entries[b.key]["median_ms"] for b in SP.blocks(a)) for a in archs]
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
    assert t.sum(SP, archs[0]) == pytest.approx(slow[0])


def test_missing_block_is_named():
    t = _table()
    key = next(iter(t.entries))
    del t.entries[key]
    archs = SP.sample(np.random.default_rng(0), 50)
    with pytest.raises(BadInputError, match="lacks"):
        t.sum_many(SP, SP.encode_many(archs))


@pytest.mark.parametrize("content,msg", [
    ('{"schema_version": 1, "space": "nasbench201", "device": "cpu", "entr', "not valid JSON"),
    ("", "not valid JSON"),
    ('{"schema_version": 99, "space": "nasbench201", "device": "cpu", "entries": {}}', "schema_version = 99"),
    ('{"schema_version": 1, "space": "fbnet", "device": "cpu", "entries": {}}', "space 'fbnet'"),
    ('{"schema_version": 1, "space": "nasbench201", "device": "pixel", "entries": {}}', "device 'pixel'"),
    ('{"schema_version": 1, "space": "nasbench201", "device": "cpu"}', "'entries'"),
    ('{"schema_version": 1, "space": "nasbench201", "device": "cpu", "entries": {"a": {"median_ms": "x"}}}',
     "median_ms = 'x'"),
    ("[1]", "JSON object"),
])
def test_bad_table_files(tmp_path, content, msg):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(BadInputError, match=msg) as e:
        LatencyTable.load(p, space="nasbench201", device="cpu")
    assert str(p) in str(e.value)


def test_truncated_real_table(tmp_path):
    p = _table().save(tmp_path / "t.json")
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BadInputError, match="truncated or corrupt"):
        LatencyTable.load(p)


def test_large_batch_sum_across_chunks_equals_per_arch_sums():
    """The chunked fast path (4096 genomes per chunk) on 9,000 genomes gives each row its own sum, in
    order: the same as summing ``blocks(arch)`` by hand for every distinct genome."""
    t = _table()
    rng = np.random.default_rng(0)
    g = rng.permutation(np.repeat(SP.sample_genomes(rng, 300), 30, axis=0))  # 9,000 rows, <= 300 distinct
    out = t.sum_many(SP, g)
    by_genome = {}
    for row in np.unique(g, axis=0):
        by_genome[row.tobytes()] = sum(t.entries[b.key]["median_ms"] for b in SP.blocks(SP.decode(row)))
    np.testing.assert_allclose(out, [by_genome[row.tobytes()] for row in g], rtol=1e-12)
    np.testing.assert_allclose(t.sum_many(SP, g[::-1]), out[::-1], rtol=1e-12)


# ---- a table's sums follow its entries and the space it is asked about (issue 9, part 3) ----------------

def test_sum_sees_entries_edited_in_place():
    t = _table()
    g = SP.sample_genomes(np.random.default_rng(1), 50)
    before = t.sum_many(SP, g)
    for e in t.entries.values():
        e["median_ms"] *= 10
    np.testing.assert_allclose(t.sum_many(SP, g), 10 * before, rtol=1e-12)
    np.testing.assert_allclose(t.stage_sums(SP, g).sum(axis=1), 10 * before, rtol=1e-12)


def test_sum_sees_an_entry_replaced_at_the_same_table_size():
    t = _table()
    g = SP.sample_genomes(np.random.default_rng(2), 50)
    t.sum_many(SP, g)
    stem = next(k for k in t.entries if k.startswith("nb201_stem"))
    t.entries[stem] = dict(t.entries[stem], median_ms=t.entries[stem]["median_ms"] + 1.0)  # same length
    expect = [sum(t.entries[b.key]["median_ms"] for b in SP.blocks(SP.decode(row))) for row in g]
    np.testing.assert_allclose(t.sum_many(SP, g), expect, rtol=1e-12)


def test_sum_follows_the_space_object_asked_about():
    """Spaces made and dropped one after another (CPython reuses their ids) each get their own sums: a
    10-class head and a 100-class head are different blocks."""
    entries = _table().entries
    t = LatencyTable("nasbench201", "cpu", {}, {}, dict(entries))
    sp10 = get_space("nasbench201", num_classes=10)
    for b in sp10.all_blocks():
        t.entries.setdefault(b.key, {"median_ms": 5.0})
    del sp10
    g = SP.sample_genomes(np.random.default_rng(3), 20)
    sums = {}
    for classes in (100, 10, 100, 10):
        sp = get_space("nasbench201", num_classes=classes)
        sums.setdefault(classes, []).append(t.sum_many(sp, g))
        del sp
    head100 = next(k for k in entries if k.startswith("nb201_head"))
    np.testing.assert_allclose(sums[10][0] - sums[100][0], 5.0 - entries[head100]["median_ms"], rtol=1e-9)
    for v in sums.values():
        np.testing.assert_array_equal(v[0], v[1])
