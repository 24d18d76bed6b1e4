"""Paired comparison of an A/B bench job (``hwnat bench ab``): the baseline's and the candidate's model
files timed back to back in every pass, in a random order, so both see the same neighbour.

Method (per entry):
  * Unit of analysis: one pair per pass, ``d_k = log(candidate round value) - log(baseline round value)``
    (round value = the median, or p90, of that timing's samples). A neighbour that slows the machine for
    seconds slows both halves of a pair and cancels in ``d_k``.
  * Order: which half is timed first is a fair coin per pair. Under "no change" the two halves are
    exchangeable, so each ``d_k`` is as likely to be positive as negative *whatever the neighbour does*:
    the signed-rank test below is then an exact randomization test, and a busy machine cannot raise the
    false-alarm rate above ``alpha / 2`` (it can only widen the interval).
  * Change: the one-sample Hodges-Lehmann estimate of the median of ``d`` (the median of the Walsh
    averages ``(d_i + d_j) / 2, i <= j``), reported as ``exp(shift) - 1``.
  * Interval: the distribution-free (Tukey) interval from order statistics of the Walsh averages with the
    exact null distribution of the Wilcoxon signed-rank statistic (normal approximation above 100 pairs).
  * Test: two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) on ``d``.
  * Verdict: the rule of ``hwnat.bench.compare``: ``regressed`` only when ``p < alpha`` and the whole
    interval lies above ``threshold``; ``insufficient data`` when too few pairs exist for any interval at
    ``1 - alpha`` (8 at alpha = 0.01).

Wilcoxon, "Individual comparisons by ranking methods", Biometrics Bulletin 1945; Hodges & Lehmann,
"Estimates of location based on rank tests", Ann. Math. Statist. 1963; Tukey's Walsh-average interval as
in Hollander, Wolfe & Chicken, "Nonparametric Statistical Methods" (3rd ed., 2014), sec. 3.3.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import stats as sps

from hwnat.bench.compare import (
    INSUFFICIENT,
    METRICS,
    MISSING,
    NEW,
    Comparison,
    EntryComparison,
    round_values,
    verdict_of,
)
from hwnat.errors import BadInputError

#: largest number of pairs for which the exact null distribution of the signed-rank statistic is used
_EXACT_MAX = 100


@lru_cache(maxsize=128)
def signed_rank_null_cdf(n: int) -> np.ndarray:
    """Exact null CDF of the Wilcoxon signed-rank statistic ``T+`` for ``n`` pairs (no ties, no zeros):
    ``cdf[t] = P(T+ <= t)``, t = 0..n(n+1)/2. The counts are the coefficients of ``prod_{i=1..n} (1 + q^i)``.

    Example:
        >>> float(signed_rank_null_cdf(3)[0])   # all three signs negative: 1 of 8
        0.125
    """
    size = n * (n + 1) // 2 + 1
    a = np.zeros(size)
    a[0] = 1.0
    for i in range(1, n + 1):
        a[i:] = a[i:] + a[:-i].copy()
    cdf = np.cumsum(a) / a.sum()
    cdf.setflags(write=False)
    return cdf


def paired_interval_rank(n: int, alpha: float) -> int:
    """Rank ``k`` (1-based) such that ``[w_(k), w_(M+1-k)]`` of the ``M = n(n+1)/2`` sorted Walsh averages
    is a confidence interval of the median difference at level >= ``1 - alpha``; 0 when none exists."""
    if n < 1:
        return 0
    if n <= _EXACT_MAX:
        cdf = signed_rank_null_cdf(n)
        c = int(np.searchsorted(cdf, alpha / 2 + 1e-12, side="right")) - 1
        return c + 1
    z = sps.norm.ppf(1 - alpha / 2)
    mean = n * (n + 1) / 4.0
    sd = math.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
    return max(math.floor(mean - z * sd - 0.5) + 1, 0)


def pairs_needed(alpha: float) -> int:
    """Fewest pairs that give an interval at ``1 - alpha`` (8 at alpha = 0.01)."""
    n = 1
    while paired_interval_rank(n, alpha) < 1:
        n += 1
    return n


def walsh_hodges_lehmann(d: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Median of the Walsh averages of ``d`` and its distribution-free ``1 - alpha`` interval;
    ``(-inf, inf)`` when there are too few values for one.

    Example:
        >>> walsh_hodges_lehmann(np.array([1.0, 2.0, 3.0]), 0.25)[0]
        2.0
    """
    d = np.asarray(d, float)
    i, j = np.triu_indices(len(d))
    w = np.sort((d[i] + d[j]) / 2.0)
    est = float(np.median(w))
    k = paired_interval_rank(len(d), alpha)
    if k < 1:
        return est, -math.inf, math.inf
    return est, float(w[k - 1]), float(w[len(w) - k])


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of ``d`` (exact when small, without ties or zeros)."""
    d = np.asarray(d, float)
    if not np.any(d != 0):
        return 1.0
    nz = d[d != 0]
    ties = len(np.unique(np.abs(nz))) < len(nz)
    method = "exact" if not ties and len(nz) == len(d) and len(d) <= 50 else "approx"
    return float(sps.wilcoxon(d, alternative="two-sided", method=method).pvalue)


def compare_paired(name: str, base_units, cand_units, *, threshold: float = 0.05, alpha: float = 0.01,
                   model_changed: bool = False) -> EntryComparison:
    """Compare paired positive measurements (ms): ``base_units[k]`` and ``cand_units[k]`` were timed
    back to back. Pairs with a missing or non-positive value are dropped.

    Example:
        >>> b = [10.0, 10.4, 9.7, 10.1, 12.0, 10.2, 9.9, 10.3, 11.0, 10.0]
        >>> c = [x * 1.2 * (1 + 0.01 * (-1) ** k) for k, x in enumerate(b)]
        >>> r = compare_paired("a", b, c)
        >>> r.verdict, round(r.change, 2)
        ('regressed', 0.2)
    """
    b = np.asarray(base_units, float)
    c = np.asarray(cand_units, float)
    if b.shape != c.shape:
        raise ValueError(f"{name}: {len(b)} baseline values but {len(c)} candidate values; pairs needed")
    ok = np.isfinite(b) & np.isfinite(c) & (b > 0) & (c > 0)
    b, c = b[ok], c[ok]
    common = dict(name=name, n_baseline=len(b), n_candidate=len(c), model_changed=model_changed,
                  baseline_ms=float(np.median(b)) if len(b) else None,
                  candidate_ms=float(np.median(c)) if len(c) else None)
    d = np.log(c) - np.log(b)
    if paired_interval_rank(len(d), alpha) < 1:
        change = math.expm1(float(np.median(d))) if len(d) else None
        return EntryComparison(verdict=INSUFFICIENT, change=change, **common,
                               note=f"{len(d)} pairs; alpha={alpha:g} needs at least {pairs_needed(alpha)}")
    shift, lo, hi = walsh_hodges_lehmann(d, alpha)
    p = wilcoxon_p(d)
    change, ci_low, ci_high = math.expm1(shift), math.expm1(lo), math.expm1(hi)
    verdict, note = verdict_of(change, ci_low, ci_high, p, threshold, alpha)
    return EntryComparison(verdict=verdict, change=change, ci_low=ci_low, ci_high=ci_high, p_value=p,
                           significant=p < alpha, note=note, **common)


def auto_clock(res) -> str:
    """The clock ``--clock auto`` judges an A/B result on: ``"cpu"`` when the job ran a single-threaded
    runtime on a local device (both halves of every pair have CPU-clock samples), else ``"wall"``.

    On a local single-threaded runtime the process's CPU time is the runtime's compute time without the
    time it waited for a CPU: a neighbour that takes the core for a while adds to the wall time of one
    half of a pair and not to the other, which widens a wall-clock interval several times over on a busy
    machine (benchmarks/bench_false_alarms.py). With more threads CPU time also counts the pool's spinning
    and is not the latency's cost, and remote devices have no CPU-clock samples: wall time there.
    """
    paired = [e for e in res.entries if e.baseline_rounds_ms and e.candidate_rounds_ms]
    single = res.fingerprint.get("threads") == 1
    has_cpu = bool(paired) and all(
        len(e.baseline_cpu_rounds_ms) == len(e.baseline_rounds_ms)
        and len(e.candidate_cpu_rounds_ms) == len(e.candidate_rounds_ms) for e in paired)
    return "cpu" if single and has_cpu else "wall"


def compare_ab(res, *, threshold: float = 0.05, alpha: float = 0.01, metric: str = "median",
               clock: str = "auto") -> Comparison:
    """Judge an A/B result (``hwnat.bench.store.ABResult``) entry by entry with the paired statistics,
    on the wall clock (latency), the CPU clock (``clock="cpu"``, local devices), or ``"auto"``: the CPU
    clock for a local single-threaded runtime, else the wall clock (``auto_clock``).

    Every pair is used, also when the machine was busy: the random order within a pair makes a busy
    neighbour as likely to slow the baseline half as the candidate half, so it widens the interval but
    cannot bias it. Pairs whose halves saw very different load after all retries are counted in a note.
    """
    if metric not in METRICS:
        raise BadInputError(f"--metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    if clock == "auto":
        clock = auto_clock(res)
    out: list[EntryComparison] = []
    for e in res.entries:
        if not e.candidate_rounds_ms:
            out.append(EntryComparison(name=e.name, verdict=MISSING, note="in the baseline suite only"))
            continue
        if not e.baseline_rounds_ms:
            out.append(EntryComparison(name=e.name, verdict=NEW, note="in the candidate suite only"))
            continue
        n = min(len(e.baseline_rounds_ms), len(e.candidate_rounds_ms))
        b = round_values(e.on_clock("baseline", clock)[:n], metric)
        c = round_values(e.on_clock("candidate", clock)[:n], metric)
        changed = e.baseline.model_sha256 != e.candidate.model_sha256
        r = compare_paired(e.name, b, c, threshold=threshold, alpha=alpha, model_changed=changed)
        notes = [r.note] if r.note else []
        if not changed:
            notes.append("identical model files (an A/A control of this job)")
        unbalanced = sum(1 for info in e.pair_info[:n] if info.get("balanced") is False)
        if unbalanced:
            notes.append(f"{unbalanced} of {n} pairs saw unequal load on their two halves (kept: the "
                         "random order makes that noise, not bias)")
        if notes != ([r.note] if r.note else []):
            r = EntryComparison(**{**r.to_dict(), "ci_low": r.ci_low, "ci_high": r.ci_high,
                                   "note": "; ".join(notes)})
        out.append(r)
    warnings = []
    if not res.complete:
        warnings.append(f"the A/B job did not finish ({res.source}); only its finished pairs are compared")
    return Comparison(suite=res.candidate.suite.name, baseline=res.side_summary("baseline"),
                      candidate=res.side_summary("candidate"), threshold=threshold, alpha=alpha,
                      metric=metric, entries=out, warnings=warnings, method="paired", clock=clock)

