"""``hwnat import-log``: bring a latency measured by hand with a native harness (trtexec, benchmark_model,
onnxruntime_perf_test) into hwnat: read its log, print the measurement, add it to a latency dataset CSV.
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

import click

from hwnat.cli._common import echo_json, err, json_option
from hwnat.errors import BadInputError
from hwnat.latency.dataset import add_to_dataset

#: what a dataset column (a device name) may look like when it is not a device file
_COLUMN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")

EXAMPLE = ("\b\nExample:\n  hwnat import-log --harness trtexec trtexec-orin.log --device jetson-orin-nano "
           "--space nasbench201 \\\n    --arch '|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|"
           "nor_conv_1x1~1|skip_connect~2|' --out latency.csv")


def _harness_choices() -> list[str]:
    from hwnat.devices.parsers import list_parsers

    return [*list_parsers(), "ort"]


@click.command("import-log", epilog=EXAMPLE)
@click.option("--harness", "-H", required=True, type=click.Choice(_harness_choices(), case_sensitive=False),
              help="Which tool wrote the log (ort = onnxruntime_perf_test).")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, allow_dash=True))
@click.option("--device", "-d", default=None,
              help="The dataset column: a device name from devices/ (an alias resolves to its device), a "
                   "device YAML path, or any other plain name. Required with --out.")
@click.option("--arch", "-a", default=None, help="Canonical architecture string. Required with --out.")
@click.option("--space", "-s", default=None, help="Search space: check --arch and write its canonical form.")
@click.option("--out", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Latency dataset CSV (arch + one ms column per device) to add the row to; created with a "
                   "header when absent, rewritten atomically.")
@click.option("--metric", default=None,
              help="trtexec: gpu_compute (default), latency (H2D + compute + D2H), end_to_end, enqueue, h2d, "
                   "d2h.")
@click.option("--replace", is_flag=True, help="Overwrite a value already in --out for this arch and device.")
@json_option
def import_log(harness: str, file: Path, device: str | None, arch: str | None, space: str | None,
               out: Path | None, metric: str | None, replace: bool, as_json: bool) -> None:
    """Read a harness log FILE ('-' for stdin), print the latency it reports, and with --out add it to a
    latency dataset as the row ARCH, column DEVICE (milliseconds: the median where the log has one,
    else the mean).

    A log that is cut short, malformed or from a failed run is an error (exit 2) naming the file and the
    line; benchmark_model's "Unconsumed cmdline flags" is one too.
    """
    from hwnat.devices.parsers import HarnessOutputError, get_parser

    if out is not None and (arch is None or device is None):
        raise click.UsageError("--out needs --arch and --device (the row and the column to fill)")
    if space is not None and arch is None:
        raise click.UsageError("--space checks --arch; give --arch too")
    parser = get_parser(harness)
    text = _read_log(file)
    try:
        run = parser.parse(text)
    except HarnessOutputError as e:
        raise BadInputError(f"{_name(file)}: {e}") from None
    if metric is not None:
        run = run.with_metric(metric)
    column = _column(device) if device is not None else None
    if arch is not None:
        arch = _canonical(arch, space)
    value = run.latency_ms
    for w in run.warnings:
        err(f"warning: {_name(file)}: {w}")
    if run.median_ms is None and not run.samples_ms:
        err(f"note: {_name(file)}: the log has no median; using the mean ({value:.6g} ms)")
    action = None
    if out is not None:
        action = add_to_dataset(out, arch, column, value, replace=replace)
        err(f"{action} {column} = {value:.6g} ms for {arch} in {out}")
    if as_json:
        m = run.to_measurement()
        echo_json(_finite({"file": _name(file), "harness": run.harness, "version": run.version,
                           "layout": run.layout, "metric": run.metric, "latency_ms": value, "arch": arch,
                           "device": column, "out": str(out) if out else None, "action": action,
                           "run": run.to_dict(), "measurement": m.to_dict()}))
    else:
        click.echo(_describe(run, value))


def _name(file: Path) -> str:
    return "<stdin>" if str(file) == "-" else str(file)


def _read_log(file: Path) -> str:
    try:
        raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except FileNotFoundError:
        raise BadInputError(f"{file}: log file not found") from None
    except OSError as e:
        raise BadInputError(f"{file}: cannot read the log: {e.strerror or e}") from None
    return raw.decode("utf-8", errors="replace")


def _column(device: str) -> str:
    """The dataset column for --device: a device file's own name (aliases resolved), else the plain name."""
    from hwnat.devices.spec import load_device

    looks_like_path = device.endswith((".yaml", ".yml")) or "/" in device or os.sep in device
    try:
        name = load_device(device).name
    except BadInputError:
        if looks_like_path or not _COLUMN_RE.match(device):
            raise
        name = device
    if name == "arch":
        raise BadInputError("--device 'arch' would collide with the dataset's arch column")
    return name


def _canonical(arch: str, space: str | None) -> str:
    if space is None:
        if not arch.strip():
            raise BadInputError("--arch is empty")
        return arch
    from hwnat.spaces import get_space

    sp = get_space(space)
    try:
        return sp.format(sp.parse(arch))
    except BadInputError as e:
        raise BadInputError(f"--arch is not a {space} architecture: {e}") from None


def _describe(run, value: float) -> str:
    """One human line: what was read and the numbers (stdout)."""
    parts = [f"{run.harness}{' ' + run.version if run.version else ''} ({run.layout}), {run.metric}: "
             f"{value:.6g} ms" + ("" if run.median_ms is not None or run.samples_ms else " (mean)")]
    for label, v in (("mean", run.mean_ms), ("min", run.min_ms), ("max", run.max_ms), ("std", run.std_ms)):
        if v is not None:
            parts.append(f"{label} {v:.6g}")
    parts += [f"p{p:g} {v:.6g}" for p, v in sorted(run.percentiles_ms.items())]
    if run.count is not None:
        parts.append(f"n={run.count}")
    if run.unstable:
        parts.append("UNSTABLE" + (f" (cv {run.cv:.1%})" if run.cv is not None else ""))
    return "  ".join(parts)


def _finite(obj):
    """JSON-safe copy: NaN and infinities (statistics a harness does not print) become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
