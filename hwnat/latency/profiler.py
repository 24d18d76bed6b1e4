"""Build latency tables on a device: export each unique block, time it, save after every entry.

Profiling is resumable by construction: the table file is rewritten atomically after each measured block,
so an interrupted run (Ctrl-C, ``kill -9``, a dropped connection) loses at most the block in flight, and a
rerun measures only what is missing. End-to-end subnet measurements go to a CSV the same way (one row
appended and flushed per architecture; a torn last line is dropped on resume).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from hwnat.devices.device import Device
from hwnat.errors import BadInputError
from hwnat.export.onnx import export_onnx
from hwnat.latency.table import LatencyTable
from hwnat.measure.fingerprint import fingerprint_diff
from hwnat.measure.stats import Measurement
from hwnat.spaces import BlockSpec, SearchSpace

log = logging.getLogger(__name__)

#: progress callback: (done, total, label)
Progress = Callable[[int, int, str], None]


def open_table(path: Path, space: SearchSpace, device: Device) -> LatencyTable:
    """The table at ``path`` to resume (validated against space, device and environment), or a new one."""
    if path.exists():
        table = LatencyTable.load(path, space=space.name, device=device.name)
        diff = fingerprint_diff(table.fingerprint, device.fingerprint())
        if diff:
            shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise BadInputError(f"{path}: this table was profiled in another environment ({shown}); "
                                "resume it there, or write a new table with --out")
        return table
    _check_writable(path)
    return LatencyTable(space=space.name, device=device.name, fingerprint=device.fingerprint(),
                        protocol=device.spec.measure.model_dump())


def _check_writable(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.parent / f".{path.name}.probe{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise BadInputError(f"{path}: output is not writable ({e.strerror or e})") from None


def measure_module(device: Device, module, input_shape, workdir: Path, name: str = "model") -> Measurement:
    """Export ``module`` in the device's format and time it on the device. ``input_shape``: one shape, or
    a tuple of shapes for a module with several inputs."""
    if device.model_format != "onnx":
        from hwnat.export import export_for_format

        path = export_for_format(device.model_format, module, input_shape, workdir / name)
    else:
        path = export_onnx(module, input_shape, workdir / f"{name}.onnx")
    try:
        return device.measure(str(path), input_shape)
    finally:
        Path(path).unlink(missing_ok=True)


def profile_blocks(space: SearchSpace, device: Device, blocks: Iterable[BlockSpec], out: str | Path,
                   progress: Progress | None = None) -> LatencyTable:
    """Measure every block not yet in the table at ``out`` and save after each one.

    Returns the complete table. Raises what the device raises (``DeviceError``), after saving.
    """
    out = Path(out)
    table = open_table(out, space, device)  # validated before anything is measured
    blocks = list(blocks)
    todo = [b for b in blocks if b.key not in table.entries]
    done = len(blocks) - len(todo)
    if done:
        log.info("resuming %s: %d of %d blocks already measured", out, done, len(blocks))
    if not out.exists():
        table.save(out)
    with tempfile.TemporaryDirectory(prefix="hwnat-profile-") as tmp:
        for b in todo:
            if progress:
                progress(done, len(blocks), b.key)
            t0 = time.perf_counter()
            m = measure_module(device, space.build_block(b), b.batch_input(), Path(tmp), "block")
            entry = m.summary()
            entry["round_medians_ms"] = list(m.round_medians_ms)
            entry["wall_s"] = round(time.perf_counter() - t0, 3)
            table.entries[b.key] = entry
            table.save(out)
            done += 1
    if progress:
        progress(done, len(blocks), "done")
    return table


# ---- end-to-end measurement CSVs ------------------------------------------------------------------

def read_done_archs(path: Path, arch_col: str = "arch") -> set[str]:
    """Architectures already in a result CSV; a torn last line (no newline: killed mid-write) is cut."""
    if not path.exists():
        return set()
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)
        raw = raw[:cut]
    text = raw.decode()
    if not text.strip():
        return set()
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or arch_col not in reader.fieldnames:
        raise BadInputError(f"{path}: existing file has no {arch_col!r} column; expected a result CSV to "
                            "resume, or choose another --out")
    return {row[arch_col] for row in reader}


def measure_archs(space: SearchSpace, device: Device, archs: list[str], out: str | Path,
                  columns: str = "stats", progress: Progress | None = None) -> Path:
    """Measure architectures end to end, appending one CSV row per architecture (resumable).

    Args:
        archs: canonical architecture strings (parsed up front, so a bad row fails before measuring).
        columns: ``"stats"`` -> ``arch,latency_ms,p10_ms,p90_ms,cv``; ``"dataset"`` -> ``arch,<device>``.
    """
    out = Path(out)
    parsed = space.parse_many(archs)
    header = ["arch", "latency_ms", "p10_ms", "p90_ms", "cv"] if columns == "stats" else ["arch", device.name]
    done = read_done_archs(out)
    if out.exists() and out.stat().st_size:
        with open(out) as f:
            existing = next(csv.reader(f), [])
        if existing != header:
            raise BadInputError(f"{out}: existing header {existing} differs from {header}; choose another --out")
    else:
        _check_writable(out)
        with open(out, "w", newline="") as f:
            csv.writer(f).writerow(header)
    todo = [(s, a) for s, a in zip(archs, parsed, strict=True) if s not in done]
    total, n = len(archs), len(archs) - len(todo)
    with tempfile.TemporaryDirectory(prefix="hwnat-measure-") as tmp, open(out, "a", newline="") as f:
        w = csv.writer(f)
        for s, a in todo:
            if s in done:  # a duplicate row of the input
                continue
            if progress:
                progress(n, total, s[:60])
            m = measure_module(device, space.build(a), space.input_shape(a), Path(tmp), "subnet")
            row = [s, f"{m.median_ms:.6g}"]
            if columns == "stats":
                row += [f"{m.p10_ms:.6g}", f"{m.p90_ms:.6g}", f"{m.cv:.4g}"]
            w.writerow(row)
            f.flush()
            os.fsync(f.fileno())
            done.add(s)
            n += 1
    if progress:
        progress(n, total, "done")
    return out
