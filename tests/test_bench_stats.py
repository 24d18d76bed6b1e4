"""Statistics, comparison and reports of ``hwnat bench`` on synthetic data (no timing)."""

from __future__ import annotations

import itertools
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from hwnat.bench import compare as C
from hwnat.bench.report import junit_xml, markdown, text_table
from hwnat.bench.store import result_from_dict
from hwnat.errors import BadInputError

FP = {"cpu_model": "Test CPU", "machine": "x86_64", "logical_cores": 2, "runtime": "onnxruntime",
      "runtime_version": "1.0", "threads": 1, "precision": "fp32", "provider": "CPUExecutionProvider",
      "device": "cpu", "host": "a"}


def make_result(entries: dict, suite: str = "s", fp: dict | None = None, contended: dict | None = None,
                complete: bool = True, commit: str = "abc123", busy: dict | None = None) -> dict:
    """A bench result dict with given per-entry rounds (list of lists of ms); ``busy[name]`` gives the
    per-round busy_frac readings (contended = above the default 0.25 unless ``contended`` says)."""
    contended = dict(contended or {})
    for n, b in (busy or {}).items():
        contended.setdefault(n, tuple(i for i, x in enumerate(b) if x > 0.25))
    return {
        "format": "hwnat-bench-result", "schema_version": 1, "suite": {"name": suite, "sha256": "x"},
        "device": "cpu", "fingerprint": dict(fp or FP), "protocol": {}, "rounds": 10, "complete": complete,
        "git_commit": commit, "created_at": "2025-01-01T00:00:00+00:00",
        "entries": [{"name": n, "source": {"model": f"{n}.onnx"}, "model_sha256": "h-" + n, "input_shape": [1, 3, 8, 8],
                     "rounds_ms": [list(map(float, r)) for r in rounds],
                     "round_info": [{"pass": i, "contended": i in contended.get(n, ()),
                                     **({"wait_frac": 0.0, "busy_frac": busy[n][i]} if n in (busy or {}) else {})}
                                    for i in range(len(rounds))]}
                    for n, rounds in entries.items()],
    }


def rounds_around(rng, center: float, n: int = 12, per_round: int = 20, noise: float = 0.02,
                  round_noise: float = 0.01) -> list[list[float]]:
    """Log-normal samples with a per-round random offset (rounds differ like real sessions do)."""
    out = []
    for _ in range(n):
        c = center * math.exp(rng.normal(0, round_noise))
        out.append(list(c * np.exp(rng.normal(0, noise, per_round))))
    return out


# ----------------------------------------------------------------------------------------- rank stats
@pytest.mark.parametrize("m,n", [(1, 1), (2, 3), (4, 4), (3, 7), (6, 5)])
def test_u_null_cdf_matches_enumeration(m, n):
    counts = np.zeros(m * n + 1)
    for pos in itertools.combinations(range(m + n), m):
        others = [k for k in range(m + n) if k not in pos]
        counts[sum(a > b for a in pos for b in others)] += 1
    assert np.allclose(np.cumsum(counts) / counts.sum(), C.u_null_cdf(m, n), atol=1e-12)


def test_interval_rank_small_samples_and_normal_approximation():
    assert C.interval_rank(4, 4, 0.01) == 0           # no 99% interval from 4 vs 4
    assert C.interval_rank(5, 5, 0.01) == 1
    assert C.interval_rank(8, 8, 0.05) == 14          # tables: 8 vs 8 at 95% -> k = 14
    # the normal approximation continues the exact values smoothly
    exact, approx = C.interval_rank(80, 80, 0.01), C.interval_rank(81, 81, 0.01)
    assert 0 < approx - exact < 120


def test_hodges_lehmann_interval_coverage_is_at_least_nominal():
    rng = np.random.default_rng(0)
    hits = 0
    trials = 1500
    for _ in range(trials):
        a, b = rng.standard_t(3, 10), rng.standard_t(3, 12) + 0.7
        est, lo, hi = C.hodges_lehmann(a, b, 0.05)
        hits += lo <= 0.7 <= hi
    assert hits / trials >= 0.94


def test_mann_whitney_p_agrees_with_the_interval():
    rng = np.random.default_rng(1)
    for _ in range(200):
        a, b = rng.normal(0, 1, 9), rng.normal(rng.uniform(-2, 2), 1, 9)
        _, lo, hi = C.hodges_lehmann(a, b, 0.01)
        assert (C.mann_whitney_p(a, b) < 0.01) == (lo > 0 or hi < 0)


# --------------------------------------------------------------------------------------- verdicts
def test_regression_requires_significance_and_interval_above_threshold():
    rng = np.random.default_rng(2)
    base = [np.median(r) for r in rounds_around(rng, 10.0)]
    slow = [np.median(r) for r in rounds_around(rng, 12.0)]
    tiny = [np.median(r) for r in rounds_around(rng, 10.2)]
    c = C.compare_samples("x", base, slow)
    assert c.verdict == C.REGRESSED and c.ci_low > 0.05 and 0.15 < c.change < 0.25
    c = C.compare_samples("x", base, tiny)
    assert c.verdict == C.UNCHANGED
    c = C.compare_samples("x", slow, base)
    assert c.verdict == C.IMPROVED and c.ci_high < -0.05


