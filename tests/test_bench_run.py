"""``hwnat bench run``, ``compare`` and ``ab`` with real measurements on the cpu device (small protocol).

Models are conv stacks (``hwnat.bench.synthetic``) whose cost is set by their number of layers, and one
NAS-Bench-201 subnet. The same entry names are used in both suites of the A/B job, so a heavier model
under the same name is what a candidate with a real slowdown looks like.

The machine running these tests may be busy (other jobs, a shared CI runner). Real timings therefore only
back assertions that hold under load: the structure of the results, and verdicts of the A/B job whose
random order within each pair bounds a false alarm by the test's alpha whatever the neighbour does
(``hwnat.bench.paired``). What the statistics do with busy or quiet runs is tested on controlled inputs
(``test_bench_stats.py``, ``test_bench_paired.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_bench_cli import invoke

from hwnat.bench.synthetic import write_conv_stack
from hwnat.errors import DeviceError

pytestmark = pytest.mark.slow

NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
SMALL_PROTOCOL = {"warmup_s": 0.02, "warmup_runs": 2, "min_round_s": 0.03}


def write_suite(path: Path, main_model: str, rounds: int = 10, extra: list | None = None, **fields) -> Path:
    suite = {"name": "t", "device": "cpu", "rounds": rounds, "protocol": SMALL_PROTOCOL,
             "contention_retries": 1, "contention_backoff_s": 0.05,
             "entries": [{"name": "main", "model": main_model},
                         {"name": "other", "model": "stack10.onnx"},
                         {"name": "nb201", "space": "nasbench201", "arch": NB201}] + (extra or []), **fields}
    path.write_text(json.dumps(suite))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real runs of one suite, and one A/B job: baseline suite (main = 40 layers, tiny = 40 layers)
    against a candidate suite (main = 160 layers: 4x heavier; tiny = 41 layers: ~2% heavier)."""
    d = tmp_path_factory.mktemp("bench")
    for blocks in (10, 40, 41, 160):
        write_conv_stack(d / f"stack{blocks}.onnx", blocks)
    out = {}
    for key in ("a1", "a2"):
        s = write_suite(d / f"{key}.yaml", "stack40.onnx")
        out[key] = d / f"{key}.json"
        code, stdout, stderr = invoke(["bench", "run", "--suite", s, "--out", out[key], "--work-dir", d / "work"])
        assert code == 0, stderr
        assert "main" in stdout and "[pass 10/10" in stderr
    base = write_suite(d / "base.yaml", "stack40.onnx", ab_rounds=12, ab_runs=5,
                       extra=[{"name": "tiny", "model": "stack40.onnx"}])
    cand = write_suite(d / "cand.yaml", "stack160.onnx", ab_rounds=12, ab_runs=5,
                       extra=[{"name": "tiny", "model": "stack41.onnx"}])
    out["ab"] = d / "ab.json"
    code, stdout, stderr = invoke(["bench", "ab", base, cand, "--out", out["ab"], "--work-dir", d / "work",
                                   "--alpha", "0.001"])
    assert code in (0, 1), stderr   # the verdicts are checked below, with the alpha each claim needs
    assert "[pass 12/12" in stderr and "main" in stdout
    out["dir"] = d
    return out


def test_result_file_keeps_raw_samples_protocol_fingerprint_and_interleaving(runs):
    data = json.loads(runs["a1"].read_text())
    assert data["complete"] is True and data["rounds"] == 10
    assert data["protocol"]["rounds"] == 1 and data["protocol"]["min_round_s"] == 0.03
    assert data["fingerprint"]["runtime"] == "onnxruntime" and data["fingerprint"]["threads"] == 1
    by = {e["name"]: e for e in data["entries"]}
    assert set(by) == {"main", "other", "nb201"}
    assert all(len(e["rounds_ms"]) == 10 and all(len(r) >= 3 for r in e["rounds_ms"]) for e in by.values())
    # every call also on the CPU clock
    assert all([len(r) for r in e["cpu_rounds_ms"]] == [len(r) for r in e["rounds_ms"]] for e in by.values())
    assert by["nb201"]["source"] == {"space": "nasbench201", "arch": NB201}
    # entries are interleaved: each pass times every entry once, in a shuffled order
    positions = [[info["position"] for info in by[n]["round_info"]] for n in by]
    assert {tuple(p[k] for p in positions) for k in range(10)} != {(0, 1, 2)}
    assert all(sorted(p[k] for p in positions) == [0, 1, 2] for k in range(10))
    assert [info["pass"] for info in by["main"]["round_info"]] == list(range(10))


