"""benchmark_model, the TensorFlow Lite / LiteRT benchmark binary: read its text log, build its command.

All its times are **microseconds**; ``ParsedRun`` holds milliseconds. Output forms read (lines with or
without LiteRT's ``INFO: ``/``WARNING: ``/``ERROR: `` prefixes):

- a warm-up block then a steady-state block, each announced by ``Running benchmark for at least N
  iterations and at least S seconds`` (current builds add ``but terminate if exceeding M seconds.``)
  and summarised on the next line as ``count=N first=F curr=C min=A max=B avg=M std=S``; builds whose
  statistics keep every sample append `` p5=P median=Q p95=R``; when every run took the same time the
  line is ``count=N curr=C(all same)``;
- the closing line, current form ``Inference timings in us: Init: I, First inference: F, Warmup (avg):
  W, Inference (avg): A``, or the old form ``Average inference timings in us: Warmup: W, Init: I,
  Inference: A`` (some old builds print ``no stats: A`` for the last item).

The first block is the warm-up (recorded in ``ParsedRun.warmup``), the second the steady state (the
top-level statistics). Without ``median=`` the median is unknown (``median_ms`` is None, the
measurement falls back to the mean). ``Unconsumed cmdline flags`` (a misspelt flag, or one this build
lacks, silently ignored by the tool) is an error, as is any ``ERROR:`` line in a log without a complete
steady-state result, and a log holding more than one benchmark.

Example:
    >>> run = parse("Running benchmark for at least 1 iterations and at least 0.5 seconds\\n"
    ...             "count=20 first=1500 curr=1010 min=1000 max=1500 avg=1040 std=20\\n"
    ...             "Running benchmark for at least 50 iterations and at least 1 seconds\\n"
    ...             "count=50 first=1010 curr=1005 min=990 max=1100 avg=1002.5 std=9\\n")
    >>> run.mean_ms, run.count, run.warmup["runs"]
    (1.0025, 50, 20)
"""

from __future__ import annotations

import math
import re
import shlex

from hwnat.devices.parsers._base import (
    NUM,
    HarnessOutputError,
    HarnessParser,
    ParsedRun,
    Summary,
    last_line,
    numbered_lines,
    require_text,
    to_float,
)
from hwnat.errors import BadInputError

NAME = "benchmark_model"

_PREFIX = re.compile(r"^\s*(?:(INFO|WARNING|WARN|ERROR|VERBOSE|DEBUG):\s*)?")
_RUNNING = re.compile(rf"^Running benchmark for at least (\d+) iterations and at least ({NUM}) seconds"
                      rf"(?: but terminate if exceeding ({NUM}) seconds)?\.?$")
_COUNT = re.compile(r"^count=(\d+)(.*)$")
_TOKEN = re.compile(rf"^(first|curr|min|max|avg|std|p5|median|p95)=({NUM}|nan|-?inf)(\(all_same\))?$")
_CURRENT_END = re.compile(rf"^Inference timings in us: Init: ({NUM}), First inference: ({NUM}), "
                          rf"Warmup \(avg\): ({NUM}|nan), Inference \(avg\): ({NUM}|nan)$")
_OLD_END = re.compile(rf"^Average inference timings in us: Warmup: ({NUM}|nan), Init: ({NUM}), "
                      rf"(Inference|no stats): ({NUM}|nan)$")
_INIT = re.compile(rf"^Initialized session in ({NUM}) ?ms\.?$")
_UNCONSUMED = "Unconsumed cmdline flags"
_FATAL = ("Benchmarking failed", "Failed to invoke", "Failed to allocate", "Failed to initialize")


def _split(line: str) -> tuple[str | None, str]:
    m = _PREFIX.match(line)
    return m.group(1), line[m.end():].strip()


