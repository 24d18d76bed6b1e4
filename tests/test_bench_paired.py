"""The A/B job's paired statistics (``hwnat.bench.paired``), its result file and ``bench ab --from``, on
controlled inputs (no timing): exact null distribution, interval coverage, the randomization guarantee
under a simulated busy neighbour, verdicts and exit codes."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from test_bench_cli import FP, invoke

from hwnat.bench import compare as C
from hwnat.bench import paired as P
from hwnat.bench.store import ab_result_from_dict
from hwnat.errors import BadInputError


def ab_dict(entries: dict, *, cpu_factor: float | None = None, complete: bool = True) -> dict:
    """An A/B result with given per-entry (baseline rounds, candidate rounds, same file?)."""
    out = []
    for name, (b, c, same) in entries.items():
        e = {"name": name,
             "baseline": None if b is None else {"model_sha256": "h-" + name},
             "candidate": None if c is None else {"model_sha256": "h-" + name + ("" if same else "-new")},
             "baseline_rounds_ms": b or [], "candidate_rounds_ms": c or [],
             "pair_info": [{"pass": k, "order": "ab" if k % 2 else "ba", "balanced": k != 0}
                           for k in range(len(b or []) if c else 0)]}
        if cpu_factor is not None:
            e["baseline_cpu_rounds_ms"] = [[x * cpu_factor for x in r] for r in b or []]
            e["candidate_cpu_rounds_ms"] = [[x * cpu_factor for x in r] for r in c or []]
        out.append(e)
    return {"format": "hwnat-bench-ab-result", "schema_version": 1, "baseline": {"suite": {"name": "s"}},
            "candidate": {"suite": {"name": "s"}}, "device": "cpu", "fingerprint": FP, "protocol": {},
            "rounds": 12, "complete": complete, "git_commit": "abc", "entries": out}


def noisy_pairs(rng, center: float, ratio: float, n: int = 12, common: float = 0.3, own: float = 0.01):
    """Pairs sharing a large common slowdown (the neighbour) with a little noise of their own."""
    b, c = [], []
    for _ in range(n):
        slow = math.exp(abs(rng.normal(0, common)))
        b.append(list(center * slow * np.exp(rng.normal(0, own, 7))))
        c.append(list(center * ratio * slow * np.exp(rng.normal(0, own, 7))))
    return b, c


# ------------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_signed_rank_null_cdf_matches_enumeration(n):
    counts = np.zeros(n * (n + 1) // 2 + 1)
    for signs in itertools.product((0, 1), repeat=n):
        counts[sum(rank for rank, s in zip(range(1, n + 1), signs, strict=True) if s)] += 1
    assert np.allclose(np.cumsum(counts) / counts.sum(), P.signed_rank_null_cdf(n), atol=1e-12)


def test_paired_interval_rank_small_samples_and_normal_approximation():
    assert P.paired_interval_rank(7, 0.01) == 0       # 2 / 2^7 > 0.01: no 99% interval from 7 pairs
    assert P.paired_interval_rank(8, 0.01) == 1
    assert P.pairs_needed(0.01) == 8 and P.pairs_needed(0.05) == 6
    assert P.paired_interval_rank(10, 0.05) == 9      # tables: n = 10, two-sided 5% critical T = 8
    exact, approx = P.paired_interval_rank(100, 0.01), P.paired_interval_rank(101, 0.01)
    assert 0 < approx - exact < 60


def test_walsh_interval_coverage_is_at_least_nominal():
    rng = np.random.default_rng(0)
    trials = 1500
    hits = sum(lo <= 0.3 <= hi for lo, hi in
               (P.walsh_hodges_lehmann(rng.standard_t(3, 12) + 0.3, 0.05)[1:] for _ in range(trials)))
    assert hits / trials >= 0.94


def test_wilcoxon_p_agrees_with_the_interval():
    rng = np.random.default_rng(1)
    for _ in range(200):
        d = rng.normal(rng.uniform(-1.5, 1.5), 1, 11)
        _, lo, hi = P.walsh_hodges_lehmann(d, 0.01)
        assert (P.wilcoxon_p(d) < 0.01) == (lo > 0 or hi < 0)


def test_random_order_keeps_false_alarms_below_alpha_whatever_the_neighbour_does():
    """Under no change, the neighbour decides how slow each slot is; the coin decides which slot is the
    candidate. The verdict is then wrong (regressed) in at most alpha/2 of the jobs, however wild and
    one-sided the neighbour: here bursts of +5..+80% hit the first slot of a pair 70% of the time."""
    rng = np.random.default_rng(2)
    jobs, alarms, alarms_unpaired = 600, 0, 0
    for k in range(jobs):
        first = 3.0 * np.exp(rng.normal(0, 0.3, 12))           # slow drifts shared by the pair
        second = first * np.exp(rng.normal(0, 0.02, 12))
        burst = rng.random(12) < 0.7
        first = first * np.where(burst, 1 + rng.uniform(0.05, 0.8, 12), 1.0)
        cand_first = rng.random(12) < 0.5
        b = np.where(cand_first, second, first)
        c = np.where(cand_first, first, second)
        alarms += P.compare_paired("x", b, c).verdict == C.REGRESSED
        if k < 100:  # the same timings with the order fixed (candidate first): the bursts look like a regression
            alarms_unpaired += P.compare_paired("x", second, first).verdict == C.REGRESSED
    assert alarms <= 0.005 * jobs
    assert alarms_unpaired > 25


def test_compare_paired_verdicts():
    rng = np.random.default_rng(3)
    b, c = noisy_pairs(rng, 5.0, 1.10)
    r = P.compare_paired("x", C.round_values(b), C.round_values(c))
    assert r.verdict == C.REGRESSED and r.ci_low > 0.05 and 0.08 < r.change < 0.12
    b, c = noisy_pairs(rng, 5.0, 1.0)
    r = P.compare_paired("x", C.round_values(b), C.round_values(c))
    assert r.verdict == C.UNCHANGED and abs(r.change) < 0.02
    b, c = noisy_pairs(rng, 5.0, 0.8)
    assert P.compare_paired("x", C.round_values(b), C.round_values(c)).verdict == C.IMPROVED
    b, c = noisy_pairs(rng, 5.0, 1.03)   # a real +3%: significant, below the 5% threshold
    r = P.compare_paired("x", C.round_values(b), C.round_values(c))
    assert r.verdict == C.UNCHANGED and r.significant and "below the 5% threshold" in r.note
    r = P.compare_paired("x", [1.0] * 7, [2.0] * 7)
    assert r.verdict == C.INSUFFICIENT and "needs at least 8" in r.note
    with pytest.raises(ValueError, match="pairs needed"):
        P.compare_paired("x", [1.0] * 8, [1.0] * 9)


# ----------------------------------------------------------------------------- result and compare_ab
def test_compare_ab_entries_controls_and_clocks():
    rng = np.random.default_rng(4)
    slow = noisy_pairs(rng, 5.0, 1.2)
    same = noisy_pairs(rng, 2.0, 1.0)
    res = ab_result_from_dict(ab_dict({"slow": (*slow, False), "same": (*same, True),
                                       "gone": (same[0], None, False), "fresh": (None, same[1], False)},
                                      cpu_factor=0.5))
    comp = P.compare_ab(res, clock="wall")
    v = {e.name: e for e in comp.entries}
    assert {k: e.verdict for k, e in v.items()} == {"slow": C.REGRESSED, "same": C.UNCHANGED,
                                                   "gone": C.MISSING, "fresh": C.NEW}
    assert v["slow"].model_changed and not v["same"].model_changed
    assert "A/A control" in v["same"].note and "1 of 12 pairs saw unequal load" in v["same"].note
    assert comp.method == "paired" and comp.to_dict()["method"] == "paired"
    cpu = P.compare_ab(res, clock="cpu")
    assert cpu.clock == "cpu" and cpu.entries[0].baseline_ms == pytest.approx(v["slow"].baseline_ms * 0.5)
    no_cpu = ab_result_from_dict(ab_dict({"slow": (*slow, False)}))
    with pytest.raises(BadInputError, match="no CPU-clock samples"):
        P.compare_ab(no_cpu, clock="cpu")
    # auto (the default): the CPU clock for a local single-threaded runtime with CPU samples, else wall
    assert res.fingerprint["threads"] == 1 and P.compare_ab(res).clock == "cpu"
    assert P.compare_ab(res).entries[0].baseline_ms == pytest.approx(cpu.entries[0].baseline_ms)
    assert P.compare_ab(no_cpu).clock == "wall"
    threaded = ab_result_from_dict({**ab_dict({"slow": (*slow, False)}, cpu_factor=0.5),
                                    "fingerprint": {**FP, "threads": 4}})
    assert P.compare_ab(threaded).clock == "wall"


def test_ab_result_file_is_validated():
    with pytest.raises(BadInputError, match="not an hwnat A/B bench result"):
        ab_result_from_dict({"format": "hwnat-bench-result"}, "r.json")
    bad = ab_dict({"a": ([[1.0, -2.0]] * 8, [[1.0]] * 8, True)})
    with pytest.raises(BadInputError, match="baseline_rounds_ms"):
        ab_result_from_dict(bad, "r.json")


def test_bench_ab_from_result_exit_codes_and_reports(tmp_path):
    rng = np.random.default_rng(5)
    slow, same = noisy_pairs(rng, 5.0, 1.2), noisy_pairs(rng, 2.0, 1.0)
    p = tmp_path / "ab.json"
    p.write_text(json.dumps(ab_dict({"slow": (*slow, False), "same": (*same, True)})))
    md, xml = tmp_path / "r.md", tmp_path / "r.xml"
    code, out, err = invoke(["bench", "ab", "--from", p, "--markdown", md, "--junit", xml])
    assert code == 1 and err.startswith("error: regression in slow (+") and "same" not in err
    assert "pairs" in out and "Wilcoxon signed-rank" in md.read_text() and "<failure" in xml.read_text()
    assert invoke(["bench", "ab", "--from", p, "--threshold", "30%"])[0] == 0
    few = tmp_path / "few.json"
    few.write_text(json.dumps(ab_dict({"same": ([r for r in same[0][:6]], [r for r in same[1][:6]], True)})))
    code, out, err = invoke(["bench", "ab", "--from", few])
    assert code == 0 and "insufficient data" in out and "no verdict" in err and "--strict" in err
    code, _, err = invoke(["bench", "ab", "--from", few, "--strict"])
    assert code == 3 and "no verdict (insufficient data) for same" in err
    code, _, err = invoke(["bench", "ab", "--from", p, "base.yaml"])
    assert code == 2 and "--from judges an existing A/B result" in err
    code, _, err = invoke(["bench", "ab", "base.yaml"])
    assert code == 2 and "expected BASELINE and CANDIDATE suites and --out" in err


def test_ab_jobs_time_a_fixed_number_of_calls_per_half():
    """Both halves of a pair do the same work whatever the load: `ab_runs` calls, unless the suite's own
    protocol fixes `runs` or `ab_runs` is 0 (then the time-based rule of the protocol)."""
    from hwnat.bench.suite import Suite
    from hwnat.measure.protocol import Protocol

    entries = [{"name": "x", "model": "x.onnx"}]
    dev = Protocol(min_round_s=0.1)
    s = Suite(name="t", protocol={"min_round_s": 0.2}, entries=entries)
    assert (s.ab_rounds, s.ab_runs) == (60, 20)
    p = s.ab_protocol(dev)
    assert (p.runs, p.rounds, p.max_remeasure, p.min_round_s) == (20, 1, 0, 0.2)
    assert s.pass_protocol(dev).runs == 0                                   # bench run: unchanged
    assert Suite(name="t", protocol={"runs": 7}, entries=entries).ab_protocol(dev).runs == 7
    assert Suite(name="t", ab_runs=0, entries=entries).ab_protocol(dev).runs == 0