def test_two_runs_compare_gives_a_verdict_or_says_why_not(runs):
    """Two runs on a machine that may be busy: every entry gets a verdict from the table, and an entry
    without one says why; --strict turns a missing verdict into exit 3 (whether the machine was quiet
    enough for verdicts is not up to this test)."""
    code, out, err = invoke(["bench", "compare", runs["a1"], runs["a2"], "--json"])
    assert code in (0, 1), err
    entries = json.loads(out)["entries"]
    assert {e["name"] for e in entries} == {"main", "other", "nb201"}
    assert all(e["verdict"] in ("unchanged", "regressed", "improved", "insufficient data") for e in entries)
    short = [e for e in entries if e["verdict"] == "insufficient data"]
    assert all("contended" in e["note"] or "busier" in e["note"] for e in short)
    if short and code == 0:
        assert "no verdict (insufficient data)" in err
        assert invoke(["bench", "compare", runs["a1"], runs["a2"], "--strict"])[0] == 3


def test_ab_job_records_pairs_back_to_back_in_both_orders(runs):
    data = json.loads(runs["ab"].read_text())
    assert data["format"] == "hwnat-bench-ab-result" and data["complete"] is True
    by = {e["name"]: e for e in data["entries"]}
    assert set(by) == {"main", "other", "nb201", "tiny"}
    assert data["rounds"] == 12 and data["protocol"]["runs"] == 5   # the suites' ab_rounds and ab_runs
    for e in by.values():
        assert len(e["baseline_rounds_ms"]) == len(e["candidate_rounds_ms"]) == len(e["pair_info"]) == 12
        assert len(e["baseline_cpu_rounds_ms"]) == 12
        assert all(len(r) == 5 for r in e["baseline_rounds_ms"] + e["candidate_rounds_ms"])
    orders = [i["order"] for e in by.values() for i in e["pair_info"]]
    assert set(orders) == {"ab", "ba"}
    assert by["other"]["baseline"]["model_sha256"] == by["other"]["candidate"]["model_sha256"]
    assert by["main"]["baseline"]["model_sha256"] != by["main"]["candidate"]["model_sha256"]


def test_heavier_model_under_the_same_name_is_caught_by_the_ab_job(runs, tmp_path):
    """4x heavier: every pair shows it on the CPU clock, which a neighbour cannot inflate by preempting."""
    junit = tmp_path / "j.xml"
    code, out, err = invoke(["bench", "ab", "--from", runs["ab"], "--clock", "cpu", "--junit", junit, "--json"])
    assert code == 1, out + err
    v = {e["name"]: e for e in json.loads(out)["entries"]}
    assert v["main"]["verdict"] == "regressed" and v["main"]["model_changed"] and v["main"]["change"] > 1.0
    assert "regression in main (+" in err
    assert junit.read_text().count("<failure") >= 1
    # the default clock (auto) is the CPU clock here: a local device with one ONNX Runtime thread
    code, out, err = invoke(["bench", "ab", "--from", runs["ab"], "--json"])
    assert code == 1 and json.loads(out)["clock"] == "cpu", out + err


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_unchanged_and_tiny_changes_are_not_flagged_by_the_ab_job(runs, clock):
    """Identical files (other, nb201) and a ~2% heavier model (tiny) are never `regressed` at alpha 0.001:
    with 12 pairs in random order that would need all 12 to point the same way by chance (p <= 2^-12),
    however busy the machine was."""
    code, out, err = invoke(["bench", "ab", "--from", runs["ab"], "--alpha", "0.001", "--clock", clock, "--json"])
    v = {e["name"]: e for e in json.loads(out)["entries"]}
    for name in ("other", "nb201", "tiny"):
        assert v[name]["verdict"] in ("unchanged", "improved"), v[name]
        assert v[name]["n_baseline"] == 12
    assert "identical model files" in v["other"]["note"] and v["tiny"]["model_changed"]


def test_baseline_round_trip_with_real_results(runs, tmp_path):
    store = tmp_path / "store"
    assert invoke(["bench", "baseline", "save", runs["a1"], "--dir", store, "--commit", "abc"])[0] == 0
    code, out, err = invoke(["bench", "compare", store, runs["a2"], "--json"])
    assert code in (0, 1) and json.loads(out)["baseline"]["path"].startswith(str(store)), err