def test_large_but_uncertain_change_is_not_a_regression_and_says_so():
    base = [10, 10.2, 9.9, 10.1, 10.0, 15.0, 9.8, 10.1]
    cand = [10.1, 14.0, 10.0, 16.0, 15.5, 10.2, 14.5, 15.2]
    c = C.compare_samples("x", base, cand, threshold=0.05, alpha=0.01)
    assert c.verdict == C.UNCHANGED and "not established" in c.note


def test_insufficient_data_is_its_own_verdict():
    c = C.compare_samples("x", [1.0, 1.1, 1.0], [2.0, 2.1, 2.0], alpha=0.01)
    assert c.verdict == C.INSUFFICIENT and "needs at least 5" in c.note
    assert C.compare_samples("x", [1.0] * 5, [2.0] * 5, alpha=0.01).verdict != C.INSUFFICIENT


@pytest.mark.parametrize("text,value", [("5%", 0.05), ("0.05", 0.05), (" 12.5% ", 0.125), ("0%", 0.0)])
def test_parse_threshold(text, value):
    assert C.parse_threshold(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc%", "abc", "-5%", "5", "nan%", "", "2000%"])
def test_parse_threshold_refuses(text):
    with pytest.raises(BadInputError, match="--threshold"):
        C.parse_threshold(text)


@pytest.mark.parametrize("text", ["0", "1", "x", "-0.1"])
def test_parse_alpha_refuses(text):
    with pytest.raises(BadInputError, match="--alpha"):
        C.parse_alpha(text)


# --------------------------------------------------------------------------------- result files
def test_compare_results_matches_entries_and_reports_new_and_missing():
    rng = np.random.default_rng(3)
    base = result_from_dict(make_result({"a": rounds_around(rng, 5), "b": rounds_around(rng, 2),
                                         "gone": rounds_around(rng, 1)}))
    cand = result_from_dict(make_result({"a": rounds_around(rng, 6), "b": rounds_around(rng, 2),
                                         "fresh": rounds_around(rng, 1)}))
    comp = C.compare_results(base, cand)
    v = {e.name: e.verdict for e in comp.entries}
    assert v == {"a": C.REGRESSED, "b": C.UNCHANGED, "gone": C.MISSING, "fresh": C.NEW}
    assert comp.to_dict()["counts"] == {C.REGRESSED: 1, C.UNCHANGED: 1, C.NEW: 1, C.MISSING: 1}


def test_compare_results_refuses_other_suite_and_other_environment():
    rng = np.random.default_rng(4)
    a = result_from_dict(make_result({"a": rounds_around(rng, 5)}))
    with pytest.raises(BadInputError, match="different suites"):
        C.compare_results(a, result_from_dict(make_result({"a": rounds_around(rng, 5)}, suite="other")))
    other = result_from_dict(make_result({"a": rounds_around(rng, 5)}, fp={**FP, "threads": 4, "host": "b"}))
    with pytest.raises(C.EnvironmentMismatch, match=r"threads: 1 -> 4.*--allow-env-change") as e:
        C.compare_results(a, other)
    assert "host" not in e.value.diff            # only comparable fields count
    comp = C.compare_results(a, other, allow_env_change=True)
    assert comp.env_diff == {"threads": (1, 4)} and "environments differ" in comp.warnings[0]


def test_contended_rounds_are_left_out_unless_asked():
    rng = np.random.default_rng(5)
    base = rounds_around(rng, 5.0)
    cand = rounds_around(rng, 5.0)
    for i in (0, 1, 2):
        cand[i] = [x * 2 for x in cand[i]]   # another process took the CPU in three rounds
    b = result_from_dict(make_result({"a": base}))
    c = result_from_dict(make_result({"a": cand}, contended={"a": (0, 1, 2)}))
    e = C.compare_results(b, c).entries[0]
    assert e.verdict == C.UNCHANGED and e.n_candidate == 9 and "3 contended rounds left out" in e.note
    assert C.compare_results(b, c, include_contended=True).entries[0].n_candidate == 12


def test_p90_metric_uses_round_p90():
    rng = np.random.default_rng(6)
    base = rounds_around(rng, 5.0, per_round=40)
    cand = [list(np.concatenate([r[:30], np.array(r[30:]) * 1.6])) for r in rounds_around(rng, 5.0, per_round=40)]
    b, c = result_from_dict(make_result({"a": base})), result_from_dict(make_result({"a": cand}))
    assert C.compare_results(b, c, metric="median").entries[0].verdict == C.UNCHANGED
    assert C.compare_results(b, c, metric="p90").entries[0].verdict == C.REGRESSED


# ---------------------------------------------------------------------------------------- reports
def test_reports_markdown_junit_text():
    rng = np.random.default_rng(7)
    base = result_from_dict(make_result({"a": rounds_around(rng, 5), "b|x": rounds_around(rng, 2),
                                         "c": rounds_around(rng, 2, n=3)}))
    cand = result_from_dict(make_result({"a": rounds_around(rng, 7), "b|x": rounds_around(rng, 2),
                                         "c": rounds_around(rng, 2, n=3)}))
    comp = C.compare_results(base, cand)
    md = markdown(comp)
    assert md.startswith("### hwnat bench: 1 regression (a)")
    assert "| a | **REGRESSED** |" in md and "b\\|x" in md
    root = ET.fromstring(junit_xml(comp))
    ts = root.find("testsuite")
    assert (ts.get("tests"), ts.get("failures"), ts.get("skipped")) == ("3", "1", "1")
    cases = {tc.get("name"): tc for tc in ts.iter("testcase")}
    assert cases["a"].find("failure") is not None and cases["c"].find("skipped") is not None
    props = {p.get("name"): p.get("value") for p in cases["a"].find("properties")}
    assert props["verdict"] == "regressed" and 0.3 < float(props["change"]) < 0.5
    assert float(props["ci_low"]) > 0.05
    txt = text_table(comp)
    assert "REGRESSED" in txt and "insufficient data" in txt


def test_protocol_difference_is_a_warning():
    rng = np.random.default_rng(8)
    b = make_result({"a": rounds_around(rng, 5)})
    c = make_result({"a": rounds_around(rng, 5)})
    b["protocol"], c["protocol"] = {"min_round_s": 0.1}, {"min_round_s": 0.2}
    comp = C.compare_results(result_from_dict(b), result_from_dict(c))
    assert any("min_round_s: 0.1 -> 0.2" in w for w in comp.warnings)


# ------------------------------------------------------------------ busy neighbours (two-run compare)
def test_a_neighbour_busy_during_the_candidate_run_only_is_not_a_regression():
    """The false alarm seen in CI: an unchanged entry +11.5% because another process kept the machine busy
    during the candidate run. Its rounds are contended and left out (no verdict); kept on request, the
    load gate still withholds the regression; the same slowdown on an equally quiet machine is one."""
    rng = np.random.default_rng(9)
    base = rounds_around(rng, 5.0, n=10)
    cand = rounds_around(rng, 5.0 * 1.115, n=10)
    quiet, busy = [0.02] * 10, [0.6] * 10
    b = result_from_dict(make_result({"other": base}, busy={"other": quiet}))
    c = result_from_dict(make_result({"other": cand}, busy={"other": busy}))
    e = C.compare_results(b, c).entries[0]
    assert e.verdict == C.INSUFFICIENT and "10 contended rounds left out" in e.note and "bench ab" in e.note
    e = C.compare_results(b, c, include_contended=True).entries[0]
    assert e.verdict == C.INSUFFICIENT and "withheld" in e.note and "busier" in e.note
    assert 0.09 < e.change < 0.14                       # the estimate is still reported
    # a neighbour below the contention limit but steadily there: left in, still gated
    c2 = result_from_dict(make_result({"other": cand}, busy={"other": [0.2] * 10}))
    b2 = result_from_dict(make_result({"other": base}, busy={"other": [0.0] * 10}))
    assert C.compare_results(b2, c2).entries[0].verdict == C.INSUFFICIENT
    # equal conditions: a real regression
    c3 = result_from_dict(make_result({"other": cand}, busy={"other": quiet}))
    assert C.compare_results(b, c3).entries[0].verdict == C.REGRESSED
    # and without readings (a remote device) the gate has nothing to say
    plain = C.compare_results(result_from_dict(make_result({"other": base})),
                              result_from_dict(make_result({"other": cand})))
    assert plain.entries[0].verdict == C.REGRESSED


def test_gate_is_symmetric_for_improvements():
    r = C.EntryComparison(name="a", verdict=C.IMPROVED, change=-0.2, ci_low=-0.25, ci_high=-0.15)
    assert C.gate_on_load(r, [0.5] * 5, [0.0] * 5).verdict == C.INSUFFICIENT   # the baseline was busier
    assert C.gate_on_load(r, [0.0] * 5, [0.5] * 5).verdict == C.IMPROVED      # faster despite more load
    u = C.EntryComparison(name="a", verdict=C.UNCHANGED, change=0.0)
    assert C.gate_on_load(u, [0.0], [0.9]) is u


def test_a_machine_busy_throughout_gives_no_verdict_not_unchanged():
    """A constant CPU hog: every round of both runs contended. No verdict, and it says so; it is not
    reported as `unchanged`."""
    rng = np.random.default_rng(10)
    hog = {"a": [0.95] * 12}
    b = result_from_dict(make_result({"a": rounds_around(rng, 5.0)}, busy=hog))
    c = result_from_dict(make_result({"a": rounds_around(rng, 5.0)}, busy=hog))
    comp = C.compare_results(b, c)
    assert [e.verdict for e in comp.entries] == [C.INSUFFICIENT]
    assert "24 contended rounds left out (the device was busy" in comp.entries[0].note
    assert comp.counts() == {C.INSUFFICIENT: 1}
