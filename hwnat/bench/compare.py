"""Comparison statistics of two bench results: per entry, a relative change with a distribution-free
confidence interval and a Mann-Whitney U test, and a verdict.

Method (per entry):
  * Unit of analysis: one number per pass (round) -- the median (or p90) of that round's samples. Samples
    inside a round come from one runtime session in one short time window, so they share its memory
    layout and whatever else ran on the machine then; they are not independent, and treating them as
    independent makes p-values far too small. Rounds are separated in time, interleaved with the other
    entries, and each uses a fresh session.
  * Change: the Hodges-Lehmann estimate of the shift between ``log(candidate)`` and ``log(baseline)`` round
    values (the median of all pairwise differences), reported as a relative change ``exp(shift) - 1``.
  * Interval: the distribution-free (Lehmann-Moses) interval for that shift at confidence ``1 - alpha``,
    from order statistics of the pairwise differences with the exact null distribution of U (normal
    approximation for large samples), mapped to the relative scale.
  * Test: two-sided Mann-Whitney U (``scipy.stats.mannwhitneyu``) on the same values.
  * Verdict: ``regressed`` only when ``p < alpha`` AND the interval's lower bound is above ``threshold``;
    ``improved`` symmetrically; ``insufficient data`` when so few rounds exist that no interval at
    ``1 - alpha`` can be formed, or when the load gate withholds a verdict (``gate_on_load``: the slower
    run was measured on a busier machine); otherwise ``unchanged``.

This is the two-run comparison, for quiet dedicated devices. Baseline and candidate timed in one job, in
pairs, are compared by ``hwnat.bench.paired`` with the same verdict rule.

Hodges & Lehmann, "Estimates of location based on rank tests", Ann. Math. Statist. 1963; Lehmann,
"Nonparametrics: Statistical Methods Based on Ranks" (1975), ch. 2 (the interval).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
from scipy import stats as sps

from hwnat.errors import BadInputError

REGRESSED = "regressed"
IMPROVED = "improved"
UNCHANGED = "unchanged"
INSUFFICIENT = "insufficient data"
NEW = "new"
MISSING = "missing"
VERDICTS = (REGRESSED, IMPROVED, UNCHANGED, INSUFFICIENT, NEW, MISSING)

METRICS = ("median", "p90")
#: largest per-side sample size for which the exact null distribution of U is computed
_EXACT_MAX = 80


# ---------------------------------------------------------------------------------------------------
# parsing of user-given settings
# ---------------------------------------------------------------------------------------------------
def parse_threshold(text: str | float) -> float:
    """``"5%"`` -> 0.05; ``"0.05"`` -> 0.05. A plain number above 1 is refused (ambiguous).

    Raises:
        BadInputError: not a percentage or fraction, negative, or absurdly large.
    """
    s = str(text).strip()
    expected = "expected a percentage like 5% or a fraction like 0.05"
    try:
        value = float(s[:-1]) / 100.0 if s.endswith("%") else float(s)
    except ValueError:
        raise BadInputError(f"--threshold: {expected}, got {s!r}") from None
    if not math.isfinite(value) or value < 0:
        raise BadInputError(f"--threshold: {expected} (>= 0), got {s!r}")
    if not s.endswith("%") and value > 1:
        raise BadInputError(f"--threshold: {s!r} is ambiguous; write {s}% for a percentage or "
                            f"{value / 100:g} for a fraction")
    if value > 10:
        raise BadInputError(f"--threshold: {s!r} is more than 1000%; {expected}")
    return value


def parse_alpha(value: float | str) -> float:
    """Significance level in (0, 0.5]."""
    try:
        a = float(value)
    except ValueError:
        raise BadInputError(f"--alpha: expected a number like 0.01, got {value!r}") from None
    if not (0 < a <= 0.5):
        raise BadInputError(f"--alpha: expected a significance level in (0, 0.5], got {value!r}")
    return a


# ---------------------------------------------------------------------------------------------------
# rank statistics
# ---------------------------------------------------------------------------------------------------
@lru_cache(maxsize=256)
def u_null_cdf(m: int, n: int) -> np.ndarray:
    """Exact null CDF of the Mann-Whitney U statistic for sample sizes ``m`` and ``n`` (no ties):
    ``cdf[u] = P(U <= u)``, u = 0..m*n.

    The counts are the coefficients of the Gaussian binomial ``[m+n choose m]_q``, built as
    ``prod_{i=1..m} (1 - q^(n+i)) / (1 - q^i)``; after each factor pair the partial product is itself a
    Gaussian binomial with non-negative coefficients, so float64 stays accurate.

    Example:
        >>> float(u_null_cdf(2, 2)[0])   # 1 of C(4, 2) = 6 orderings has U = 0
        0.16666666666666666
    """
    if m > n:
        m, n = n, m
    size = m * n + 1
    a = np.zeros(size)
    a[0] = 1.0
    for i in range(1, m + 1):
        s = n + i
        if s < size:
            a[s:] = a[s:] - a[:-s].copy()
        for r in range(i):
            a[r::i] = np.cumsum(a[r::i])
    a = np.maximum(a, 0.0)
    cdf = np.cumsum(a) / a.sum()
    cdf.setflags(write=False)
    return cdf


def interval_rank(m: int, n: int, alpha: float) -> int:
    """Rank ``k`` (1-based) such that ``[d_(k), d_(mn+1-k)]`` of the sorted pairwise differences is a
    confidence interval of the shift at level >= ``1 - alpha``; 0 when no such interval exists (too few
    samples)."""
    if m < 1 or n < 1:
        return 0
    if max(m, n) <= _EXACT_MAX:
        cdf = u_null_cdf(m, n)
        # c = largest u with P(U <= u) <= alpha/2; the interval is [d_(c+1), d_(mn-c)]
        c = int(np.searchsorted(cdf, alpha / 2 + 1e-12, side="right")) - 1
        return c + 1
    z = sps.norm.ppf(1 - alpha / 2)
    c = math.floor(m * n / 2 - z * math.sqrt(m * n * (m + n + 1) / 12.0) - 0.5)
    return max(c + 1, 0)


def hodges_lehmann(base: np.ndarray, cand: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Shift of ``cand`` relative to ``base`` (Hodges-Lehmann: median of all pairwise differences
    ``cand_j - base_i``) and its distribution-free ``1 - alpha`` interval; the interval is
    ``(-inf, inf)`` when the samples are too small for one.

    Example:
        >>> hodges_lehmann(np.array([1., 2, 3, 4, 5, 6, 7, 8]), np.array([3., 4, 5, 6, 7, 8, 9, 10]), 0.05)[0]
        2.0
    """
    d = np.sort((np.asarray(cand, float)[None, :] - np.asarray(base, float)[:, None]).ravel())
    est = float(np.median(d))
    k = interval_rank(len(base), len(cand), alpha)
    if k < 1:
        return est, -math.inf, math.inf
    return est, float(d[k - 1]), float(d[len(d) - k])