@pytest.mark.parametrize("patch,message", [
    ({"bogus": 1}, "field bogus: unknown field"),
    ({"protocol": {"rounds": 3}}, "set the suite's top-level `rounds`"),
    ({"protocol": {"min_round_s": -1}}, "min_round_s"),
    ({"rounds": 1}, "field rounds"),
    ({"entries": [{"name": "x", "model": "m.onnx"}, {"name": "x", "model": "m.onnx"}]}, "duplicate entry name 'x'"),
    ({"entries": [{"name": "x", "space": "nasbench201"}]}, "needs `model: PATH.onnx` or both"),
    ({"entries": [{"name": "x", "model": "missing.onnx"}]}, "model file"),
    ({"entries": [{"name": "x", "space": "nasbench201", "arch": "|bad|"}]}, "entry 'x'"),
    ({"entries": [{"name": "x", "space": "nospace", "arch": "a"}]}, "unknown search space"),
])
def test_bad_suites_are_exit_2_with_one_line(tmp_path, patch, message):
    s = write_suite(tmp_path / "s.yaml", "stack40.onnx")
    data = {**json.loads(s.read_text()), **patch}
    s.write_text(json.dumps(data))
    code, _, err = invoke(["bench", "run", "--suite", s, "--out", tmp_path / "r.json"])
    last = err.strip().splitlines()[-1]
    assert code == 2 and message in last and last.startswith("error: ") and "Traceback" not in err, err
    assert not (tmp_path / "r.json").exists()


def test_unknown_suite_name_and_bad_yaml(tmp_path):
    code, _, err = invoke(["bench", "run", "--suite", "no-such-suite", "--out", tmp_path / "r.json"])
    assert code == 2 and "suite file not found" in err and "default" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    code, _, err = invoke(["bench", "run", "--suite", bad, "--out", tmp_path / "r.json"])
    assert code == 2 and "not valid YAML" in err


