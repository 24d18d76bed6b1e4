"""Run a bench suite on a device: prepare each entry's model file, then make ``rounds`` interleaved passes
over all entries (shuffled order per pass, fresh runtime session per timing, optional cool-down between
entries) and keep every raw sample, the protocol and the environment fingerprint.

Why passes and fresh sessions: a slow spell on a shared machine, a session whose buffers landed badly, a
frequency step -- each lasts longer than one inference, so samples taken back to back are not
independent. One round per pass per entry, spread over the whole run and interleaved with the other
entries, makes the per-round values close to independent; those are what ``hwnat.bench.compare`` tests.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hwnat.bench.contention import Probe, sched_ns
from hwnat.bench.store import FORMAT, SCHEMA_VERSION, BenchResult, result_from_dict, save_result
from hwnat.bench.suite import LoadedSuite, SuiteEntry
from hwnat.errors import BadInputError, HwnatError

log = logging.getLogger(__name__)

#: progress callback: (pass index 0-based, passes, entry name, that round's median ms)
Progress = Callable[[int, int, str, float], None]


@dataclass(frozen=True)
class PreparedEntry:
    """An entry with the model file the device runs."""

    entry: SuiteEntry
    path: Path
    input_shape: tuple[int, ...]
    sha256: str


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def onnx_input_shape(path: Path) -> tuple[int, ...] | None:
    """Static shape of the first graph input that is not an initializer; None when a dim is symbolic."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others, untyped
        raise BadInputError(f"{path}: not a readable ONNX model: {e}") from None
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
        return shape if shape and all(d > 0 for d in shape) else None
    raise BadInputError(f"{path}: the ONNX model has no graph input")


def prepare_entries(loaded: LoadedSuite, work_dir: Path, model_format: str = "onnx") -> list[PreparedEntry]:
    """Resolve model files and export space architectures (seeded weights, so files are reproducible).

    Raises:
        BadInputError: a missing model file, a bad architecture string, an unknown space, an input shape
            that cannot be known.
    """
    if model_format != "onnx":
        raise BadInputError(f"device runtime loads {model_format!r} files; bench suites hold ONNX models "
                            "and space architectures exported to ONNX")
    out = []
    for e in loaded.suite.entries:
        where = f"{loaded.path}: entry {e.name!r}"
        if e.model is not None:
            p = loaded.model_path(e)
            if not p.is_file():
                raise BadInputError(f"{where}: model file {p} not found")
            shape = tuple(e.input_shape) if e.input_shape else onnx_input_shape(p)
            if shape is None:
                raise BadInputError(f"{where}: {p} has a symbolic input shape; add input_shape: [1, 3, H, W]")
        else:
            p, shape = _export_arch(e, work_dir, where)
        out.append(PreparedEntry(e, p, tuple(int(d) for d in shape), file_sha256(p)))
    return out


def _export_arch(e: SuiteEntry, work_dir: Path, where: str) -> tuple[Path, tuple[int, ...]]:
    import torch

    from hwnat.export.onnx import export_onnx
    from hwnat.spaces import get_space

    try:
        space = get_space(e.space)
        arch = space.parse(e.arch)
    except BadInputError as err:
        raise BadInputError(f"{where}: {err}") from None
    shape = tuple(space.input_shape(arch))
    key = hashlib.sha256(f"{e.space}\n{e.arch}".encode()).hexdigest()[:16]
    path = work_dir / f"{e.name}-{key}.onnx"
    if not path.exists():
        torch.manual_seed(0)
        with torch.no_grad():
            module = space.build(arch)
        export_onnx(module, shape, path)
    return path, shape