def _parse_count(body: str, lineno: int, line: str) -> dict:
    m = _COUNT.match(body)
    if not m:
        raise HarnessOutputError("malformed benchmark_model statistics line", lineno, line)
    n = int(m.group(1))
    vals: dict = {"count": n}
    for tok in m.group(2).replace("(all same)", "(all_same)").split():
        t = _TOKEN.match(tok)
        if not t:
            raise HarnessOutputError(f"unrecognised item {tok!r} in a benchmark_model statistics line",
                                     lineno, line)
        vals[t.group(1)] = to_float(t.group(2), lineno, line, t.group(1))
        if t.group(3):
            vals["all_same"] = True
    if n == 0:
        raise HarnessOutputError("benchmark_model timed no runs (count=0)", lineno, line)
    if vals.get("all_same"):
        c = vals.get("curr")
        if c is None:
            raise HarnessOutputError("'(all same)' statistics line without curr=", lineno, line)
        for k in ("first", "min", "max", "avg"):
            vals.setdefault(k, c)
        vals.setdefault("std", 0.0)
    elif n == 1 and "avg" not in vals and "curr" in vals:  # a single run prints "count=1 curr=X"
        for k in ("first", "min", "max", "avg"):
            vals.setdefault(k, vals["curr"])
        vals.setdefault("std", 0.0)
    need = [k for k in ("first", "curr", "min", "max", "avg", "std") if k not in vals]
    if need:
        raise HarnessOutputError(f"benchmark_model statistics line lacks {', '.join(need)} (cut short?)",
                                 lineno, line)
    pct = [k for k in ("p5", "median", "p95") if k in vals]
    if pct and len(pct) != 3:
        raise HarnessOutputError("benchmark_model percentiles incomplete (expected p5, median and p95)",
                                 lineno, line)
    return vals


