"""Reports of a comparison: a plain-text table (terminal), Markdown (fits ``$GITHUB_STEP_SUMMARY``) and
JUnit XML (one testcase per entry, the numbers as properties)."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

from hwnat.bench.compare import (
    IMPROVED,
    INSUFFICIENT,
    MISSING,
    NEW,
    REGRESSED,
    UNCHANGED,
    Comparison,
    EntryComparison,
)

_MARK = {REGRESSED: "REGRESSED", IMPROVED: "improved", UNCHANGED: "unchanged", INSUFFICIENT: "insufficient data",
         NEW: "new", MISSING: "missing"}


def _ms(v: float | None) -> str:
    return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.2f}")


def _pct(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    return f"{v:+.1%}"


def _ci(e: EntryComparison) -> str:
    if e.ci_low is None or e.ci_high is None:
        return "-"
    return f"{_pct(e.ci_low)} .. {_pct(e.ci_high)}"


def _p(v: float | None) -> str:
    return "-" if v is None else (f"{v:.1e}" if v < 1e-3 else f"{v:.3f}")


def headline(c: Comparison) -> str:
    """One line: the counts and the settings."""
    counts = ", ".join(f"{n} {v}" for v, n in c.counts().items()) or "no entries"
    unit = f"paired per-pass round {c.metric}s" if c.method == "paired" else f"per-round {c.metric}"
    if c.clock != "wall":
        unit += f", {c.clock} clock"
    return (f"suite {c.suite}: {counts} (threshold {c.threshold:.1%}, alpha {c.alpha:g}, "
            f"{unit}, confidence {1 - c.alpha:.0%})")


def _rows(c: Comparison) -> list[list[str]]:
    paired = c.method == "paired"
    return [[e.name, _MARK[e.verdict], _ms(e.baseline_ms), _ms(e.candidate_ms), _pct(e.change), _ci(e),
             _p(e.p_value), str(e.n_baseline) if paired else f"{e.n_baseline}/{e.n_candidate}", e.note]
            for e in c.entries]


_HEAD = ["entry", "verdict", "baseline ms", "candidate ms", "change", "interval", "p", "rounds", "note"]


def _head(c: Comparison) -> list[str]:
    return _HEAD[:7] + ["pairs" if c.method == "paired" else "rounds"] + _HEAD[8:]


def text_table(c: Comparison) -> str:
    """Aligned plain-text table for the terminal."""
    head = _head(c)
    rows = [head] + _rows(c)
    width = [max(len(r[i]) for r in rows) for i in range(len(head) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:-1], width, strict=True)).rstrip() +
             (f"  {r[-1]}" if r[-1] else "") for r in rows]
    lines.insert(1, "  ".join("-" * w for w in width))
    out = [headline(c), ""] + lines
    for w in c.warnings:
        out.append(f"warning: {w}")
    return "\n".join(out)


def markdown(c: Comparison) -> str:
    """GitHub-flavoured Markdown: a headline, a table, environment and warnings."""
    bad = c.regressed
    title = (f"### hwnat bench: {len(bad)} regression{'s' if len(bad) != 1 else ''} "
             f"({', '.join(e.name for e in bad)})" if bad else "### hwnat bench: no regression")
    out = [title, "", headline(c), ""]
    out.append("| " + " | ".join(_head(c)) + " |")
    out.append("|" + "|".join(["---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---"]) + "|")
    for r in _rows(c):
        r[1] = f"**{r[1]}**" if r[1] == _MARK[REGRESSED] else r[1]
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |")
    if c.method == "paired":
        how = (f"Baseline and candidate timed in one job, in pairs (random order per pair). Change: "
               f"Hodges-Lehmann estimate of the per-pass ratio of round {c.metric}s; interval: "
               f"distribution-free {1 - c.alpha:.0%} confidence interval; p: two-sided Wilcoxon "
               f"signed-rank.")
    else:
        how = (f"Change: Hodges-Lehmann estimate of the relative shift of per-round {c.metric}s; interval: "
               f"distribution-free {1 - c.alpha:.0%} confidence interval; p: two-sided Mann-Whitney U.")
    out += ["", how + f" An entry regresses only when p < {c.alpha:g} and the whole interval is above "
            f"+{c.threshold:.1%}.", ""]
    out.append(f"Baseline: `{c.baseline.get('path')}` (commit {c.baseline.get('git_commit') or '?'}, "
               f"{c.baseline.get('created_at') or '?'}); candidate: `{c.candidate.get('path')}` (commit "
               f"{c.candidate.get('git_commit') or '?'}, {c.candidate.get('created_at') or '?'}).")
    if c.env_diff:
        out += ["", "Environment differences:", ""]
        out += [f"- `{k}`: {a!r} -> {b!r}" for k, (a, b) in c.env_diff.items()]
    if c.warnings:
        out += [""] + [f"> warning: {w}" for w in c.warnings]
    return "\n".join(out) + "\n"


def junit_xml(c: Comparison) -> str:
    """JUnit XML: one ``testsuite`` (the bench suite), one ``testcase`` per entry. A regression is a
    ``failure``, a missing entry an ``error``, insufficient data ``skipped``; numbers are properties."""
    failures = len(c.regressed)
    errors = len(c.missing)
    skipped = len(c.by_verdict(INSUFFICIENT))
    ts = ET.Element("testsuite", name=f"hwnat-bench.{c.suite}", tests=str(len(c.entries)),
                    failures=str(failures), errors=str(errors), skipped=str(skipped))
    props = ET.SubElement(ts, "properties")
    for k, v in (("threshold", c.threshold), ("alpha", c.alpha), ("metric", c.metric), ("method", c.method),
                 ("baseline", c.baseline.get("path")), ("candidate", c.candidate.get("path")),
                 ("baseline_commit", c.baseline.get("git_commit")),
                 ("candidate_commit", c.candidate.get("git_commit"))):
        ET.SubElement(props, "property", name=k, value="" if v is None else str(v))
    for e in c.entries:
        tc = ET.SubElement(ts, "testcase", classname=f"hwnat.bench.{c.suite}", name=e.name,
                           time=f"{(e.candidate_ms or 0) / 1000:.6f}")
        p = ET.SubElement(tc, "properties")
        for k, v in e.to_dict().items():
            if k in ("name",):
                continue
            ET.SubElement(p, "property", name=k, value="" if v is None else str(v))
        msg = (f"{e.name}: {_pct(e.change)} (interval {_ci(e)}, p={_p(e.p_value)}), "
               f"{_ms(e.baseline_ms)} -> {_ms(e.candidate_ms)} ms")
        if e.verdict == REGRESSED:
            ET.SubElement(tc, "failure", message=f"regressed {msg}", type="regression").text = e.note or msg
        elif e.verdict == MISSING:
            ET.SubElement(tc, "error", message=f"{e.name}: missing from the candidate", type="missing")
        elif e.verdict == INSUFFICIENT:
            ET.SubElement(tc, "skipped", message=f"insufficient data: {e.note}")
        sysout = ET.SubElement(tc, "system-out")
        sysout.text = f"{e.verdict}: {msg}" + (f"; {e.note}" if e.note else "")
    root = ET.Element("testsuites", name="hwnat-bench", tests=ts.get("tests"), failures=str(failures),
                      errors=str(errors), skipped=str(skipped))
    root.append(ts)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