def mann_whitney_p(base: np.ndarray, cand: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (exact when there are no ties and samples are small)."""
    base, cand = np.asarray(base, float), np.asarray(cand, float)
    ties = len(np.unique(np.concatenate([base, cand]))) < len(base) + len(cand)
    method = "exact" if not ties and max(len(base), len(cand)) <= _EXACT_MAX else "asymptotic"
    return float(sps.mannwhitneyu(cand, base, alternative="two-sided", method=method).pvalue)


# ---------------------------------------------------------------------------------------------------
# per-entry comparison
# ---------------------------------------------------------------------------------------------------
def round_values(rounds_ms, metric: str = "median") -> np.ndarray:
    """One value per round: the round's median or p90 (ms)."""
    if metric not in METRICS:
        raise BadInputError(f"--metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    q = 50 if metric == "median" else 90
    return np.array([np.percentile(np.asarray(r, float), q) for r in rounds_ms if len(r)])


@dataclass(frozen=True)
class EntryComparison:
    """The comparison of one entry. Changes are fractions (0.05 = +5%), latencies in ms."""

    name: str
    verdict: str
    baseline_ms: float | None = None        # median over rounds of the per-round metric
    candidate_ms: float | None = None
    change: float | None = None             # Hodges-Lehmann relative change
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    n_baseline: int = 0                      # units (rounds) per side
    n_candidate: int = 0
    significant: bool = False
    model_changed: bool = False
    note: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("ci_low", "ci_high"):
            if d[k] is not None and not math.isfinite(d[k]):
                d[k] = None
        return d


def compare_samples(name: str, base_units, cand_units, *, threshold: float = 0.05, alpha: float = 0.01,
                    model_changed: bool = False) -> EntryComparison:
    """Compare two sets of independent positive measurements (ms) of one entry.

    Example:
        >>> c = compare_samples("a", [10.0, 10.1, 9.9, 10.2, 10.0, 9.8, 10.1, 10.0],
        ...                          [12.0, 12.1, 11.9, 12.2, 12.0, 11.8, 12.1, 12.0])
        >>> c.verdict, round(c.change, 3)
        ('regressed', 0.2)
    """
    b = np.asarray(base_units, float)
    c = np.asarray(cand_units, float)
    b, c = b[np.isfinite(b) & (b > 0)], c[np.isfinite(c) & (c > 0)]
    common = dict(name=name, n_baseline=len(b), n_candidate=len(c), model_changed=model_changed,
                  baseline_ms=float(np.median(b)) if len(b) else None,
                  candidate_ms=float(np.median(c)) if len(c) else None)
    k = interval_rank(len(b), len(c), alpha)
    if k < 1:
        need = _rounds_needed(alpha)
        change = (common["candidate_ms"] / common["baseline_ms"] - 1
                  if len(b) and len(c) else None)
        return EntryComparison(verdict=INSUFFICIENT, change=change, **common,
                               note=f"{len(b)} vs {len(c)} rounds; alpha={alpha:g} needs at least "
                                    f"{need} per side")
    lb, lc = np.log(b), np.log(c)
    shift, lo, hi = hodges_lehmann(lb, lc, alpha)
    p = mann_whitney_p(lb, lc)
    change, ci_low, ci_high = math.expm1(shift), math.expm1(lo), math.expm1(hi)
    verdict, note = verdict_of(change, ci_low, ci_high, p, threshold, alpha)
    return EntryComparison(verdict=verdict, change=change, ci_low=ci_low, ci_high=ci_high, p_value=p,
                           significant=p < alpha, note=note, **common)


def verdict_of(change: float, ci_low: float, ci_high: float, p: float, threshold: float,
               alpha: float) -> tuple[str, str]:
    """The verdict rule shared by the two-run and the paired comparison: ``regressed`` only when
    ``p < alpha`` and the whole interval lies above ``threshold`` (``improved`` symmetrically); otherwise
    ``unchanged``, with a note when the change is significant but small, or large but not established.

    Returns:
        (verdict, note)
    """
    significant = p < alpha
    if significant and ci_low > threshold:
        return REGRESSED, ""
    if significant and ci_high < -threshold:
        return IMPROVED, ""
    if change > threshold:
        return UNCHANGED, (f"estimate +{change:.1%} is above the threshold but not established "
                           f"(interval {ci_low:+.1%}..{ci_high:+.1%}); more rounds would tell")
    if significant and change > 0:
        return UNCHANGED, f"significant +{change:.1%}, below the {threshold:.0%} threshold"
    return UNCHANGED, ""


def _rounds_needed(alpha: float) -> int:
    for n in range(2, 200):
        if interval_rank(n, n, alpha) >= 1:
            return n
    return 200


# ---------------------------------------------------------------------------------------------------
# comparing two result files
# ---------------------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """Everything ``bench compare`` reports."""

    suite: str
    baseline: dict                     # summary of the baseline result (path, commit, created_at...)
    candidate: dict
    threshold: float
    alpha: float
    metric: str
    entries: list[EntryComparison]
    env_diff: dict = field(default_factory=dict)   # {field: (baseline, candidate)}
    warnings: list[str] = field(default_factory=list)
    #: "two-run" (two result files, Mann-Whitney on rounds) or "paired" (one A/B job, signed-rank on pairs)
    method: str = "two-run"
    #: "wall" (latency) or "cpu" (this process's CPU time per call)
    clock: str = "wall"

    def by_verdict(self, verdict: str) -> list[EntryComparison]:
        return [e for e in self.entries if e.verdict == verdict]

    @property
    def regressed(self) -> list[EntryComparison]:
        return self.by_verdict(REGRESSED)

    @property
    def missing(self) -> list[EntryComparison]:
        return self.by_verdict(MISSING)

    def counts(self) -> dict[str, int]:
        return {v: len(self.by_verdict(v)) for v in VERDICTS if self.by_verdict(v)}

    def to_dict(self) -> dict:
        return {"suite": self.suite, "baseline": self.baseline, "candidate": self.candidate,
                "threshold": self.threshold, "alpha": self.alpha, "metric": self.metric,
                "method": self.method, "clock": self.clock,
                "unit": ("per-pass log ratio of round " if self.method == "paired" else "per-round ")
                        + self.metric, "counts": self.counts(),
                "env_diff": {k: list(v) for k, v in self.env_diff.items()}, "warnings": self.warnings,
                "entries": [e.to_dict() for e in self.entries]}


class EnvironmentMismatch(BadInputError):
    """The two results were measured in environments that are not comparable."""

    def __init__(self, diff: dict):
        self.diff = diff
        parts = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in diff.items()))
        super().__init__(f"baseline and candidate environments differ ({parts}); "
                         "use --allow-env-change to compare anyway")


