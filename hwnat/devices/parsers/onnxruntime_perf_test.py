"""onnxruntime_perf_test, ONNX Runtime's benchmark binary: read its text output, build its command line.

Units as printed: the average in **milliseconds**, totals and the latency statistics in **seconds**
(``ParsedRun`` converts to ms). Output forms read:

- 2019 builds: ``Total time cost:T`` (s), ``Total iterations:N``, ``Average time cost:A ms``, ``Total
  run time:R s``, statistics as ``Min Latency is X sec`` (also ``Xsec``);
- 2020+ builds: ``Session creation time cost: S s``, ``First inference time cost: F ms`` (later
  builds), ``Total inference time cost: T s``, ``Total inference requests: N``, ``Average inference time
  cost: A ms``, ``Total inference run time: R s``, ``Number of inferences per second: Q``, ``Avg CPU
  usage: U %``, ``Peak working set size: B bytes``; with ``-s`` (or without a result file) the statistics
  ``Min Latency: X s``, ``Max Latency``, ``P50``, ``P90``, ``P95``, ``P99``, ``P999 Latency``.

The tool warms up with exactly one run (``First inference time cost``), which is all ``warmup`` can
report. ``P50`` is the median; without the statistics only the mean is known. ``Run failed:`` or an
error before the average is an error; so is a statistics block that stops part-way.

Example:
    >>> run = parse("Total inference requests: 200\\nAverage inference time cost: 4.5 ms\\n"
    ...             "Min Latency: 0.004 s\\nMax Latency: 0.006 s\\nP50 Latency: 0.0044 s\\n"
    ...             "P90 Latency: 0.005 s\\nP95 Latency: 0.0052 s\\nP99 Latency: 0.0058 s\\n"
    ...             "P999 Latency: 0.006 s\\n")
    >>> run.median_ms, run.count
    (4.4, 200)
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
    last_line,
    numbered_lines,
    require_text,
    to_float,
)
from hwnat.errors import BadInputError

NAME = "onnxruntime_perf_test"

# label -> (regex, key); values are captured as printed, units applied below
_LINES = [
    (re.compile(rf"^Session creation time cost:\s*({NUM})\s*s$"), "session_creation_s"),
    (re.compile(rf"^First inference time cost:\s*({NUM})\s*ms$"), "first_inference_ms"),
    (re.compile(rf"^Total (?:inference )?time cost:\s*({NUM})(?:\s*s)?$"), "total_time_s"),
    (re.compile(r"^Total (?:inference requests|iterations):\s*(\d+)$"), "count"),
    (re.compile(rf"^Average (?:inference )?time cost:\s*({NUM})\s*ms$"), "mean_ms"),
    (re.compile(rf"^Total (?:inference )?run time:\s*({NUM})\s*s$"), "run_time_s"),
    (re.compile(rf"^Number of inferences per second:\s*({NUM})$"), "inferences_per_s"),
    (re.compile(rf"^Avg CPU usage:\s*({NUM})(?:\s*%)?$"), "avg_cpu_percent"),
    (re.compile(r"^Peak working set size:\s*(\d+)(?:\s*bytes)?$"), "peak_working_set_bytes"),
    (re.compile(r"^Runs:\s*(\d+)$"), "runs"),
]
_LABELS = ("Session creation time cost", "First inference time cost", "Total inference time cost",
           "Total time cost", "Total inference requests", "Total iterations", "Average inference time cost",
           "Average time cost", "Total inference run time", "Total run time",
           "Number of inferences per second", "Avg CPU usage", "Peak working set size", "Runs:")
_REPEATED = ("avg_cpu_percent", "peak_working_set_bytes")
_STAT = re.compile(rf"^(Min|Max|P50|P90|P95|P99|P999) Latency(?::\s*|\s+is\s+)({NUM})\s*(?:s|sec)$")
_STAT_LIKE = re.compile(r"^(Min|Max|P\d+) Latency\b")
_STAT_ORDER = ("Min", "Max", "P50", "P90", "P95", "P99", "P999")
_PCT = {"P50": 50.0, "P90": 90.0, "P95": 95.0, "P99": 99.0, "P999": 99.9}
_FAIL = re.compile(r"^(Run failed:|there is no test (?:input )?data|failed to initialize|Error creating|"
                   r"Failed to compile|.*\[E:onnxruntime)")


def parse(text: str) -> ParsedRun:
    """Read onnxruntime_perf_test output; top-level statistics: per-inference latency in ms.

    Raises:
        HarnessOutputError: a failed run, no average, a malformed known line, or statistics cut short.
    """
    require_text(text, NAME)
    vals: dict[str, float] = {}
    at: dict[str, tuple[int, str]] = {}
    stats: dict[str, float] = {}
    stats_at: list[tuple[int, str]] = []
    failures: list[tuple[int, str]] = []
    for lineno, raw in numbered_lines(text):
        body = raw.strip()
        if not body:
            continue
        if _FAIL.match(body):
            failures.append((lineno, raw))
            continue
        m = _STAT.match(body)
        if m:
            if m.group(1) in stats:
                raise HarnessOutputError("a second set of latency statistics: this text holds more than "
                                         "one run; split it", lineno, raw)
            stats[m.group(1)] = to_float(m.group(2), lineno, raw, f"{m.group(1)} latency")
            stats_at.append((lineno, raw))
            continue
        if _STAT_LIKE.match(body):
            raise HarnessOutputError("malformed onnxruntime_perf_test latency line", lineno, raw)
        for rx, key in _LINES:
            m = rx.match(body)
            if m:
                v = to_float(m.group(1), lineno, raw, key)
                # without a result file the tool repeats CPU usage and working set ("Avg CPU usage:97");
                # any other repeat means several runs were pasted into one text
                if key in vals and not (key in _REPEATED and vals[key] == v):
                    raise HarnessOutputError(f"a second {key!r} line: this text holds more than one run; "
                                             "split it", lineno, raw)
                vals[key] = v
                at[key] = (lineno, raw)
                break
        else:
            if body.startswith(_LABELS):
                raise HarnessOutputError("malformed onnxruntime_perf_test summary line", lineno, raw)

    if "mean_ms" not in vals:
        if failures:
            n, line = failures[0]
            raise HarnessOutputError("onnxruntime_perf_test failed before reporting a result", n, line)
        n, line = last_line(text)
        raise HarnessOutputError("no 'Average inference time cost' line in this onnxruntime_perf_test "
                                 "output (cut short, or not its output?); last line", n, line)
    if stats:
        missing = [k for k in _STAT_ORDER if k not in stats]
        if missing:
            n, line = stats_at[-1]
            raise HarnessOutputError(f"latency statistics stop part-way (no {', '.join(missing)}): cut short "
                                     "after", n, line)
    warnings = [f"error line {n}: {line.strip()}" for n, line in failures]
    if "count" not in vals and "runs" in vals:
        vals["count"] = vals["runs"]
    if "count" in vals and "runs" in vals and vals["count"] != vals["runs"]:
        n, line = at["runs"]
        raise HarnessOutputError(f"'Runs:' disagrees with the request count ({int(vals['count'])}): mixed "
                                 "outputs?", n, line)
    layout = "2020+" if "session_creation_s" in vals or "Average inference time cost" in at["mean_ms"][1] \
        else "2019"
    if stats:
        layout += "/statistics"
    extra = {k: v for k, v in vals.items() if k not in ("mean_ms", "count", "runs", "first_inference_ms")}
    if "peak_working_set_bytes" in extra:
        extra["peak_working_set_bytes"] = int(extra["peak_working_set_bytes"])
    warmup = {"runs": 1}
    if "first_inference_ms" in vals:
        warmup["first_ms"] = vals["first_inference_ms"]
    pcts = {_PCT[k]: stats[k] * 1000 for k in _PCT if k in stats}
    return ParsedRun(harness=NAME, version=None, layout=layout, metric="inference",
                     median_ms=stats["P50"] * 1000 if stats else None, mean_ms=vals["mean_ms"],
                     min_ms=stats["Min"] * 1000 if stats else None,
                     max_ms=stats["Max"] * 1000 if stats else None, std_ms=None, percentiles_ms=pcts,
                     count=int(vals["count"]) if "count" in vals else None, warmup=warmup,
                     warnings=tuple(warnings), extra=extra)


def samples_from_result_file(text: str) -> tuple[float, ...]:
    """Per-run latencies (ms) from the result file onnxruntime_perf_test appends to (its last argument).

    Each run is a line ``model_name,time_cost_s,peak_working_set,cpu_usage,run_index`` (newer builds
    insert a second time column; the first one is used); a blank line ends the runs (statistics may
    follow). A result file holding several invocations yields all their runs: give each run its own file.

    Raises:
        HarnessOutputError: no runs, or a run line without a numeric time.
    """
    out: list[float] = []
    for lineno, raw in numbered_lines(text):
        if not raw.strip():
            if out:
                break
            continue
        parts = raw.split(",")
        if len(parts) < 5:
            raise HarnessOutputError("expected 'model,time_s,peak_bytes,cpu,run' in an onnxruntime_perf_test "
                                     "result file", lineno, raw)
        out.append(to_float(parts[1], lineno, raw, "time cost") * 1000)
    if not out:
        raise HarnessOutputError("no runs in this onnxruntime_perf_test result file")
    return tuple(out)


# ---- command line -------------------------------------------------------------------------------

#: ONNX Runtime provider class name -> perf_test's -e value
_PROVIDERS = {"CPUExecutionProvider": "cpu", "CUDAExecutionProvider": "cuda",
              "TensorrtExecutionProvider": "tensorrt", "OpenVINOExecutionProvider": "openvino",
              "DnnlExecutionProvider": "dnnl", "DmlExecutionProvider": "dml",
              "ACLExecutionProvider": "acl", "ArmNNExecutionProvider": "armnn",
              "NnapiExecutionProvider": "nnapi", "CoreMLExecutionProvider": "coreml",
              "QNNExecutionProvider": "qnn", "XnnpackExecutionProvider": "xnnpack",
              "ROCMExecutionProvider": "rocm", "MIGraphXExecutionProvider": "migraphx"}


def build_command(model_path: str, runtime, protocol, *, executable: str | None = None,
                  result_file: str | None = None) -> list[str]:
    """The onnxruntime_perf_test argument list for one ``.onnx`` (or ``.ort``) model.

    Mapping: ``-m times -r rounds*runs`` (``runs == 0``: ``-m duration -t ceil(rounds*min_round_s)``);
    ``-x threads`` (0: ORT's default); ``-e`` from ``runtime.provider`` (class name such as
    ``CUDAExecutionProvider`` or the short name); precision fp16/int8 with the TensorRT provider adds
    ``-i "trt_fp16_enable|true"`` / ``trt_int8_enable`` (other providers run the model file's own
    precision); ``-s`` prints the latency statistics; ``-I`` binds generated random inputs, so no
    ``test_data_set_0`` folder is needed. Warm-up is fixed at one run by the tool. ``result_file``
    (optional, last) receives one line per run, readable with ``samples_from_result_file``.
    ``runtime.options["extra_args"]`` (str) is inserted before the model, split like a shell would.

    Example:
        >>> from hwnat.devices.spec import RuntimeSpec
        >>> from hwnat.measure.protocol import Protocol
        >>> build_command("m.onnx", RuntimeSpec(threads=2), Protocol(rounds=5, runs=20))
        ['onnxruntime_perf_test', '-m', 'times', '-r', '100', '-x', '2', '-e', 'cpu', '-s', '-I', 'm.onnx']
    """
    if not str(model_path).lower().endswith((".onnx", ".ort")):
        raise BadInputError(f"onnxruntime_perf_test runs .onnx/.ort models; got {model_path!r}")
    exe = executable or runtime.harness_path or "onnxruntime_perf_test"
    if protocol.runs > 0:
        argv = [exe, "-m", "times", "-r", str(protocol.rounds * protocol.runs)]
    else:
        seconds = max(1, math.ceil(protocol.rounds * protocol.min_round_s))
        argv = [exe, "-m", "duration", "-t", str(seconds)]
    argv += ["-x", str(runtime.threads)]
    prov = runtime.provider or "CPUExecutionProvider"
    short = _PROVIDERS.get(prov, prov.lower())
    if short not in _PROVIDERS.values():
        raise BadInputError(f"runtime.provider: onnxruntime_perf_test has no provider {prov!r}; expected one "
                            f"of: {', '.join(sorted(_PROVIDERS))}")
    argv += ["-e", short]
    if short == "tensorrt" and runtime.precision in ("fp16", "int8"):
        argv += ["-i", f"trt_{runtime.precision}_enable|true"]
    argv += ["-s", "-I"]
    extra = dict(runtime.options).get("extra_args", "")
    if not isinstance(extra, str):
        raise BadInputError(f"runtime.options.extra_args: expected a string, got {extra!r}")
    if extra:
        argv += shlex.split(extra)
    argv.append(str(model_path))
    if result_file:
        argv.append(result_file)
    return argv


HARNESS = HarnessParser(name=NAME, parse=parse, build_command=build_command,
                        executable="onnxruntime_perf_test", model_format="onnx", aliases=("ort",),
                        description="ONNX Runtime onnxruntime_perf_test (statistics in s)")
