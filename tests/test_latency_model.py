"""LatencyModel: table (really profiled on this CPU with ONNX Runtime, resumed), measure (really timed,
cached), predictor (a real XGBoost-era predictor file with its interval), csv (exact lookup) and the
factory's errors. Tiny settings: NAS-Bench-201's 16 blocks, a short measurement protocol."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from hwnat.errors import BadInputError
from hwnat.latency.model import (
    CsvLatency,
    MeasuredLatency,
    PredictorLatency,
    TableLatency,
    open_latency_model,
    search_bounds,
)
from hwnat.spaces import get_space


def tiny_device(path, name="tinycpu"):
    """A cpu device file with a short protocol (real ORT timing, fewer and shorter rounds)."""
    data = {"name": name, "description": "test cpu, short protocol", "transport": {"kind": "local"},
            "runtime": {"kind": "onnxruntime", "threads": 1, "precision": "fp32",
                        "provider": "CPUExecutionProvider"},
            "measure": {"warmup_s": 0.01, "warmup_runs": 2, "rounds": 2, "min_round_s": 0.01,
                        "unstable_tolerance": 0.5, "max_remeasure": 0}}
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.fixture(scope="module")
def nb201():
    return get_space("nasbench201")


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lut")


def test_table_model_profiles_missing_table_then_resumes(nb201, table_dir, monkeypatch):
    monkeypatch.chdir(table_dir)
    dev = tiny_device(table_dir / "tinycpu.yaml")
    seen = []
    m = open_latency_model("table", nb201, dev, progress=lambda d, t, label: seen.append((d, t)))
    assert isinstance(m, TableLatency) and m.device == "tinycpu"
    path = table_dir / "latency_tables" / "tinycpu" / "nasbench201.json"
    assert m.path.resolve() == path.resolve() and seen and seen[-1][0] == seen[-1][1] == len(nb201.all_blocks())
    g = nb201.sample_genomes(np.random.default_rng(0), 50)
    ms = m.ms(g)
    # the model's sum equals summing the table file's entries over each architecture's blocks
    entries = json.loads(path.read_text())["entries"]
    for row, v in zip(g[:5], ms[:5], strict=True):
        blocks = nb201.blocks(nb201.decode(row))
        assert v == pytest.approx(sum(entries[b.key]["median_ms"] for b in blocks))
    # drop two entries: reopening measures only those two, the others are kept as they were
    d = json.loads(path.read_text())
    dropped = list(d["entries"])[:2]
    kept = {k: v["median_ms"] for k, v in d["entries"].items() if k not in dropped}
    for k in dropped:
        del d["entries"][k]
    path.write_text(json.dumps(d))
    seen.clear()
    m2 = open_latency_model("table", nb201, dev, progress=lambda d, t, label: seen.append((d, t, label)))
    assert set(dropped) <= set(m2.table.entries)
    assert {k: m2.table.entries[k]["median_ms"] for k in kept} == kept
    n = len(d["entries"]) + 2  # every block of the space
    assert [s for s in seen if s[2] != "done"] == [(n - 2, n, dropped[0]), (n - 1, n, dropped[1])]


def test_table_extremes_match_brute_force(nb201, table_dir, monkeypatch):
    monkeypatch.chdir(table_dir)
    m = open_latency_model("table", nb201, tiny_device(table_dir / "tinycpu.yaml"))
    lo, hi = nb201.genome_bounds()
    grid = np.stack(np.meshgrid(*[np.arange(a, b + 1) for a, b in zip(lo, hi, strict=True)],
                                indexing="ij"), -1).reshape(-1, len(lo))
    all_ms = m.ms(grid)
    e = m.extremes()
    assert e["fastest_ms"] == pytest.approx(all_ms.min())
    assert e["slowest_ms"] == pytest.approx(all_ms.max())
    assert m.ms(nb201.encode(nb201.parse(e["fastest_arch"]))[None])[0] == pytest.approx(all_ms.min())


def test_measure_model_caches_by_arch(nb201, tmp_path):
    dev = tiny_device(tmp_path / "tinycpu.yaml")
    m = open_latency_model("measure", nb201, dev, cache_dir=tmp_path)
    assert isinstance(m, MeasuredLatency) and m.expensive
    g = nb201.sample_genomes(np.random.default_rng(1), 2)
    g = np.vstack([g, g[:1]])  # a repeat is measured once
    ms = m.ms(g)
    assert ms.shape == (3,) and np.all(ms > 0) and ms[0] == ms[2]
    cache = tmp_path / "measured-tinycpu-nasbench201.csv"
    rows = pd.read_csv(cache)
    assert len(rows) == 2
    # a new model over the same cache measures nothing again (the file is unchanged) and agrees
    before = cache.read_bytes()
    m2 = open_latency_model("measure", nb201, dev, cache_dir=tmp_path)
    assert np.array_equal(m2.ms(g), ms)
    assert cache.read_bytes() == before


def test_csv_model_exact_lookup_and_missing_arch(nb201, tmp_path):
    from hwnat.data import latency_dataset

    df = pd.read_csv(latency_dataset("nasbench201"))
    m = open_latency_model("csv::pixel3", nb201, "pixel3")
    assert isinstance(m, CsvLatency) and m.column == "pixel3"
    rows = df.sample(20, random_state=0)
    g = nb201.encode_many(nb201.parse_many(rows["arch"].tolist()))
    assert np.array_equal(m.ms(g), rows["pixel3"].to_numpy())
    e = m.extremes()
    assert e["fastest_ms"] == df["pixel3"].min() and e["slowest_ms"] == df["pixel3"].max()
    small = tmp_path / "small.csv"
    rows.head(3)[["arch", "pixel3"]].rename(columns={"pixel3": "lat"}).to_csv(small, index=False)
    m3 = open_latency_model(f"csv:{small}:lat", nb201, "whatever")
    assert np.array_equal(m3.ms(g[:3]), rows["pixel3"].to_numpy()[:3])
    with pytest.raises(BadInputError, match="has no latency for"):
        m3.ms(g[3:4])
    with pytest.raises(BadInputError, match="no column 'nope'"):
        open_latency_model(f"csv:{small}:nope", nb201, "x")
    with pytest.raises(BadInputError, match="not found"):
        open_latency_model(f"csv:{tmp_path / 'none.csv'}:lat", nb201, "x")


def test_predictor_model_interval(nb201, tmp_path):
    from hwnat.data import latency_dataset
    from hwnat.latency.predictor import LatencyPredictor

    df = pd.read_csv(latency_dataset("nasbench201")).sample(40, random_state=1)
    p = LatencyPredictor.fit("nasbench201", df["arch"].tolist(), df["pixel3"].to_numpy(), target="pixel3")
    path = p.save(tmp_path / "p.json")
    m = open_latency_model("predictor", nb201, "cpu", predictor=path)
    assert isinstance(m, PredictorLatency) and m.has_interval
    g = nb201.encode_many(nb201.parse_many(df["arch"].tolist()[:10]))
    ms = m.ms(g)
    ref, lo_ref, hi_ref = p.predict_genomes(g)
    assert np.allclose(ms, ref)
    lo, hi = m.interval(g, p.interval["coverage"])
    assert np.allclose(lo, lo_ref) and np.allclose(hi, hi_ref)
    lo2, hi2 = m.interval(g, 0.98)  # a wider coverage gives a wider interval around the same estimate
    assert np.all(hi2 >= hi) and np.all(lo2 <= lo) and np.all((lo2 <= ms) & (ms <= hi2))
    assert np.all(hi2 - lo2 > hi - lo)
    # --confidence c is a one-sided bound: the upper end of the central interval at 2c - 1
    assert np.allclose(m.upper_ms(g, 0.9), m.interval(g, 0.8)[1])
    assert np.all(m.upper_ms(g, 0.9) <= hi_ref + 1e-12) and np.allclose(m.upper_ms(g, 0.5), ms)
    # every confidence the CLI accepts (0.5..1) works, and a higher one never gives a lower bound; below
    # 0.75 the bound is the upper end of a central interval under 50% (was refused: coverage must be >= 0.5)
    bounds = [m.upper_ms(g, c) for c in (0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95)]
    assert all(np.all(b2 >= b1 - 1e-12) for b1, b2 in zip(bounds[:-1], bounds[1:], strict=True))
    assert np.all(bounds[2] >= ms - 1e-12) and np.any(bounds[-1] > bounds[2])
    with pytest.raises(BadInputError, match="coverage must be in"):
        p.predict_genomes(g, coverage=1.0)


def test_factory_errors(nb201, tmp_path):
    with pytest.raises(BadInputError, match="unknown latency model 'lut'"):
        open_latency_model("lut", nb201, "cpu")
    with pytest.raises(BadInputError, match="unknown device"):
        open_latency_model("measure", nb201, "no-such-device")
    with pytest.raises(BadInputError, match="no latency predictor"):
        open_latency_model("predictor", nb201, "cpu")
    with pytest.raises(BadInputError, match="gives no interval"):
        open_latency_model("csv::pixel3", nb201, "pixel3").interval(np.zeros((1, 6), dtype=int), 0.9)


def test_search_bounds_narrow_to_sampled_values():
    sp = get_space("ofa-mbv3", resolutions=(200, 204))
    lo, hi = search_bounds(sp)
    g = sp.sample_genomes(np.random.default_rng(0), 500)
    assert np.all(g >= lo) and np.all(g <= hi)
    assert {sp.decode(lo).r, sp.decode(hi).r} == {200, 204}


def test_fit_ratio_is_the_median_ratio_and_resists_one_outlier():
    from hwnat.latency.model import fit_ratio

    pred = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    assert fit_ratio(pred, 1.05 * pred) == (pytest.approx(1.05), 0.0)
    meas = 1.05 * pred
    meas[2] *= 3  # one disturbed measurement
    assert fit_ratio(pred, meas)[0] == pytest.approx(1.05)
    assert fit_ratio([], []) == (1.0, 0.0)


def test_calibrated_model_maps_estimate_and_refits(nb201, tmp_path):
    from hwnat.latency.model import CalibratedLatency, CsvLatency, calibration_archs

    base = open_latency_model("csv::pixel3", nb201, "pixel3")
    assert isinstance(base, CsvLatency)
    archs = calibration_archs(base, 4, seed=0)
    g = np.stack([nb201.encode(nb201.parse(a)) for a in archs])
    v = base.ms(g)
    assert len(set(archs)) == 4 and np.all(np.diff(v) >= 0)  # spread over the range, in order
    m = CalibratedLatency(base, [(a, float(x), 1.1 * float(x)) for a, x in zip(archs, v, strict=True)])
    assert np.allclose(m.ms(g), 1.1 * v)
    d = m.describe()
    assert d["model"] == "csv+calibration" and d["calibration"]["points"] == 4
    assert d["calibration"]["mean_abs_error_pct_after"] < 1e-6 < d["calibration"]["mean_abs_error_pct_before"]
    assert d["calibration"]["b_ms"] == 0
    m.refit([(a, float(x), 2 * float(x)) for a, x in zip(archs, v, strict=True)])
    assert np.allclose(m.ms(g), 2 * v)
