"""What every harness parser returns: ``ParsedRun`` (a frozen summary of one harness run) and the
``HarnessParser`` record the registry hands out; plus the small helpers the parsers share.

A parser is a pure function ``parse(text) -> ParsedRun``: no I/O, no clock, no globals. Anything it
cannot read with certainty is a ``HarnessOutputError`` (a ``BadInputError``, exit code 2) that names
the 1-based line and quotes it.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from hwnat.errors import BadInputError
from hwnat.measure.stats import Measurement

#: a decimal number as C++ streams print it: 12, 0.5, .5, 1.2e+06 (also inf/nan, rejected later)
NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"


class HarnessOutputError(BadInputError):
    """A harness's output could not be read: unrecognised, malformed, truncated or a failed run.

    Attributes:
        lineno: 1-based line number of the offending line (0 when the whole text is at fault).
        line: the offending line, verbatim (without its newline).
    """

    def __init__(self, message: str, lineno: int = 0, line: str = ""):
        self.reason = message
        self.lineno = lineno
        self.line = line
        where = f"line {lineno}: " if lineno else ""
        quoted = f": {line.strip()[:200]!r}" if line.strip() else ""
        super().__init__(f"{where}{message}{quoted}")


@dataclass(frozen=True)
class Summary:
    """Statistics of one timed quantity as a harness printed them (milliseconds; ``None``: not printed).

    Attributes:
        mean_ms, median_ms, min_ms, max_ms, std_ms: the statistics.
        percentiles_ms: percentile (e.g. ``90.0``, ``99.9``) -> value.
    """

    mean_ms: float | None = None
    median_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    percentiles_ms: dict[float, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedRun:
    """One harness run, read from its text output. All times in milliseconds.

    The top-level statistics describe ``metric`` (e.g. trtexec's ``gpu_compute``); ``metrics`` holds
    every quantity the harness printed, so ``with_metric("latency")`` can switch to another one.

    Attributes:
        harness: registry name of the harness (``trtexec``, ``benchmark_model``, ``onnxruntime_perf_test``).
        version: harness/runtime version where the output states it, else ``None``.
        layout: which documented output form was recognised (e.g. ``"8.6+"``, ``"current"``).
        metric: the quantity the top-level statistics describe.
        median_ms, mean_ms, min_ms, max_ms, std_ms: statistics of ``metric`` (``None``: not printed).
        percentiles_ms: percentile -> ms for ``metric`` (e.g. ``{90.0: 1.2, 99.0: 1.4}``).
        count: number of timed (steady-state) runs, where printed.
        warmup: what the output says about warm-up, e.g. ``{"runs": 15, "mean_ms": 34.8}``.
        warnings: harness warnings (trtexec's instability warning among them) and parser notes.
        samples_ms: raw per-iteration samples when the output has them (else empty).
        group_means_ms: means of consecutive groups of runs (trtexec's "Average on N runs" lines).
        unstable: the harness itself flagged the timing as unstable.
        cv: coefficient of variation the harness reported (a fraction), else ``None``.
        metrics: every quantity printed: name -> ``Summary``.
        extra: other numbers printed (throughput, walltime, init time...), plain data.

    Example:
        >>> run = ParsedRun("demo", None, "x", "inference", median_ms=2.0, mean_ms=2.1, count=50)
        >>> round(run.to_measurement().median_ms, 3)
        2.0
    """

    harness: str
    version: str | None
    layout: str
    metric: str
    median_ms: float | None = None
    mean_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    percentiles_ms: dict[float, float] = field(default_factory=dict)
    count: int | None = None
    warmup: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    samples_ms: tuple[float, ...] = ()
    group_means_ms: tuple[float, ...] = ()
    unstable: bool = False
    cv: float | None = None
    metrics: dict[str, Summary] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.median_ms is None and self.mean_ms is None and not self.samples_ms:
            raise ValueError("a ParsedRun needs a median, a mean or samples")

    @property
    def latency_ms(self) -> float:
        """The central value a dataset or table stores: the median (of the samples, where there are
        samples), else the printed median, else the printed mean."""
        if self.samples_ms:
            return float(statistics.median(self.samples_ms))
        return float(self.median_ms if self.median_ms is not None else self.mean_ms)

    def with_metric(self, name: str) -> ParsedRun:
        """A copy whose top-level statistics describe another printed quantity. The harness's own
        instability flag and CV stay with the quantity they were computed on (``extra["cv_metric"]``).

        Raises:
            BadInputError: the output did not print ``name`` (the message lists what it did print).
        """
        if name == self.metric:
            return self
        if name not in self.metrics:
            raise BadInputError(f"{self.harness} output has no {name!r} timings; expected one of: "
                                f"{', '.join(sorted(self.metrics)) or '(none)'}")
        s = self.metrics[name]
        flagged = name == self.extra.get("cv_metric")
        return replace(self, metric=name, median_ms=s.median_ms, mean_ms=s.mean_ms, min_ms=s.min_ms,
                       max_ms=s.max_ms, std_ms=s.std_ms, percentiles_ms=dict(s.percentiles_ms),
                       samples_ms=(), group_means_ms=tuple(self.extra.get("group_means_ms", {}).get(name, ())),
                       cv=self.extra.get("harness_cv") if flagged else None,
                       unstable=bool(self.extra.get("harness_unstable")) if flagged else False)

    def with_samples(self, samples_ms) -> ParsedRun:
        """A copy carrying raw per-iteration samples (e.g. from trtexec's ``--exportTimes`` file)."""
        return replace(self, samples_ms=tuple(float(x) for x in samples_ms))

    def to_dict(self) -> dict:
        """Plain data (percentile keys become strings such as ``"p99.9"``; NaN never appears)."""
        return {
            "harness": self.harness, "version": self.version, "layout": self.layout,
            "metric": self.metric, "median_ms": self.median_ms, "mean_ms": self.mean_ms,
            "min_ms": self.min_ms, "max_ms": self.max_ms, "std_ms": self.std_ms,
            "percentiles_ms": _pkeys(self.percentiles_ms), "count": self.count,
            "warmup": dict(self.warmup), "warnings": list(self.warnings),
            "samples_ms": list(self.samples_ms), "group_means_ms": list(self.group_means_ms),
            "unstable": self.unstable, "cv": self.cv,
            "metrics": {k: {"mean_ms": s.mean_ms, "median_ms": s.median_ms, "min_ms": s.min_ms,
                            "max_ms": s.max_ms, "std_ms": s.std_ms,
                            "percentiles_ms": _pkeys(s.percentiles_ms)} for k, s in self.metrics.items()},
            "extra": dict(self.extra),
        }

    def to_measurement(self, tolerance: float = 0.10) -> Measurement:
        """This run as a ``Measurement``.

        With raw samples: ``Measurement.from_rounds`` over them (one round). Without (the usual case:
        harnesses print summaries only), a *summary-only* Measurement is built here from the printed
        statistics: ``rounds_ms`` is empty, ``round_medians_ms`` is ``(median,)``, ``n`` is the printed
        count (0 when unknown), and a statistic the harness did not print is NaN (``p10_ms`` and
        ``iqr_ms`` always, ``p90_ms`` unless a 90th percentile was printed, ``cv`` unless a standard
        deviation or a CV was printed). ``extra["summary_only"]`` is True, and ``extra`` keeps min/max/
        mean/percentiles/warm-up/warnings. ``unstable`` is the harness's own flag, or, with trtexec's
        group means, their spread ``(max - min) / median`` above ``tolerance`` (the protocol's rule).
        The median falls back to the mean when only a mean was printed (``extra["median_from"]``).
        """
        extra = {"source": "harness_log", "harness": self.harness, "version": self.version,
                 "layout": self.layout, "metric": self.metric, "min_ms": self.min_ms,
                 "max_ms": self.max_ms, "mean_ms": self.mean_ms, "std_ms": self.std_ms,
                 "percentiles_ms": _pkeys(self.percentiles_ms), "count": self.count,
                 "warmup": dict(self.warmup), "warnings": list(self.warnings)}
        if self.group_means_ms:
            extra["group_means_ms"] = list(self.group_means_ms)
        if self.samples_ms:
            m = Measurement.from_rounds([self.samples_ms], tolerance, extra)
            if self.unstable and not m.unstable:
                m = replace(m, unstable=True)
            return m
        nan = math.nan
        median = self.median_ms
        if median is None:
            median = self.mean_ms
            extra["median_from"] = "mean"
        mean = self.mean_ms if self.mean_ms is not None else median
        if self.cv is not None:
            cv = self.cv
        elif self.std_ms is not None and mean:
            cv = self.std_ms / mean
        else:
            cv = nan
        unstable = self.unstable
        if len(self.group_means_ms) > 1 and median:
            spread = (max(self.group_means_ms) - min(self.group_means_ms)) / median
            extra["group_spread"] = spread
            unstable = unstable or spread > tolerance
        extra["summary_only"] = True
        return Measurement(rounds_ms=(), median_ms=float(median), mean_ms=float(mean),
                           p10_ms=float(self.percentiles_ms.get(10.0, nan)),
                           p90_ms=float(self.percentiles_ms.get(90.0, nan)), iqr_ms=nan, cv=float(cv),
                           round_medians_ms=(float(median),), unstable=bool(unstable),
                           n=int(self.count or 0), extra=extra)


@dataclass(frozen=True)
class HarnessParser:
    """A registered harness: how to read its output and how to invoke it.

    Attributes:
        name: registry name.
        parse: ``parse(text) -> ParsedRun`` (pure).
        build_command: ``build_command(model_path, runtime, protocol, **kw) -> list[str]`` (pure).
        executable: the harness's usual executable name.
        model_format: file format the harness runs (``"onnx"``, ``"tflite"``).
        aliases: other names ``get_parser`` accepts (e.g. ``"ort"``).
        description: one line for listings.
    """

    name: str
    parse: Callable[[str], ParsedRun]
    build_command: Callable[..., list[str]]
    executable: str
    model_format: str
    aliases: tuple[str, ...] = ()
    description: str = ""


# ---- helpers shared by the parsers --------------------------------------------------------------

def numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(1-based line number, line without newline)`` pairs; ``\\r`` from Windows/adb is dropped."""
    for i, line in enumerate(text.splitlines(), 1):
        yield i, line.rstrip("\r")


def to_float(s: str, lineno: int, line: str, what: str) -> float:
    """A finite float, or a ``HarnessOutputError`` naming the line."""
    try:
        v = float(s)
    except ValueError:
        raise HarnessOutputError(f"{what}: {s!r} is not a number", lineno, line) from None
    if not math.isfinite(v):
        raise HarnessOutputError(f"{what} is {s} (no timed runs?)", lineno, line)
    return v


def require_text(text: str, harness: str) -> None:
    """Reject empty or non-text input up front."""
    if not isinstance(text, str):
        raise BadInputError(f"{harness} output must be text, got {type(text).__name__}")
    if not text.strip():
        raise HarnessOutputError(f"empty {harness} output")
    if "\x00" in text:
        raise HarnessOutputError(f"{harness} output contains NUL bytes: not a text log")


def last_line(text: str) -> tuple[int, str]:
    """The last non-empty line and its number (what a truncation error quotes)."""
    last = (0, "")
    for i, line in numbered_lines(text):
        if line.strip():
            last = (i, line)
    return last


def pct_key(p: float) -> str:
    """``90.0 -> "p90"``, ``99.9 -> "p99.9"``."""
    return f"p{p:g}"


def _pkeys(d: dict[float, float]) -> dict[str, float]:
    return {pct_key(k): v for k, v in sorted(d.items())}


NUM_RE = re.compile(NUM)