def parse(text: str) -> ParsedRun:
    """Read a benchmark_model log; top-level statistics: the steady-state runs, in milliseconds.

    Raises:
        HarnessOutputError: unconsumed flags, an error before a complete result, no result, a cut-short
            or malformed statistics line, or more than one benchmark in the log.
    """
    require_text(text, NAME)
    blocks: list[dict] = []            # {"at": lineno, "min_runs": n, "min_s": s, "stats": dict | None}
    final: dict | None = None
    layout_end: str | None = None
    warnings: list[str] = []
    errors: list[tuple[int, str]] = []
    extra: dict = {}

    for lineno, raw in numbered_lines(text):
        sev, body = _split(raw)
        if not body:
            continue
        if body.startswith(_UNCONSUMED):
            raise HarnessOutputError("benchmark_model ignored command-line flags it does not know (a typo, "
                                     "or a flag this build lacks); the run did not use them", lineno, raw)
        if sev == "ERROR" or body.startswith(_FATAL):
            errors.append((lineno, raw))
            continue
        if body.startswith("Duplicate flags"):
            warnings.append(body)
            continue
        m = _RUNNING.match(body)
        if m:
            if len(blocks) == 2:
                raise HarnessOutputError("this log holds more than one benchmark (a third 'Running "
                                         "benchmark' block starts here); split it into one file per run",
                                         lineno, raw)
            if blocks and blocks[-1]["stats"] is None:
                b = blocks[-1]
                raise HarnessOutputError("'Running benchmark' block without its count= line (cut short?)",
                                         b["at"], b["line"])
            blocks.append({"at": lineno, "line": raw, "min_runs": int(m.group(1)),
                           "min_s": to_float(m.group(2), lineno, raw, "seconds"),
                           "max_s": float(m.group(3)) if m.group(3) else None, "stats": None})
            continue
        if body.startswith("count="):
            # only the line right after a "Running benchmark" announcement is a run summary; op-profiling
            # tables print other count= lines ("Timings (microseconds): count=...") that are not
            if blocks and blocks[-1]["stats"] is None:
                blocks[-1]["stats"] = _parse_count(body, lineno, raw)
            continue
        if body.startswith(("Inference timings in us", "Average inference timings in us")):
            m = _CURRENT_END.match(body)
            if m:
                layout_end = "current"
                final = {"init_us": m.group(1), "first_us": m.group(2), "warmup_avg_us": m.group(3),
                         "inference_avg_us": m.group(4), "lineno": lineno, "line": raw}
                continue
            m = _OLD_END.match(body)
            if m:
                layout_end = "old"
                final = {"warmup_avg_us": m.group(1), "init_us": m.group(2), "inference_avg_us": m.group(4),
                         "lineno": lineno, "line": raw}
                continue
            raise HarnessOutputError("malformed benchmark_model timings line (cut short?)", lineno, raw)
        m = _INIT.match(body)
        if m:
            extra["init_ms"] = to_float(m.group(1), lineno, raw, "init time")
            continue
        if sev in ("WARNING", "WARN"):
            warnings.append(body)

    steady = blocks[1]["stats"] if len(blocks) == 2 else None
    if steady is None:
        if errors:
            n, line = errors[0]
            raise HarnessOutputError("benchmark_model failed before a steady-state result", n, line)
        if blocks and blocks[-1]["stats"] is None:
            b = blocks[-1]
            raise HarnessOutputError("'Running benchmark' block without its count= line: the log is cut "
                                     "short", b["at"], b["line"])
        if final is None:
            n, line = last_line(text)
            if len(blocks) == 1:
                raise HarnessOutputError("only the warm-up block is present; the steady-state block is "
                                         "missing (log cut short?); last line", n, line)
            raise HarnessOutputError("no benchmark_model result in this text; last line", n, line)
    elif final is None:
        warnings.append("no closing 'Inference timings in us' line: the log may be cut short")
    warnings += [f"error line {n}: {line.strip()}" for n, line in errors]

    warmup: dict = {}
    if blocks:
        b = blocks[0]
        warmup = {"min_runs": b["min_runs"], "min_s": b["min_s"]}
        if b["stats"]:
            s = b["stats"]
            warmup.update(runs=s["count"], first_ms=s["first"] / 1000, mean_ms=s["avg"] / 1000,
                          min_ms=s["min"] / 1000, max_ms=s["max"] / 1000)
    if final is not None:
        fl, fline = final["lineno"], final["line"]
        extra["init_ms"] = to_float(final["init_us"], fl, fline, "Init") / 1000
        if "first_us" in final:
            warmup["first_ms"] = to_float(final["first_us"], fl, fline, "First inference") / 1000
        w = final["warmup_avg_us"]
        if w != "nan":
            warmup.setdefault("mean_ms", to_float(w, fl, fline, "Warmup") / 1000)
    if steady is not None:
        s = steady
        pcts = {5.0: s["p5"] / 1000, 95.0: s["p95"] / 1000} if "median" in s else {}
        summary = Summary(mean_ms=s["avg"] / 1000, median_ms=s["median"] / 1000 if "median" in s else None,
                          min_ms=s["min"] / 1000, max_ms=s["max"] / 1000, std_ms=s["std"] / 1000,
                          percentiles_ms=pcts)
        count = int(s["count"])
        extra.update(first_ms=s["first"] / 1000, curr_ms=s["curr"] / 1000,
                     min_runs=blocks[1]["min_runs"], min_s=blocks[1]["min_s"])
        if layout_end is None:
            layout_end = "current" if blocks[0]["max_s"] is not None else "old"
        layout = layout_end + ("+percentiles" if pcts else "")
        if final is not None and final["inference_avg_us"] != "nan":
            avg = to_float(final["inference_avg_us"], final["lineno"], final["line"], "Inference")
            if not math.isclose(avg, s["avg"], rel_tol=1e-3, abs_tol=0.5):
                raise HarnessOutputError(f"the closing line's inference average ({avg} us) disagrees with "
                                         f"the steady-state block ({s['avg']} us): mixed logs?",
                                         final["lineno"], final["line"])
    else:  # only the closing line survived (e.g. a pasted summary)
        fl, fline = final["lineno"], final["line"]
        if final["inference_avg_us"] == "nan":
            raise HarnessOutputError("benchmark_model reported no inference average", fl, fline)
        summary = Summary(mean_ms=to_float(final["inference_avg_us"], fl, fline, "Inference") / 1000)
        count = None
        layout = f"{layout_end} (summary line only)"
        warnings.append("only the closing 'timings in us' line was found: mean only, no spread")

    return ParsedRun(harness=NAME, version=None, layout=layout, metric="inference",
                     median_ms=summary.median_ms, mean_ms=summary.mean_ms, min_ms=summary.min_ms,
                     max_ms=summary.max_ms, std_ms=summary.std_ms, percentiles_ms=dict(summary.percentiles_ms),
                     count=count, warmup=warmup, warnings=tuple(warnings),
                     metrics={"inference": summary}, extra=extra)


