"""trtexec, TensorRT's command-line benchmark: read its text log, build its command line.

Output forms read (each line with or without trtexec's ``[MM/DD/YYYY-HH:MM:SS] [I] `` prefix):

- **7.x**: trace lines ``Average on 10 runs - GPU latency: X ms - Host latency: Y ms (end to end Z ms,
  enqueue W ms)``, then blocks headed ``Host Latency`` / ``Enqueue Time`` / ``GPU Compute`` with lines
  ``min: X ms (end to end Y ms)``, ``median: ...``, ``percentile: X ms at 99% (...)``, ``throughput: N
  qps``, ``walltime: S s``, ``total compute time: S s``.
- **8.0-8.5**: ``=== Performance summary ===`` then ``Throughput: N qps``, ``Latency: min = X ms, max =
  X ms, mean = X ms, median = X ms, percentile(99%) = X ms``, the same for ``End-to-End Host Latency``
  (8.0-8.2), ``Enqueue Time``, ``H2D Latency``, ``GPU Compute Time``, ``D2H Latency``, then ``Total
  Host Walltime: S s``, ``Total GPU Compute Time: S s`` and ``[W] * ...`` warnings, among them ``* GPU
  compute time is unstable, with coefficient of variance = X%.``
- **8.6+ and 10.x**: the same summary with several percentiles: ``percentile(90%) = ..., percentile(95%)
  = ..., percentile(99%) = ...``; version banner ``&&&& RUNNING TensorRT.trtexec [TensorRT v100200]``.
- **11.x and later**: not read. No performance summary printed by a TensorRT 11 trtexec has been checked
  against this parser (and 11.x removed the ``--fp16``/``--int8`` flags ``build_command`` passes), so a
  log under a ``TensorRT version: 11.x`` / ``[TensorRT v110000]`` banner fails loudly rather than being
  read with rules that were never verified for it.

The top-level statistics are ``GPU Compute Time`` (the kernels' time, what a latency table models);
``ParsedRun.with_metric("latency")`` switches to host latency (H2D + compute + D2H). trtexec prints no
per-iteration samples; ``--exportTimes`` writes them to a JSON file that ``samples_from_times_json``
reads.

Example:
    >>> run = parse("[I] === Performance summary ===\\n[I] Throughput: 500 qps\\n"
    ...             "[I] Latency: min = 2 ms, max = 3 ms, mean = 2.2 ms, median = 2.1 ms, percentile(99%) = 2.9 ms\\n"
    ...             "[I] Enqueue Time: min = 0.1 ms, max = 0.2 ms, mean = 0.1 ms, median = 0.1 ms, percentile(99%) = 0.2 ms\\n"
    ...             "[I] H2D Latency: min = 0 ms, max = 0 ms, mean = 0 ms, median = 0 ms, percentile(99%) = 0 ms\\n"
    ...             "[I] GPU Compute Time: min = 1.9 ms, max = 2.9 ms, mean = 2.0 ms, median = 1.95 ms, percentile(99%) = 2.8 ms\\n"
    ...             "[I] D2H Latency: min = 0 ms, max = 0 ms, mean = 0 ms, median = 0 ms, percentile(99%) = 0 ms\\n"
    ...             "[I] Total Host Walltime: 3.0 s\\n[I] Total GPU Compute Time: 2.9 s\\n")
    >>> run.median_ms, run.layout
    (1.95, '8.0-8.5')
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import PurePosixPath

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

NAME = "trtexec"

_PREFIX = re.compile(r"^\s*(?:\[\d{1,2}/\d{1,2}/\d{4}-\d{1,2}:\d{2}:\d{2}\]\s*)?(?:\[([IWEVF])\]\s?)?")
_BANNER = re.compile(r"^&&&& (RUNNING|PASSED|FAILED) TensorRT\.trtexec(?: \[TensorRT v(\d+)\])?")
_VERSION = re.compile(r"^TensorRT version:\s*(\d+(?:\.\d+)*)")
_WARMUP = re.compile(rf"^Warmup completed (\d+) queries over ({NUM}) ms$")
_TRACE_COUNT = re.compile(rf"^Timing trace has (\d+) queries over ({NUM}) s$")
_TRACE = re.compile(
    rf"^Average on (\d+) runs - GPU latency: ({NUM}) ms - Host latency: ({NUM}) ms "
    rf"\((?:end to end ({NUM}) ms, )?enqueue ({NUM}) ms\)$")
_SUMMARY_HEAD = "=== Performance summary ==="
_METRIC_LINE = re.compile(
    r"^(Latency|End-to-End Host Latency|Enqueue Time|H2D Latency|GPU Compute Time|D2H Latency):\s*(.*)$")
_METRIC_NAMES = {"Latency": "latency", "End-to-End Host Latency": "end_to_end", "Enqueue Time": "enqueue",
                 "H2D Latency": "h2d", "GPU Compute Time": "gpu_compute", "D2H Latency": "d2h"}
_STAT_ITEM = re.compile(rf"^(min|max|mean|median|percentile\(({NUM})%\))\s*=?\s*({NUM}|inf|nan|-?inf) ms$")
_THROUGHPUT = re.compile(rf"^Throughput: ({NUM}) qps$")
_WALLTIME = re.compile(rf"^Total Host Walltime: ({NUM}) s$")
_GPU_TOTAL = re.compile(rf"^Total GPU Compute Time: ({NUM}) s$")
_UNSTABLE = re.compile(rf"GPU compute time is unstable, with coefficient of variance = ({NUM})%")
# 7.x blocks
_BLOCKS = {"Host Latency": "latency", "Enqueue Time": "enqueue", "GPU Compute": "gpu_compute"}
_B_STAT = re.compile(rf"^(min|max|mean|median): ({NUM}) ms(?: \(end to end ({NUM}) ms\))?$")
_B_PCT = re.compile(rf"^percentile: ({NUM}) ms at ({NUM})%(?: \(end to end ({NUM}) ms at ({NUM})%\))?$")
_B_OTHER = re.compile(rf"^(throughput: ({NUM}) qps|walltime: ({NUM}) s|total compute time: ({NUM}) s)$")
_B_STATLIKE = re.compile(r"^(min|max|mean|median|percentile|throughput|walltime|total compute time)\b")

#: summary lines every 8.0+ log prints; a summary missing one was cut short
_REQUIRED_8 = ("latency", "enqueue", "h2d", "gpu_compute", "d2h")


def _split(line: str) -> tuple[str | None, str]:
    m = _PREFIX.match(line)
    return m.group(1), line[m.end():].strip()


def _version_from_code(code: str) -> str:
    """``8601 -> 8.6.1``, ``100200 -> 10.2.0``, ``110000 -> 11.0.0`` (TensorRT's NV_TENSORRT_VERSION)."""
    n = int(code)
    if n >= 100000:
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def _parse_stats(body: str, lineno: int, line: str, label: str) -> Summary:
    vals: dict[str, float] = {}
    pcts: dict[float, float] = {}
    for item in (x.strip() for x in body.split(",")):
        m = _STAT_ITEM.match(item)
        if not m:
            raise HarnessOutputError(f"malformed {label!r} statistics (item {item!r})", lineno, line)
        v = to_float(m.group(3), lineno, line, f"{label} {m.group(1)}")
        if m.group(2) is not None:
            pcts[float(m.group(2))] = v
        else:
            vals[m.group(1)] = v
    missing = [k for k in ("min", "max", "mean", "median") if k not in vals]
    if missing or not pcts:
        raise HarnessOutputError(f"{label!r} line lacks {', '.join(missing) or 'a percentile'} "
                                 "(cut short?)", lineno, line)
    return Summary(mean_ms=vals["mean"], median_ms=vals["median"], min_ms=vals["min"], max_ms=vals["max"],
                   percentiles_ms=pcts)


def parse(text: str) -> ParsedRun:
    """Read a trtexec log (7.x to 10.x; a later version fails loudly). Top-level statistics: GPU Compute Time.

    Raises:
        HarnessOutputError: no performance summary, a malformed or cut-short summary line, a malformed
            trace line, or a run trtexec itself reported as FAILED.
    """
    require_text(text, NAME)
    version: str | None = None
    banner_code: str | None = None
    status: tuple[str, int, str] | None = None
    passed = False
    last_error: tuple[int, str] | None = None
    warmup: dict = {}
    count: int | None = None
    extra: dict = {}
    groups: dict[str, list[float]] = {}
    group_size: int | None = None
    metrics: dict[str, Summary] = {}
    warnings: list[str] = []
    in_summary = False
    summary_at = 0
    block: str | None = None          # 7.x block being read
    block_vals: dict[str, dict] = {}  # 7.x: metric -> {"min":..., "pct": {...}}
    seen_any_trtexec = False

    for lineno, raw in numbered_lines(text):
        sev, body = _split(raw)
        if sev:
            seen_any_trtexec = True
        if not body:
            continue
        if sev == "E" or sev == "F":
            last_error = (lineno, raw)
        m = _BANNER.match(body)
        if m:
            seen_any_trtexec = True
            if m.group(2):
                banner_code = m.group(2)
            if m.group(1) == "FAILED":
                status = ("FAILED", lineno, raw)
            elif m.group(1) == "PASSED":
                passed = True
            continue
        m = _VERSION.match(body)
        if m:
            version = m.group(1)
            continue
        m = _WARMUP.match(body)
        if m:
            warmup = {"runs": int(m.group(1)), "duration_ms": to_float(m.group(2), lineno, raw, "warm-up")}
            continue
        m = _TRACE_COUNT.match(body)
        if m:
            count = int(m.group(1))
            extra["timed_duration_s"] = to_float(m.group(2), lineno, raw, "timing trace")
            continue
        if body.startswith("Average on "):
            m = _TRACE.match(body)
            if not m:
                raise HarnessOutputError("malformed trtexec trace line", lineno, raw)
            group_size = int(m.group(1))
            groups.setdefault("gpu_compute", []).append(to_float(m.group(2), lineno, raw, "GPU latency"))
            groups.setdefault("latency", []).append(to_float(m.group(3), lineno, raw, "host latency"))
            if m.group(4) is not None:
                groups.setdefault("end_to_end", []).append(to_float(m.group(4), lineno, raw, "end to end"))
            groups.setdefault("enqueue", []).append(to_float(m.group(5), lineno, raw, "enqueue"))
            continue
        if body == _SUMMARY_HEAD:
            if summary_at or block_vals:
                raise HarnessOutputError("a second performance summary: this log holds more than one "
                                         "trtexec run; split it", lineno, raw)
            in_summary, summary_at, block = True, lineno, None
            continue

        # verbose metric explanations ("Latency: the summation of ...") and the per-layer profile
        # follow the summary under their own "=== ... ===" headers; they are prose, not numbers
        if in_summary and body.startswith("=== "):
            in_summary = False
            continue
        if in_summary and sev == "V":
            continue
        if in_summary:
            if sev == "W" or body.startswith("* "):
                if body.startswith("*") or not warnings:
                    warnings.append(body.lstrip("* ").strip())
                else:
                    warnings[-1] += " " + body
                continue
            m = _METRIC_LINE.match(body)
            if m:
                metrics[_METRIC_NAMES[m.group(1)]] = _parse_stats(m.group(2), lineno, raw, m.group(1))
                continue
            for rx, key in ((_THROUGHPUT, "throughput_qps"), (_WALLTIME, "walltime_s"),
                            (_GPU_TOTAL, "total_gpu_compute_s")):
                m = rx.match(body)
                if m:
                    extra[key] = to_float(m.group(1), lineno, raw, key)
                    break
            else:
                if re.match(r"^(Throughput|Total Host Walltime|Total GPU Compute Time)\b", body):
                    raise HarnessOutputError("malformed trtexec summary line", lineno, raw)
            continue

        # 7.x blocks
        if body in _BLOCKS:
            if summary_at or _BLOCKS[body] in block_vals:
                raise HarnessOutputError("a second timing summary: this log holds more than one trtexec "
                                         "run; split it", lineno, raw)
            block = _BLOCKS[body]
            block_vals[block] = {"pct": {}, "e2e": {}, "e2e_pct": {}, "at": lineno}
            continue
        if block is not None:
            bv = block_vals[block]
            m = _B_STAT.match(body)
            if m:
                bv[m.group(1)] = to_float(m.group(2), lineno, raw, f"{block} {m.group(1)}")
                if m.group(3) is not None:
                    bv["e2e"][m.group(1)] = to_float(m.group(3), lineno, raw, "end to end")
                continue
            m = _B_PCT.match(body)
            if m:
                bv["pct"][float(m.group(2))] = to_float(m.group(1), lineno, raw, f"{block} percentile")
                if m.group(3) is not None:
                    bv["e2e_pct"][float(m.group(4))] = to_float(m.group(3), lineno, raw, "end to end")
                continue
            m = _B_OTHER.match(body)
            if m:
                if m.group(2) is not None:
                    extra["throughput_qps"] = to_float(m.group(2), lineno, raw, "throughput")
                elif m.group(3) is not None:
                    extra["walltime_s"] = to_float(m.group(3), lineno, raw, "walltime")
                else:
                    extra["total_gpu_compute_s"] = to_float(m.group(4), lineno, raw, "total compute time")
                continue
            if _B_STATLIKE.match(body):
                raise HarnessOutputError(f"malformed trtexec 7.x {block!r} line", lineno, raw)
            block = None

    if status is not None:
        why = f" (last error: {last_error[1].strip()!r})" if last_error else ""
        raise HarnessOutputError(f"trtexec reported the run as FAILED{why}", status[1], status[2])

    if version is None and banner_code:
        version = _version_from_code(banner_code)
    major_minor = tuple(int(x) for x in version.split(".")[:2]) if version else None

    if summary_at:
        missing = [k for k in _REQUIRED_8 if k not in metrics]
        missing += [k for k in ("walltime_s", "total_gpu_compute_s") if k not in extra]
        if missing:
            n, line = last_line(text)
            raise HarnessOutputError(f"trtexec performance summary (line {summary_at}) is incomplete: no "
                                     f"{', '.join(missing)}; the log looks cut short after", n, line)
        many_pcts = len(metrics["gpu_compute"].percentiles_ms) > 1
        if major_minor is None:
            layout = "8.6+" if many_pcts else "8.0-8.5"
        elif major_minor[0] >= 11:
            raise HarnessOutputError(f"a TensorRT {version} trtexec log: this parser reads trtexec 7.x-10.x "
                                     "output only (no 11.x output has been verified against it)", summary_at, "")
        elif major_minor[0] >= 10:
            layout = "10.x"
        elif major_minor >= (8, 6):
            layout = "8.6+"
        elif major_minor[0] >= 8:
            layout = "8.0-8.5"
        else:
            raise HarnessOutputError(f"a TensorRT {version} log with an 8.x-style performance summary is "
                                     "not a documented trtexec output form", summary_at, "")
    elif block_vals:
        for name, need in (("latency", ("min", "max", "mean", "median")),
                           ("gpu_compute", ("min", "max", "mean", "median"))):
            bv = block_vals.get(name)
            lacking = [k for k in need if bv is None or k not in bv]
            if bv is not None and not bv["pct"]:
                lacking.append("percentile")
            if lacking:
                n, line = last_line(text)
                head = {"latency": "Host Latency", "gpu_compute": "GPU Compute"}[name]
                raise HarnessOutputError(f"trtexec 7.x summary has no complete {head!r} block (missing "
                                         f"{', '.join(lacking)}); the log looks cut short after", n, line)
        for name, bv in block_vals.items():
            metrics[name] = Summary(mean_ms=bv.get("mean"), median_ms=bv.get("median"), min_ms=bv.get("min"),
                                    max_ms=bv.get("max"), percentiles_ms=dict(bv["pct"]))
            if name == "latency" and bv["e2e"]:
                e = bv["e2e"]
                metrics["end_to_end"] = Summary(mean_ms=e.get("mean"), median_ms=e.get("median"),
                                                min_ms=e.get("min"), max_ms=e.get("max"),
                                                percentiles_ms=dict(bv["e2e_pct"]))
        layout = "7.x"
    else:
        n, line = last_line(text)
        what = "trtexec log" if seen_any_trtexec else "text (not trtexec output?)"
        raise HarnessOutputError(f"no performance summary in this {what}; last line", n, line)

    if (summary_at or block_vals) and not passed and banner_code is not None:
        warnings.append("no '&&&& PASSED' line after the summary: the log may be cut short")
    cv = None
    unstable = False
    for w in warnings:
        m = _UNSTABLE.search(w)
        if m:
            unstable, cv = True, float(m.group(1)) / 100.0
    extra.update(cv_metric="gpu_compute", harness_cv=cv, harness_unstable=unstable,
                 group_means_ms={k: list(v) for k, v in groups.items()}, passed=passed)
    if group_size is not None:
        extra["runs_per_group"] = group_size
    g = metrics["gpu_compute"]
    return ParsedRun(harness=NAME, version=version, layout=layout, metric="gpu_compute",
                     median_ms=g.median_ms, mean_ms=g.mean_ms, min_ms=g.min_ms, max_ms=g.max_ms,
                     std_ms=None, percentiles_ms=dict(g.percentiles_ms), count=count, warmup=warmup,
                     warnings=tuple(warnings), group_means_ms=tuple(groups.get("gpu_compute", ())),
                     unstable=unstable, cv=cv, metrics=metrics, extra=extra)


#: --exportTimes JSON keys per metric
_TIMES_KEYS = {"gpu_compute": "computeMs", "latency": "latencyMs", "end_to_end": "endToEndMs",
               "h2d": "h2dMs", "d2h": "d2hMs"}


def samples_from_times_json(text: str, metric: str = "gpu_compute", skip: int = 0) -> tuple[float, ...]:
    """Per-iteration samples (ms) from the JSON file trtexec's ``--exportTimes=FILE`` writes.

    Args:
        text: the file's content: a list of objects with ``computeMs``, ``latencyMs``, ... per query.
        metric: ``gpu_compute`` (default), ``latency``, ``end_to_end``, ``h2d``, ``d2h`` or ``enqueue``.
        skip: leading entries to drop; pass the warm-up count (``ParsedRun.warmup["runs"]``) for
            trtexec versions whose export includes the warm-up queries.

    Raises:
        HarnessOutputError: not JSON, not a list of timing objects, or the metric's key missing.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise HarnessOutputError(f"trtexec --exportTimes file is not JSON ({e.msg})", e.lineno,
                                 text.splitlines()[e.lineno - 1] if text.splitlines() else "") from None
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise HarnessOutputError("trtexec --exportTimes file should be a list of per-query objects")
    data = data[skip:]
    if not data:
        raise HarnessOutputError("trtexec --exportTimes file has no timed queries")
    out = []
    for i, d in enumerate(data):
        try:
            if metric == "enqueue":
                v = float(d["endEnqMs"]) - float(d["startEnqMs"])
            else:
                v = float(d[_TIMES_KEYS[metric]])
        except KeyError as e:
            if metric not in _TIMES_KEYS and metric != "enqueue":
                raise BadInputError(f"unknown trtexec metric {metric!r}; expected one of: "
                                    f"{', '.join([*_TIMES_KEYS, 'enqueue'])}") from None
            raise HarnessOutputError(f"query {i + skip} of the --exportTimes file has no {e.args[0]!r}") from None
        except (TypeError, ValueError):
            raise HarnessOutputError(f"query {i + skip} of the --exportTimes file has a non-numeric time") from None
        out.append(v)
    return tuple(out)


# ---- command line -------------------------------------------------------------------------------

_BOOL_FLAGS = {"cuda_graph": "--useCudaGraph", "spin_wait": "--useSpinWait",
               "no_data_transfers": "--noDataTransfers"}


def build_command(model_path: str, runtime, protocol, *, executable: str | None = None,
                  input_shapes: dict[str, tuple[int, ...]] | None = None,
                  export_times: str | None = None) -> list[str]:
    """The trtexec argument list for one model under a device's runtime spec and timing protocol.

    Mapping: ``.onnx`` -> ``--onnx=F`` (``.engine``/``.plan``/``.trt`` -> ``--loadEngine=F``);
    precision fp16 -> ``--fp16``, int8 -> ``--int8 --fp16`` (layers without int8 kernels fall back to
    fp16, as deployed engines do); ``warmup_s`` -> ``--warmUp`` (ms); with ``runs > 0``:
    ``--iterations=rounds*runs --duration=0 --avgRuns=runs`` (each trace line is then one round's mean);
    with ``runs == 0``: ``--iterations=rounds --duration=ceil(rounds*min_round_s)`` (at least 1 s) and
    ``--avgRuns=10``. ``runtime.options``: ``cuda_graph``/``spin_wait``/``no_data_transfers`` (bool),
    ``dla_core`` (int, adds ``--allowGPUFallback``), ``device`` (int GPU index), ``dump_profile``
    (bool: ``--dumpProfile --separateProfileRun``), ``extra_args`` (str, split like a shell would);
    other keys belong to other runtimes and are ignored.

    Args:
        model_path: path of the model on the machine that runs trtexec.
        runtime: ``hwnat.devices.spec.RuntimeSpec``.
        protocol: ``hwnat.measure.protocol.Protocol``.
        executable: trtexec to run (default: ``runtime.harness_path`` or ``trtexec``).
        input_shapes: input name -> shape, for models with dynamic dimensions (``--shapes=``).
        export_times: where trtexec writes per-query times (``--exportTimes=``).

    Example:
        >>> from hwnat.devices.spec import RuntimeSpec
        >>> from hwnat.measure.protocol import Protocol
        >>> build_command("m.onnx", RuntimeSpec(kind="tensorrt", precision="fp16"),
        ...               Protocol(warmup_s=0.5, rounds=5, runs=20))[:4]
        ['trtexec', '--onnx=m.onnx', '--fp16', '--warmUp=500']
    """
    exe = executable or runtime.harness_path or "trtexec"
    suffix = PurePosixPath(str(model_path)).suffix.lower()
    if suffix == ".onnx":
        argv = [exe, f"--onnx={model_path}"]
    elif suffix in (".engine", ".plan", ".trt"):
        argv = [exe, f"--loadEngine={model_path}"]
    else:
        raise BadInputError(f"trtexec runs .onnx models or serialized engines (.engine/.plan/.trt); "
                            f"got {model_path!r}")
    if runtime.precision == "fp16":
        argv.append("--fp16")
    elif runtime.precision == "int8":
        argv += ["--int8", "--fp16"]
    argv.append(f"--warmUp={max(0, round(protocol.warmup_s * 1000))}")
    if protocol.runs > 0:
        argv += [f"--iterations={protocol.rounds * protocol.runs}", "--duration=0",
                 f"--avgRuns={protocol.runs}"]
    else:
        seconds = max(1, math.ceil(protocol.rounds * protocol.min_round_s))
        argv += [f"--iterations={protocol.rounds}", f"--duration={seconds}", "--avgRuns=10"]
    opts = dict(runtime.options)
    for key, flag in _BOOL_FLAGS.items():
        if _opt(opts, key, bool, False):
            argv.append(flag)
    if _opt(opts, "dump_profile", bool, False):
        argv += ["--dumpProfile", "--separateProfileRun"]
    dla = _opt(opts, "dla_core", int, None)
    if dla is not None:
        argv += [f"--useDLACore={dla}", "--allowGPUFallback"]
    dev = _opt(opts, "device", int, None)
    if dev is not None:
        argv.append(f"--device={dev}")
    if input_shapes:
        argv.append("--shapes=" + ",".join(f"{name}:{'x'.join(str(int(d)) for d in shape)}"
                                           for name, shape in input_shapes.items()))
    if export_times:
        argv.append(f"--exportTimes={export_times}")
    extra = _opt(opts, "extra_args", str, "")
    if extra:
        argv += shlex.split(extra)
    return argv


def _opt(opts: dict, key: str, typ: type, default):
    if key not in opts:
        return default
    v = opts[key]
    if typ is int and isinstance(v, bool) or not isinstance(v, typ):
        raise BadInputError(f"runtime.options.{key}: expected {typ.__name__} for trtexec, got {v!r}")
    return v


HARNESS = HarnessParser(name=NAME, parse=parse, build_command=build_command, executable="trtexec",
                        model_format="onnx", aliases=("tensorrt",),
                        description="TensorRT trtexec (7.x-10.x)")