def test_device_failure_midway_keeps_partial_result_and_exits_3(runs, tmp_path, monkeypatch):
    from hwnat.devices import device as device_mod

    real_open = device_mod.open_device

    class Failing:
        def __init__(self, dev):
            self.dev, self.calls = dev, 0

        def __getattr__(self, name):
            return getattr(self.dev, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.dev.close()

        def measure(self, *a, **k):
            self.calls += 1
            if self.calls > 4:
                raise DeviceError("device went away")
            return self.dev.measure(*a, **k)

    monkeypatch.setattr(device_mod, "open_device", lambda name: Failing(real_open(name)))
    s = write_suite(runs["dir"] / "fail.yaml", "stack10.onnx", rounds=5, contention_retries=0)
    out = tmp_path / "partial.json"
    code, _, err = invoke(["bench", "run", "--suite", s, "--out", out])
    assert code == 3 and "device went away" in err
    data = json.loads(out.read_text())
    assert data["complete"] is False and sum(len(e["rounds_ms"]) for e in data["entries"]) == 4
    code, _, err = invoke(["bench", "baseline", "save", out, "--dir", tmp_path / "store"])
    assert code == 2 and "did not finish" in err


def test_unwritable_out_fails_before_measuring(tmp_path):
    s = write_suite(tmp_path / "s.yaml", "stack40.onnx")
    (tmp_path / "file").write_text("")
    code, _, err = invoke(["bench", "run", "--suite", s, "--out", tmp_path / "file" / "r.json"])
    assert code == 2 and "cannot create its directory" in err


def test_contention_probe_sees_a_busy_neighbour():
    import os
    import subprocess
    import sys
    import time

    from hwnat.bench.contention import Probe

    with Probe() as quiet:
        time.sleep(0.05)
    if quiet.reading.busy_frac is None:
        pytest.skip("/proc/stat or schedstat not readable here")
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time() + 2\nwhile time.time() < t: pass"])
    try:
        time.sleep(0.2)
        with Probe() as busy:
            time.sleep(0.4)
    finally:
        spin.kill()
        spin.wait()
    r = busy.reading
    assert 0 <= r.wait_frac <= 1 and r.busy_frac > 0.5 / os.cpu_count()
    assert r.contended(0.1, 0.4 / os.cpu_count())


def test_contended_passes_are_retried_marked_and_retries_stop_when_the_machine_stays_busy(monkeypatch):
    from types import SimpleNamespace

    from hwnat.bench import run as run_mod
    from hwnat.bench.contention import Reading
    from hwnat.bench.suite import Suite
    from hwnat.measure.stats import Measurement

    busy, clean = Reading(0.3, 0.0, 0.9), Reading(0.3, 0.01, 0.0)
    script = [busy, clean] + [busy] * 30          # one burst, then a machine that stays busy
    calls = []

    def fake_pass(dev, p, protocol, local):
        calls.append(p.entry.name)
        return Measurement.from_rounds([[1.0, 1.1, 0.9]]), script[len(calls) - 1], None

    monkeypatch.setattr(run_mod, "_timed_pass", fake_pass)
    suite = Suite(name="t", rounds=6, shuffle=False, contention_retries=2, contention_backoff_s=0,
                  entries=[{"name": "x", "model": "x.onnx"}])
    prepared = [run_mod.PreparedEntry(suite.entries[0], Path("x.onnx"), (1, 3, 8, 8), "h")]
    data = {"entries": [{"rounds_ms": [], "round_info": []}]}
    dev = SimpleNamespace(spec=SimpleNamespace(transport=SimpleNamespace(kind="local")))
    run_mod._measure_passes(dev, prepared, data, None, 6, suite, 0.0, None, lambda s: None)
    info = data["entries"][0]["round_info"]
    # pass 0: busy then clean (kept the clean one); passes 1-3: 3 tries each, stay busy; then no retries
    assert [i["tries"] for i in info] == [2, 3, 3, 3, 1, 1]
    assert [i["contended"] for i in info] == [False, True, True, True, True, True]
    assert info[0]["busy_frac"] == 0.0 and len(calls) == 13


def test_ab_pairs_are_timed_back_to_back_in_random_order_and_unequal_load_is_retimed(monkeypatch):
    from types import SimpleNamespace

    from hwnat.bench import run as run_mod
    from hwnat.bench.contention import Reading
    from hwnat.bench.suite import Suite
    from hwnat.measure.stats import Measurement

    calls = []
    loads = iter([0.0, 0.9] + [0.5] * 1000)   # the first pair's halves saw unequal load, then all equal

    def fake_pass(dev, p, protocol, local):
        calls.append(p.path.name)
        ms = 2.0 if p.path.name.startswith("cand") else 1.0
        return Measurement.from_rounds([[ms, ms, ms]]), Reading(0.3, 0.0, next(loads)), [ms / 2] * 3

    monkeypatch.setattr(run_mod, "_timed_pass", fake_pass)
    suite = Suite(name="t", rounds=16, contention_retries=2, contention_backoff_s=0,
                  entries=[{"name": "x", "model": "x.onnx"}, {"name": "y", "model": "y.onnx"}])
    pairs = [(run_mod.PreparedEntry(e, Path(f"base-{e.name}.onnx"), (1, 3, 8, 8), "b"),
              run_mod.PreparedEntry(e, Path(f"cand-{e.name}.onnx"), (1, 3, 8, 8), "c")) for e in suite.entries]
    recs = [{"baseline_rounds_ms": [], "candidate_rounds_ms": [], "pair_info": []} for _ in pairs]
    dev = SimpleNamespace(spec=SimpleNamespace(transport=SimpleNamespace(kind="local")))
    run_mod._measure_pairs(dev, pairs, recs, None, 16, suite, 0.0, None, lambda s: None)
    # every pair is two consecutive timings of the same entry, one of each side
    halves = [calls[i:i + 2] for i in range(0, len(calls), 2)]
    assert all({h[0].split("-", 1)[1], h[1].split("-", 1)[1]} == {h[0].split("-", 1)[1]} and
               {h[0][:4], h[1][:4]} == {"base", "cand"} for h in halves)
    info = [i for r in recs for i in r["pair_info"]]
    first = min(info, key=lambda i: (i["pass"], i["position"]))
    assert first["tries"] == 2 and first["balanced"] is True           # retimed once, then balanced
    assert len(calls) == 2 * (2 * 16 + 1)
    orders = [i["order"] for i in info]
    assert 0 < orders.count("ab") < len(orders)                          # both orders occur
    for r in recs:
        assert r["baseline_rounds_ms"] == [[1.0] * 3] * 16 and r["candidate_rounds_ms"] == [[2.0] * 3] * 16
        assert r["baseline_cpu_rounds_ms"] == [[0.5] * 3] * 16
