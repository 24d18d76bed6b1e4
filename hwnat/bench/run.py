"""Run a bench suite on a device: prepare each entry's model file, then make ``rounds`` interleaved passes
over all entries (shuffled order per pass, fresh runtime session per timing, optional cool-down between
entries) and keep every raw sample, the protocol and the environment fingerprint.

Why passes and fresh sessions: a slow spell on a shared machine, a session whose buffers landed badly, a
frequency step -- each lasts longer than one inference, so samples taken back to back are not
independent. One round per pass per entry, spread over the whole run and interleaved with the other
entries, makes the per-round values close to independent; those are what ``hwnat.bench.compare`` tests.

An A/B job (``run_ab``) times two suites' model files in the same passes: per entry, the baseline's and
the candidate's file back to back, in a random order, so both halves of a pair see the same neighbour;
``hwnat.bench.paired`` compares the pairs.
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

from hwnat.bench.contention import Probe, Reading, sched_ns
from hwnat.bench.store import (
    AB_FORMAT,
    FORMAT,
    SCHEMA_VERSION,
    ABResult,
    BenchResult,
    ab_result_from_dict,
    result_from_dict,
    save_result,
)
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
    def start(dev, work: Path, protocol) -> tuple[dict, Callable]:
        prepared = prepare_entries(loaded, work, dev.model_format)
        data = {"format": FORMAT, "suite": _suite_info(loaded),
                "entries": [{"name": p.entry.name, **_model_info(p), "rounds_ms": [], "round_info": []}
                            for p in prepared]}
        return data, lambda passes, t_start: _measure_passes(dev, prepared, data, protocol, passes,
                                                             loaded.suite, t_start, progress, sleep)

    data = _job(loaded.suite, start, device=device, rounds=rounds, out=out, work_dir=work_dir,
                commit=commit, done=lambda d: min(len(e["rounds_ms"]) for e in d["entries"]))
    return result_from_dict(data, str(out) if out else "<memory>")


def run_ab(base: LoadedSuite, cand: LoadedSuite, *, device: str | None = None, rounds: int | None = None,
           out: Path | None = None, work_dir: Path | None = None, commit: str | None = None,
           progress: Progress | None = None, sleep=time.sleep) -> ABResult:
    """An A/B job: time the baseline suite's and the candidate suite's model files in the same passes,
    paired by entry name. In every pass, for every entry (shuffled order), the two files are timed back
    to back in a random order, each with a fresh session; a pair whose halves saw unequal load
    (``Reading.imbalance`` above 1) is timed again up to ``contention_retries`` times and the most
    balanced attempt is kept. Entries of one suite only are recorded without pairs.

    The candidate suite sets the device, rounds, protocol, shuffle seed and contention settings.

    Args:
        base: the baseline suite (model files of the reference, e.g. exported at the base commit).
        cand: the candidate suite.
        device, rounds, out, work_dir, commit, progress: as in ``run_suite``.

    Returns:
        the result (what was written to ``out``).

    Raises:
        BadInputError: a bad suite or model file, or no entry name in both suites.
    """
    def start(dev, work: Path, protocol) -> tuple[dict, Callable]:
        pb = {p.entry.name: p for p in prepare_entries(base, work, dev.model_format)}
        pc = {p.entry.name: p for p in prepare_entries(cand, work, dev.model_format)}
        names = list(pb) + [n for n in pc if n not in pb]
        pairs = [(pb[n], pc[n]) for n in names if n in pb and n in pc]
        if not pairs:
            raise BadInputError(f"{base.path} and {cand.path}: no entry name is in both suites; entries are "
                                "paired by name")
        data = {"format": AB_FORMAT,
                "baseline": {"suite": _suite_info(base)}, "candidate": {"suite": _suite_info(cand)},
                "entries": [{"name": n,
                             "baseline": _model_info(pb[n]) if n in pb else None,
                             "candidate": _model_info(pc[n]) if n in pc else None,
                             "baseline_rounds_ms": [], "candidate_rounds_ms": [], "pair_info": []}
                            for n in names]}
        recs = [next(e for e in data["entries"] if e["name"] == b.entry.name) for b, _ in pairs]
        return data, lambda passes, t_start: _measure_pairs(dev, pairs, recs, protocol, passes, cand.suite,
                                                            t_start, progress, sleep)

    data = _job(cand.suite, start, device=device, rounds=rounds, out=out, work_dir=work_dir, commit=commit,
                ab=True, done=lambda d: min((len(e["pair_info"]) for e in d["entries"] if e["baseline"]
                                    and e["candidate"]), default=0))
    return ab_result_from_dict(data, str(out) if out else "<memory>")


def _suite_info(loaded: LoadedSuite) -> dict:
    return {"name": loaded.suite.name, "sha256": loaded.suite.sha256(),
            "path": str(loaded.path) if loaded.path else None}


def _model_info(p: PreparedEntry) -> dict:
    return {"source": p.entry.source(), "model_sha256": p.sha256, "input_shape": list(p.input_shape)}


def _job(suite, start, *, device, rounds, out, work_dir, commit, done, ab: bool = False) -> dict:
    """What ``run_suite`` and ``run_ab`` share: open the device, prepare (``start`` returns the result's
    entry data and the measuring loop), record the settings and the fingerprint, measure, and write the
    result; on a device failure or Ctrl-C write what was measured with ``complete: false`` and re-raise.
    ``ab``: an A/B job (the suite's ``ab_rounds`` and ``ab_runs``)."""
    from hwnat.devices.device import open_device

    passes = int(rounds or (suite.ab_rounds if ab else suite.rounds))
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
            protocol = (suite.ab_protocol if ab else suite.pass_protocol)(dev.spec.measure)
            if dev.spec.transport.kind == "local" and hasattr(dev, "runtime"):
                dev.runtime = DualClock(dev.runtime)  # also record CPU time (``--clock cpu``)
            entries, measure = start(dev, work_dir, protocol)
            data = {
                **entries, "schema_version": SCHEMA_VERSION,
                "device": dev.name, "fingerprint": dev.fingerprint(), "protocol": protocol.model_dump(),
                "rounds": passes, "shuffle": suite.shuffle, "seed": suite.seed,
                "cooldown_s": suite.cooldown_s, "complete": False,
                "contention": {"max_wait_frac": suite.max_wait_frac, "max_busy_frac": suite.max_busy_frac,
                               "retries": suite.contention_retries, "backoff_s": suite.contention_backoff_s,
                               "measured": dev.spec.transport.kind == "local" and sched_ns() is not None},
                "git_commit": commit or git_commit(),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "load_avg": {"before": _loadavg()},
            }
            data["entries"] = data.pop("entries")  # keep the samples last in the file
            try:
                measure(passes, t_start)
            except (HwnatError, KeyboardInterrupt):
                if out is not None and done(data):
                    _finish(data, t_start, complete=False)
                    save_result(data, out)
                    log.warning("partial result (%d of %d passes) written to %s", done(data), passes, out)
                raise
    finally:
        if tmp is not None:
            tmp.cleanup()
    _finish(data, t_start, complete=True)
    if out is not None:
        save_result(data, out)
    return data


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


class DualClock:
    """Wraps a local device's runtime so that every timed call is measured on two clocks: the wall clock
    (what ``measure`` returns: the latency) and this process's CPU clock (kept in ``cpu_ms``). CPU time
    leaves out the time the runtime waited for a CPU while other processes ran, so on an oversubscribed
    machine it is far less noisy than wall time; it is the runtime's latency only for a single-threaded
    runtime on an otherwise idle machine. Runtimes that time themselves (GPU events) are left as they are.
    """

    def __init__(self, runtime):
        self.runtime = runtime
        self.cpu_ms: list[float] = []

    def __getattr__(self, name):
        return getattr(self.runtime, name)

    def load(self, model_path: str, input_shape: tuple[int, ...]):
        from hwnat.devices.runtimes._base import Loaded

        loaded = self.runtime.load(model_path, input_shape)
        if loaded.time_once is not None:
            return loaded
        run, sync = loaded.run, loaded.sync

        def timed() -> float:
            c0, a = time.process_time_ns(), time.perf_counter_ns()
            run()
            if sync is not None:
                sync()
            b, c1 = time.perf_counter_ns(), time.process_time_ns()
            self.cpu_ms.append((c1 - c0) / 1e6)
            return (b - a) / 1e6

        return Loaded(run, sync, loaded.close, loaded.info, time_once=timed)


def _timed_pass(dev, p: PreparedEntry, protocol, local: bool):
    """One timing of one entry, with what the contention probe saw (local devices only) and, where the
    device's runtime is wrapped in a ``DualClock``, the CPU-clock samples (else None)."""
    clock = getattr(dev, "runtime", None)
    if isinstance(clock, DualClock):
        clock.cpu_ms = []
    with Probe(enabled=local) as probe:
        m = dev.measure(str(p.path), p.input_shape, protocol)
    cpu = None
    if isinstance(clock, DualClock) and len(clock.cpu_ms) == sum(len(r) for r in m.rounds_ms):
        cpu = [round(x, 6) for x in clock.cpu_ms]
    return m, probe.reading, cpu


class _Retrier:
    """Re-times a disturbed timing up to ``retries`` times and keeps the least disturbed attempt; after
    ``_BUSY_STREAK`` timings in a row stayed disturbed it stops retrying until one comes out clean (a
    persistently busy machine costs a few retried passes, not three times the run)."""

    def __init__(self, suite, sleep):
        self.suite, self.sleep, self.streak = suite, sleep, 0

    def __call__(self, attempt, badness, what: str):
        """``attempt()`` -> x; ``badness(x)`` > 1 = disturbed. Returns (best x, tries, stayed disturbed)."""
        retries = self.suite.contention_retries if self.streak < _BUSY_STREAK else 0
        best = best_bad = None
        tries = 0
        for _ in range(retries + 1):
            x = attempt()
            tries += 1
            bad = badness(x)
            if best is None or bad < best_bad:
                best, best_bad = x, bad
            if bad <= 1:
                break
            log.info("%s: disturbed timing (%.2f x the limit), re-timing", what, bad)
            self.sleep(self.suite.contention_backoff_s)
        stayed = best_bad > 1
        self.streak = self.streak + 1 if stayed else 0
        return best, tries, stayed


def _contention(suite, r: Reading) -> float:
    """A reading in units of the suite's limits (above 1 = contended)."""
    return max((r.wait_frac or 0.0) / suite.max_wait_frac, (r.busy_frac or 0.0) / suite.max_busy_frac)


def _schedule(rng, n: int, passes: int, suite, t_start: float, sleep):
    """(pass, position, entry index, seconds since the start) of every timing: ``passes`` passes over
    ``n`` entries, in a shuffled order per pass, with the suite's cool-down between two timings."""
    first = True
    for k in range(passes):
        order = rng.permutation(n) if suite.shuffle else np.arange(n)
        for pos, i in enumerate(order):
            if suite.cooldown_s and not first:
                sleep(suite.cooldown_s)
            first = False
            yield k, pos, int(i), time.perf_counter() - t_start


def _measure_passes(dev, prepared, data, protocol, passes, suite, t_start, progress, sleep) -> None:
    rng = np.random.default_rng(suite.seed)
    local = dev.spec.transport.kind == "local"
    retry = _Retrier(suite, sleep)
    for k, pos, i, t in _schedule(rng, len(prepared), passes, suite, t_start, sleep):
        p = prepared[i]
        (m, reading, cpu), tries, stayed = retry(lambda p=p: _timed_pass(dev, p, protocol, local),
                                                 lambda x: _contention(suite, x[1]), p.entry.name)
        rec = data["entries"][i]
        rec["rounds_ms"].append([round(x, 6) for r in m.rounds_ms for x in r])
        if cpu is not None:
            rec.setdefault("cpu_rounds_ms", []).append(cpu)
        info = {"pass": k, "position": pos, "t_s": round(t, 3)}
        if reading.to_dict():
            info.update(reading.to_dict(), tries=tries, contended=stayed)
        info.update({key: v for key, v in m.extra.items() if key != "attempts"})
        rec["round_info"].append(info)
        if progress is not None:
            progress(k, passes, p.entry.name, float(np.median(rec["rounds_ms"][-1])))


def _measure_pairs(dev, pairs, recs, protocol, passes, suite, t_start, progress, sleep) -> None:
    rng = np.random.default_rng(suite.seed)
    local = dev.spec.transport.kind == "local"
    retry = _Retrier(suite, sleep)

    def attempt(base: PreparedEntry, cand: PreparedEntry):
        b_first = bool(rng.integers(2))  # a fair coin per attempt: the order is no cause of a difference
        sides = [("baseline", base), ("candidate", cand)] if b_first else [("candidate", cand), ("baseline", base)]
        got = {}
        for side, p in sides:
            got[side] = _timed_pass(dev, p, protocol, local)
        return "ab" if b_first else "ba", got

    def imbalance(x) -> float:
        got = x[1]
        return got["baseline"][1].imbalance(got["candidate"][1], suite.max_wait_frac, suite.max_busy_frac)

    for k, pos, i, t in _schedule(rng, len(pairs), passes, suite, t_start, sleep):
        base, cand = pairs[i]
        (seq, got), tries, stayed = retry(lambda b=base, c=cand: attempt(b, c), imbalance, base.entry.name)
        rec = recs[i]
        info = {"pass": k, "position": pos, "t_s": round(t, 3), "order": seq}
        for side in ("baseline", "candidate"):
            m, reading, cpu = got[side]
            rec[f"{side}_rounds_ms"].append([round(x, 6) for r in m.rounds_ms for x in r])
            if cpu is not None:
                rec.setdefault(f"{side}_cpu_rounds_ms", []).append(cpu)
            extra = {key: v for key, v in m.extra.items() if key != "attempts"}
            if reading.to_dict() or extra:
                info[side] = {**reading.to_dict(), **extra}
        if local and got["baseline"][1].to_dict():
            info.update(tries=tries, balanced=not stayed)
        rec["pair_info"].append(info)
        if progress is not None:
            progress(k, passes, base.entry.name, float(np.median(rec["candidate_rounds_ms"][-1])))


def _finish(data: dict, t_start: float, complete: bool) -> None:
    data["complete"] = complete
    data["wall_s"] = round(time.perf_counter() - t_start, 3)
    data["load_avg"]["after"] = _loadavg()
