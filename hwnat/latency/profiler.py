"""Build latency tables on a device: export each unique block, time it, save after every entry.

Profiling is resumable by construction: the table file is rewritten atomically after each measured block,
so an interrupted run (Ctrl-C, ``kill -9``, a dropped connection) loses at most the block in flight, and a
rerun measures only what is missing. End-to-end subnet measurements go to a CSV the same way (one row
appended and flushed per architecture; a torn last line is dropped on resume).

Resuming never mixes measurements that are not comparable: a table records its device, environment
fingerprint and protocol, a CSV has a ``<name>.meta.json`` record of the same, and a rerun under any
other device, environment or ``measure:`` settings is refused (naming what differs) before anything is
measured or any file changes. Rows are keyed by canonical architecture strings.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from hwnat._io import write_atomic
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


def _same_conditions(path: Path, what: str, fingerprint: dict, protocol: dict, device: Device) -> None:
    """Refuse to add measurements of ``device`` to a file measured in another environment or with another
    protocol (the ``measure:`` block of the device file): the two sets would not be comparable.

    Raises:
        BadInputError: names the file and every field that differs, old -> new.
    """
    diff = fingerprint_diff(fingerprint, device.fingerprint())
    if diff:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise BadInputError(f"{path}: this {what} was measured in another environment ({shown}); "
                            "resume it there, or write a new one with --out")
    now = device.spec.measure.model_dump()
    changed = {k: (protocol.get(k), now.get(k)) for k in sorted(set(protocol) | set(now))
               if protocol.get(k) != now.get(k)}
    if changed:
        shown = ", ".join(f"measure.{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
        raise BadInputError(f"{path}: this {what} was measured with another protocol ({shown}); resume it "
                            "with the same measure: settings, or write a new one with --out")


def open_table(path: Path, space: SearchSpace, device: Device) -> LatencyTable:
    """The table at ``path`` to resume (validated against space, device, environment and measurement
    protocol), or a new one."""
    if path.exists():
        table = LatencyTable.load(path, space=space.name, device=device.name)
        _same_conditions(path, "table", table.fingerprint, table.protocol, device)
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

#: schema version of the ``<csv>.meta.json`` record next to a result CSV
CSV_META_VERSION = 1


def csv_meta_path(path: Path) -> Path:
    """``<name>.meta.json`` next to a result CSV: which space, device, environment and protocol its rows
    were measured with (so a resume can refuse to mix in other measurements)."""
    path = Path(path)
    return path.with_name(path.name + ".meta.json")


def _csv_header(path: Path) -> list[str]:
    """The first line of an existing CSV, read without changing the file."""
    try:
        with open(path, newline="") as f:
            return next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BadInputError(f"{path}: cannot read the existing file: {e}") from None


def _check_ours(path: Path, header: list[str], space: SearchSpace, device: Device) -> None:
    """An existing, non-empty result CSV may be resumed only when its header is the expected one and its
    ``.meta.json`` says it was measured for this space on this device, in this environment, with this
    protocol. Nothing is changed in the file before this passes.

    Raises:
        BadInputError: another header, no or another record (names the file and the field).
    """
    existing = _csv_header(path)
    if existing != header:
        raise BadInputError(f"{path}: existing header {existing} differs from {header}; it is not a result "
                            f"of this command for device {device.name!r}: choose another --out")
    meta_path = csv_meta_path(path)
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise BadInputError(f"{path}: has rows but no {meta_path.name} saying which device, environment and "
                            "protocol measured them, so new rows cannot be checked to be comparable; choose "
                            "another --out (or remove the file)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInputError(f"{meta_path}: unreadable ({e}); choose another --out") from None
    if not isinstance(meta, dict) or meta.get("schema_version") != CSV_META_VERSION:
        raise BadInputError(f"{meta_path}: not a measurement record of this hwnat (schema_version "
                            f"{meta.get('schema_version') if isinstance(meta, dict) else None!r})")
    for field_name, want in (("space", space.name), ("device", device.name)):
        if meta.get(field_name) != want:
            raise BadInputError(f"{path}: rows were measured for {field_name} {meta.get(field_name)!r}, not "
                                f"{want!r} ({meta_path.name}); choose another --out")
    _same_conditions(path, "file", meta.get("fingerprint") or {}, meta.get("protocol") or {}, device)


def read_done_archs(path: Path, space: SearchSpace, arch_col: str = "arch") -> set[str]:
    """Canonical strings of the architectures already in a result CSV (already checked to be ours); a torn
    last line (no newline: killed mid-write) is cut from the file.

    Raises:
        BadInputError: no ``arch`` column, or a row that does not parse in ``space`` (names the row).
    """
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
    rows = [row[arch_col] for row in reader]
    try:
        return {space.format(a) for a in space.parse_many(rows)}
    except BadInputError as e:
        raise BadInputError(f"{path}: existing {e}") from None


def _header(device: Device, columns: str) -> list[str]:
    if columns not in ("stats", "dataset"):
        raise BadInputError(f"columns must be 'stats' or 'dataset', got {columns!r}")
    return ["arch", "latency_ms", "p10_ms", "p90_ms", "cv"] if columns == "stats" else ["arch", device.name]


def check_resumable(out: str | Path, space: SearchSpace, device: Device, columns: str = "stats") -> list[str] | None:
    """Check, before anything is measured or changed, that ``out`` can take rows of ``device``: an
    existing result file must be ours for this space, device, environment and protocol (``_check_ours``);
    a new one must be writable.

    Returns:
        None to resume an existing file; else the header of the new file to write.
    """
    out = Path(out)
    header = _header(device, columns)
    if out.exists() and out.stat().st_size:
        _check_ours(out, header, space, device)
        return None
    _check_writable(out)
    return header


def measure_archs(space: SearchSpace, device: Device, archs: list[str], out: str | Path,
                  columns: str = "stats", progress: Progress | None = None) -> Path:
    """Measure architectures end to end, appending one CSV row per architecture (resumable).

    Rows hold canonical strings (``space.format``), so an architecture typed another way is recognised as
    done. ``<out>.meta.json`` records the space, device, environment and protocol; resuming a file
    recorded otherwise is refused before anything in it changes.

    Args:
        archs: architecture strings (parsed up front, so a bad row fails before measuring).
        columns: ``"stats"`` -> ``arch,latency_ms,p10_ms,p90_ms,cv``; ``"dataset"`` -> ``arch,<device>``.
    """
    out = Path(out)
    canonical = [space.format(a) for a in space.parse_many(archs)]
    parsed = {c: space.parse(c) for c in canonical}
    header = check_resumable(out, space, device, columns)
    if header is None:
        done = read_done_archs(out, space)
    else:
        meta = {"schema_version": CSV_META_VERSION, "space": space.name, "device": device.name,
                "columns": header, "fingerprint": device.fingerprint(),
                "protocol": device.spec.measure.model_dump()}
        write_atomic(csv_meta_path(out), json.dumps(meta, indent=1).encode())
        with open(out, "w", newline="") as f:
            csv.writer(f).writerow(header)
        done = set()
    todo = list(dict.fromkeys(c for c in canonical if c not in done))  # in order, each once
    total, n = len(set(canonical)), len(set(canonical)) - len(todo)
    with tempfile.TemporaryDirectory(prefix="hwnat-measure-") as tmp, open(out, "a", newline="") as f:
        w = csv.writer(f)
        for s in todo:
            if progress:
                progress(n, total, s[:60])
            a = parsed[s]
            m = measure_module(device, space.build(a), space.input_shape(a), Path(tmp), "subnet")
            row = [s, f"{m.median_ms:.6g}"]
            if columns == "stats":
                row += [f"{m.p10_ms:.6g}", f"{m.p90_ms:.6g}", f"{m.cv:.4g}"]
            w.writerow(row)
            f.flush()
            os.fsync(f.fileno())
            n += 1
    if progress:
        progress(n, total, "done")
    return out


# ---- what `hwnat profile --subnets` measures, and how the table compares ---------------------------

def distinct_sample(space: SearchSpace, n: int, seed: int) -> list[str]:
    """``n`` distinct random architectures (canonical strings), the same list for the same seed; asking
    for more extends the list (so a profile with a larger ``--subnets`` resumes).

    Random draws repeat in small spaces (NAS-Bench-201 has 15,625 cells: 400 draws hold ~5 repeats), and a
    repeated subnet is measured once, so draws continue until ``n`` are distinct or the space looks
    exhausted (fewer than ``n`` distinct after many draws).
    """
    rng = np.random.default_rng(seed)
    archs: dict[str, None] = {}
    for _ in range(50):
        for a in space.sample(rng, n - len(archs)):
            archs.setdefault(space.format(a))
        if len(archs) >= n:
            break
    return list(archs)[:n]


def table_vs_measured(space: SearchSpace, table: LatencyTable, data: str | Path, column: str) -> dict:
    """How the table sum compares with architectures measured end to end (the bias a predictor corrects).

    Args:
        data: a CSV with ``arch`` and ``column`` (ms), e.g. ``<space>.subnets.csv``.

    Returns:
        ``hwnat.latency.metrics.summary`` of table sum vs measured (``n``, ``acc10``, ``mape_pct``,
        ``spearman``...) plus ``bias_pct``: the mean of table / measured - 1, in percent.
    """
    from hwnat.latency.metrics import summary

    with open(data, newline="") as f:
        rows = [(r["arch"], float(r[column])) for r in csv.DictReader(f)]
    g = space.encode_many(space.parse_many([a for a, _ in rows]))
    pred, true = table.sum_many(space, g), np.array([ms for _, ms in rows])
    out = summary(pred, true)
    out["bias_pct"] = 100 * float(np.mean(pred / true - 1))
    return out