# ---- command line -------------------------------------------------------------------------------

def build_command(model_path: str, runtime, protocol, *, executable: str | None = None) -> list[str]:
    """The benchmark_model argument list for one ``.tflite`` model.

    Mapping: ``runtime.threads`` -> ``--num_threads`` (0: the tool's default, flag left out);
    ``runtime.provider``: ``gpu`` -> ``--use_gpu=true`` (fp16 precision -> ``--gpu_precision_loss_allowed=
    true``), ``nnapi`` -> ``--use_nnapi=true``, anything else (``xnnpack``, ``CPU...``, unset) ->
    ``--use_xnnpack=true``; ``warmup_runs``/``warmup_s`` -> ``--warmup_runs``/``--warmup_min_secs``;
    ``runs > 0``: ``--num_runs=rounds*runs --min_secs=0``; ``runs == 0``: ``--num_runs=rounds
    --min_secs=rounds*min_round_s``; ``cooldown_s`` -> ``--run_delay`` only when ``runtime.options``
    has ``run_delay`` true; op profiling off. ``runtime.options["extra_args"]`` (str) is appended, split
    like a shell would. Pinning to cores (``taskset``) is the adb transport's job, not this command's.

    Example:
        >>> from hwnat.devices.spec import RuntimeSpec
        >>> from hwnat.measure.protocol import Protocol
        >>> build_command("/data/local/tmp/m.tflite", RuntimeSpec(kind="litert", threads=4),
        ...               Protocol(warmup_runs=5, warmup_s=0.5, rounds=5, runs=20))[:3]
        ['benchmark_model', '--graph=/data/local/tmp/m.tflite', '--num_threads=4']
    """
    if not str(model_path).lower().endswith(".tflite"):
        raise BadInputError(f"benchmark_model runs .tflite models; got {model_path!r}")
    exe = executable or runtime.harness_path or "benchmark_model"
    argv = [exe, f"--graph={model_path}"]
    if runtime.threads > 0:
        argv.append(f"--num_threads={runtime.threads}")
    provider = (runtime.provider or "").lower()
    if provider == "gpu":
        argv.append("--use_gpu=true")
        if runtime.precision == "fp16":
            argv.append("--gpu_precision_loss_allowed=true")
    elif provider == "nnapi":
        argv.append("--use_nnapi=true")
    else:
        argv.append("--use_xnnpack=true")
    argv += [f"--warmup_runs={protocol.warmup_runs}", f"--warmup_min_secs={protocol.warmup_s:g}"]
    if protocol.runs > 0:
        argv += [f"--num_runs={protocol.rounds * protocol.runs}", "--min_secs=0"]
    else:
        argv += [f"--num_runs={protocol.rounds}", f"--min_secs={protocol.rounds * protocol.min_round_s:g}"]
    opts = dict(runtime.options)
    if opts.get("run_delay") is True and protocol.cooldown_s > 0:
        argv.append(f"--run_delay={protocol.cooldown_s:g}")
    argv.append("--enable_op_profiling=false")
    extra = opts.get("extra_args", "")
    if not isinstance(extra, str):
        raise BadInputError(f"runtime.options.extra_args: expected a string, got {extra!r}")
    if extra:
        argv += shlex.split(extra)
    return argv


HARNESS = HarnessParser(name=NAME, parse=parse, build_command=build_command, executable="benchmark_model",
                        model_format="tflite", aliases=("tflite", "litert"),
                        description="TensorFlow Lite / LiteRT benchmark_model (times in us)")