def git_commit(cwd: Path | None = None) -> str | None:
    """``$GITHUB_SHA``, else ``git rev-parse HEAD`` in ``cwd`` (default: the working directory), else None."""
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                           timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_suite(loaded: LoadedSuite, *, device: str | None = None, rounds: int | None = None,
              out: Path | None = None, work_dir: Path | None = None, commit: str | None = None,
              progress: Progress | None = None, sleep=time.sleep) -> BenchResult:
    """Measure every entry of a suite; write the result to ``out`` (also when the device fails midway,
    with ``complete: false``, before the error is re-raised).

    Args:
        loaded: the suite (``load_suite``).
        device: device name or YAML path; default: the suite's.
        rounds: passes over the entries; default: the suite's ``rounds``.
        out: result file to write (optional).
        work_dir: where exported models go (kept, and reused on the next run); default: a temp dir.
        commit: git commit recorded in the result; default: ``git_commit()``.
        progress: called after each timed entry.

    Returns:
        the result (what was written to ``out``).

    Example:
        >>> from hwnat.bench.suite import load_suite
        >>> res = run_suite(load_suite("default"), out=Path("result.json"))  # doctest: +SKIP
    """
    from hwnat.devices.device import open_device

    suite = loaded.suite
    passes = int(rounds or suite.rounds)
    if passes < 1:
        raise BadInputError(f"--rounds: expected at least 1, got {passes}")
    if out is not None:
        _check_writable(Path(out))
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="hwnat-bench-")
        work_dir = Path(tmp.name)
    work_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    try:
        with open_device(device or suite.device) as dev:
            protocol = suite.pass_protocol(dev.spec.measure)
            prepared = prepare_entries(loaded, work_dir, dev.model_format)
            fp = dev.fingerprint()
            data = {
                "format": FORMAT, "schema_version": SCHEMA_VERSION,
                "suite": {"name": suite.name, "sha256": suite.sha256(),
                          "path": str(loaded.path) if loaded.path else None},
                "device": dev.name, "fingerprint": fp, "protocol": protocol.model_dump(),
                "rounds": passes, "shuffle": suite.shuffle, "seed": suite.seed,
                "cooldown_s": suite.cooldown_s, "complete": False,
                "contention": {"max_wait_frac": suite.max_wait_frac, "max_busy_frac": suite.max_busy_frac,
                               "retries": suite.contention_retries, "backoff_s": suite.contention_backoff_s,
                               "measured": dev.spec.transport.kind == "local" and sched_ns() is not None},
                "git_commit": commit or git_commit(),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "load_avg": {"before": _loadavg()},
                "entries": [{"name": p.entry.name, "source": p.entry.source(), "model_sha256": p.sha256,
                             "input_shape": list(p.input_shape), "rounds_ms": [], "round_info": []}
                            for p in prepared],
            }
            try:
                _measure_passes(dev, prepared, data, protocol, passes, suite, t_start, progress, sleep)
            except (HwnatError, KeyboardInterrupt):
                if out is not None and any(e["rounds_ms"] for e in data["entries"]):
                    _finish(data, t_start, complete=False)
                    save_result(data, out)
                    log.warning("partial result (%d of %d passes) written to %s",
                                min(len(e["rounds_ms"]) for e in data["entries"]), passes, out)
                raise
    finally:
        if tmp is not None:
            tmp.cleanup()
    _finish(data, t_start, complete=True)
    if out is not None:
        save_result(data, out)
    return result_from_dict(data, str(out) if out else "<memory>")


def _check_writable(out: Path) -> None:
    """Fail before measuring, not after, when the result cannot be written."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadInputError(f"--out {out}: cannot create its directory: {e.strerror or e}") from None
    if out.is_dir() or not os.access(out.parent, os.W_OK):
        raise BadInputError(f"--out {out}: not a writable file path")


#: after this many passes in a row stayed contended, stop re-timing until a clean pass is seen
_BUSY_STREAK = 3


def _timed_pass(dev, p: PreparedEntry, protocol, local: bool):
    """One timing of one entry, with what the contention probe saw (local devices only)."""
    with Probe(enabled=local) as probe:
        m = dev.measure(str(p.path), p.input_shape, protocol)
    return m, probe.reading


def _measure_passes(dev, prepared, data, protocol, passes, suite, t_start, progress, sleep) -> None:
    rng = np.random.default_rng(suite.seed)
    n = len(prepared)
    local = dev.spec.transport.kind == "local"
    first = True
    busy_streak = 0  # passes in a row that stayed contended after their retries
    for k in range(passes):
        order = rng.permutation(n) if suite.shuffle else np.arange(n)
        for pos, i in enumerate(order):
            p = prepared[int(i)]
            if suite.cooldown_s and not first:
                sleep(suite.cooldown_s)
            first = False
            t = time.perf_counter() - t_start
            best = None
            tries = 0
            # retries help against bursts; when the machine stays busy they only cost time
            retries = suite.contention_retries if busy_streak < _BUSY_STREAK else 0
            for _ in range(retries + 1):
                m, reading = _timed_pass(dev, p, protocol, local)
                tries += 1
                if best is None or reading.score() < best[1].score():
                    best = (m, reading)
                if not reading.contended(suite.max_wait_frac, suite.max_busy_frac):
                    break
                log.info("%s: contended pass (%s), re-timing", p.entry.name, reading.to_dict())
                sleep(suite.contention_backoff_s)
            m, reading = best
            stayed = reading.contended(suite.max_wait_frac, suite.max_busy_frac)
            busy_streak = busy_streak + 1 if stayed else 0
            rec = data["entries"][int(i)]
            rec["rounds_ms"].append([round(x, 6) for r in m.rounds_ms for x in r])
            info = {"pass": k, "position": pos, "t_s": round(t, 3)}
            if reading.to_dict():
                info.update(reading.to_dict(), tries=tries, contended=stayed)
            info.update({key: v for key, v in m.extra.items() if key != "attempts"})
            rec["round_info"].append(info)
            if progress is not None:
                progress(k, passes, p.entry.name, float(np.median(rec["rounds_ms"][-1])))


def _finish(data: dict, t_start: float, complete: bool) -> None:
    data["complete"] = complete
    data["wall_s"] = round(time.perf_counter() - t_start, 3)
    data["load_avg"]["after"] = _loadavg()