def compare_results(base, cand, *, threshold: float = 0.05, alpha: float = 0.01, metric: str = "median",
                    allow_env_change: bool = False, include_contended: bool = False,
                    clock: str = "wall") -> Comparison:
    """Compare two ``BenchResult`` s entry by entry (matched by name), on the wall clock (latency) or on
    the CPU clock (``clock="cpu"``: local devices; time waiting for a CPU left out).

    Rounds the run marked ``contended`` (other processes preempted the runtime or kept the CPUs busy) are left
    out unless ``include_contended``; an entry left with too few rounds is ``insufficient data``.

    Raises:
        BadInputError: different suites, or (``EnvironmentMismatch``) different environments unless
            ``allow_env_change``.
    """
    from hwnat.measure.fingerprint import fingerprint_diff

    if metric not in METRICS:
        raise BadInputError(f"--metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    if base.suite.name != cand.suite.name:
        raise BadInputError(f"results are of different suites: baseline {base.source} is suite "
                            f"{base.suite.name!r}, candidate {cand.source} is suite {cand.suite.name!r}")
    diff = fingerprint_diff(base.fingerprint, cand.fingerprint)
    if diff and not allow_env_change:
        raise EnvironmentMismatch(diff)
    warnings = []
    if diff:
        warnings.append("environments differ (compared because of --allow-env-change): " +
                        "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items()))
    proto = {k: (base.protocol.get(k), cand.protocol.get(k))
             for k in sorted(set(base.protocol) | set(cand.protocol))
             if base.protocol.get(k) != cand.protocol.get(k)}
    if proto:
        warnings.append("timing protocols differ: " +
                        "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in proto.items()))
    for label, r in (("baseline", base), ("candidate", cand)):
        if not r.complete:
            warnings.append(f"the {label} run did not finish ({r.source}); its missing rounds count as "
                            "missing data")
        n_cont = sum(len(e.contended_rounds()) for e in r.entries)
        if n_cont:
            n_all = sum(len(e.rounds_ms) for e in r.entries)
            warnings.append(f"the {label} run had {n_cont} of {n_all} rounds contended (another process "
                            "preempted the runtime or kept the CPUs busy); they are "
                            + ("included (--include-contended)" if include_contended else "left out"))
        throttled = [e.name for e in r.entries if e.throttled_rounds()]
        if throttled:
            warnings.append(f"the {label} run saw thermal throttling or frequency drops in: "
                            f"{', '.join(throttled)}")
    if metric == "p90":
        few = min((len(rd) for r in (base, cand) for e in r.entries for rd in e.rounds_ms), default=0)
        if few and few < 10:
            warnings.append(f"metric p90 on rounds of only {few} samples is coarse; raise "
                            "protocol.min_round_s or protocol.runs")
    b_by = {e.name: e for e in base.entries}
    c_by = {e.name: e for e in cand.entries}
    out: list[EntryComparison] = []
    for name in list(b_by) + [n for n in c_by if n not in b_by]:
        be, ce = b_by.get(name), c_by.get(name)
        if ce is None:
            out.append(EntryComparison(name=name, verdict=MISSING, n_baseline=len(be.rounds_ms),
                                       baseline_ms=_median_of(be.rounds_ms, metric),
                                       note="in the baseline, not in the candidate"))
            continue
        if be is None:
            out.append(EntryComparison(name=name, verdict=NEW, n_candidate=len(ce.rounds_ms),
                                       candidate_ms=_median_of(ce.rounds_ms, metric),
                                       note="not in the baseline"))
            continue
        changed = bool(be.model_sha256 and ce.model_sha256 and be.model_sha256 != ce.model_sha256)
        br = be.on_clock(clock) if include_contended else be.clean_rounds_ms(clock)
        cr = ce.on_clock(clock) if include_contended else ce.clean_rounds_ms(clock)
        res = compare_samples(name, round_values(br, metric), round_values(cr, metric),
                              threshold=threshold, alpha=alpha, model_changed=changed)
        res = gate_on_load(res, be.load_scores(include_contended), ce.load_scores(include_contended))
        notes = [res.note] if res.note else []
        dropped = len(be.rounds_ms) - len(br) + len(ce.rounds_ms) - len(cr)
        if dropped:
            notes.append(f"{dropped} contended round{'s' if dropped > 1 else ''} left out"
                         + (" (the device was busy: rerun on a quiet machine, or time baseline and "
                            "candidate in one job with `hwnat bench ab`)" if res.verdict == INSUFFICIENT
                            else ""))
        if changed:
            notes.append("model file differs from the baseline's")
        if len(notes) > (1 if res.note else 0):
            res = EntryComparison(**{**asdict(res), "note": "; ".join(notes)})
        out.append(res)
    return Comparison(suite=base.suite.name, baseline=base.summary(), candidate=cand.summary(),
                      threshold=threshold, alpha=alpha, metric=metric, entries=out, env_diff=diff,
                      warnings=warnings, clock=clock)


#: a two-run verdict is withheld when the slower run's rounds saw this much more load (median of the
#: per-round readings max(wait_frac, busy_frac), ``hwnat.bench.contention``) than the faster run's
LOAD_GATE = 0.10


def gate_on_load(res: EntryComparison, base_load: list[float], cand_load: list[float],
                 gate: float = LOAD_GATE) -> EntryComparison:
    """Withhold a two-run ``regressed`` (``improved``) verdict when the candidate (baseline) run was
    measured on a busier machine than the other: the difference may be the neighbour, not the model.
    The verdict becomes ``insufficient data`` with a note. No readings (remote devices): unchanged.

    Example:
        >>> r = EntryComparison(name="a", verdict=REGRESSED, change=0.11, ci_low=0.10, ci_high=0.15)
        >>> gate_on_load(r, [0.0, 0.02, 0.01], [0.6, 0.7, 0.5]).verdict
        'insufficient data'
    """
    if res.verdict not in (REGRESSED, IMPROVED) or not base_load or not cand_load:
        return res
    b, c = float(np.median(base_load)), float(np.median(cand_load))
    slower, faster = (c, b) if res.verdict == REGRESSED else (b, c)
    if slower - faster <= gate:
        return res
    who = "candidate" if res.verdict == REGRESSED else "baseline"
    note = (f"{res.verdict} {res.change:+.1%} withheld: the {who} run was measured on a busier machine "
            f"(median load {slower:.2f} vs {faster:.2f}); the difference may be the neighbour. Rerun on a "
            "quiet machine, or time both in one job with `hwnat bench ab`")
    return EntryComparison(**{**asdict(res), "verdict": INSUFFICIENT, "note": note})


def _median_of(rounds_ms, metric: str) -> float | None:
    v = round_values(rounds_ms, metric)
    return float(np.median(v)) if len(v) else None
