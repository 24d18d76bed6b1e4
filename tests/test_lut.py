"""Latency tables: file format, validation of bad files, vectorised sums."""

from __future__ import annotations

import json

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


def test_table_sum_speed_is_vectorised():
    # correctness of the fast path on a large batch (speed itself is measured in benchmarks/)
    t = _table()
    g = SP.sample_genomes(np.random.default_rng(0), 100_000)
    out = t.sum_many(SP, g)
    assert out.shape == (100_000,) and np.isfinite(out).all()
    json.dumps(float(out[0]))
