"""Latency models: one interface answering "how long does each of these architectures take on this device?".

``LatencyModel.ms(genomes) -> ndarray`` (milliseconds, one per genome) for a whole population at once, and
``interval(genomes, coverage) -> (lo_ms, hi_ms)`` where the model has one. The search and pruning code
holds a ``LatencyModel`` and never knows which kind it is (DESIGN.md, "Latency models"):

- ``table``: the device's latency table (LUT) summed over the architecture's blocks. A missing table, or
  one that lacks blocks the space needs, is profiled on the device first (resumable, with progress);
- ``predictor``: a ``LatencyPredictor`` JSON (table + residual XGBoost, or a few-shot transferred model),
  with its conformal interval;
- ``measure``: every architecture exported and timed on the device end to end; results are cached by
  canonical string in a CSV (``arch,latency_ms,p10_ms,p90_ms,cv``) so nothing is measured twice, across
  runs too;
- ``csv:PATH:COLUMN``: exact lookup in a published latency dataset (``PATH`` empty: the dataset shipped for
  the space; ``COLUMN`` omitted: the device name). An architecture missing from it is ``BadInputError``.

Example:
    >>> from hwnat.spaces import get_space
    >>> sp = get_space("nasbench201")
    >>> m = open_latency_model("csv::pixel3", sp, "pixel3")               # doctest: +SKIP
    >>> m.ms(sp.sample_genomes(np.random.default_rng(0), 4))              # doctest: +SKIP
"""

from __future__ import annotations

import csv
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np

from hwnat.errors import BadInputError
from hwnat.spaces import SearchSpace

log = logging.getLogger(__name__)

#: progress callback: (done, total, label)
Progress = Callable[[int, int, str], None]

KINDS = ("table", "predictor", "measure", "csv:PATH:COLUMN")


class LatencyModel(ABC):
    """Latency (ms) of many architectures of one space on one device.

    Attributes:
        space: the search space whose genomes ``ms`` takes.
        device: device name (the objective is called ``latency_<device>``).
        kind: ``table``, ``predictor``, ``measure`` or ``csv``.
        expensive: True when each new architecture costs a measurement (the search then evaluates fewer).
    """

    kind: str = ""
    expensive: bool = False

    def __init__(self, space: SearchSpace, device: str):
        self.space = space
        self.device = device

    @abstractmethod
    def ms(self, genomes: np.ndarray) -> np.ndarray:
        """Latency in ms of every genome ``(n, g)`` -> ``(n,)``."""

    @property
    def has_interval(self) -> bool:
        """Whether ``interval`` gives a real (non-degenerate) interval."""
        return False

    def interval(self, genomes: np.ndarray, coverage: float) -> tuple[np.ndarray, np.ndarray]:
        """Central interval ``(lo_ms, hi_ms)`` holding the true latency with probability ``coverage``.

        Raises:
            BadInputError: the model has no interval.
        """
        raise BadInputError(f"latency model {self.describe()['model']!r} for {self.device} gives no interval; "
                            "--confidence needs --latency-model predictor")

    def upper_ms(self, genomes: np.ndarray, confidence: float) -> np.ndarray:
        """An upper bound that the true latency stays under with probability ``confidence`` (one-sided).

        The intervals are central (each tail calibrated on its own, ``hwnat.latency.predictor.interval_ranks``),
        so the upper end of the interval at coverage ``2 * confidence - 1`` leaves ``1 - confidence`` above
        it: the one-sided bound. (The upper end of the interval at coverage ``confidence`` would hold with
        probability ``(1 + confidence) / 2``: 95% for a stated 90%, a budget kept needlessly far away.)
        Where too few samples allow central ranks the interval is symmetric, and its upper end at the
        lower coverage is still the one-sided conformal rank of the signed residuals or more conservative.
        ``confidence`` 0.5 is the point estimate.
        """
        two_sided = 2.0 * float(confidence) - 1.0
        if two_sided <= 0:
            return self.ms(genomes)
        return self.interval(genomes, two_sided)[1]

    def describe(self) -> dict:
        """Plain data recorded in state.json and the report."""
        return {"device": self.device, "model": self.kind}

    def extremes(self) -> dict:
        """Fastest and slowest latency (ms) of the space under this model, with the architectures.

        Cheap models: the best of the bound genomes and 256 random ones, refined by coordinate descent
        (every single-position change of the incumbent evaluated at once, until none helps). Exact for
        additive tables in practice; a lower bound on the true extremes in general.
        """
        lo, hi = search_bounds(self.space)
        out = {}
        for name, sign in (("fastest", 1.0), ("slowest", -1.0)):
            ms, g = _coordinate_search(lambda x, s=sign: s * self.ms(x), lo, hi, np.random.default_rng(0))
            out[f"{name}_ms"] = float(sign * ms)
            out[f"{name}_arch"] = self.space.format(self.space.decode(g))
        out["method"] = "coordinate search"
        return out


def search_bounds(space: SearchSpace, n: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Genome bounds narrowed to the values the space samples from (e.g. ofa-mbv3's search resolutions
    and widths, a subset of what its genome can encode)."""
    lo, hi = (np.asarray(b, dtype=np.int64) for b in space.genome_bounds())
    s = space.sample_genomes(np.random.default_rng(12345), n)
    return np.maximum(lo, s.min(axis=0)), np.minimum(hi, s.max(axis=0))


def _coordinate_search(f, lo, hi, rng, passes: int = 20) -> tuple[float, np.ndarray]:
    """Minimise ``f`` over integer genomes within bounds by repeated best single-position changes."""
    cands = np.vstack([lo[None, :], hi[None, :],
                       rng.integers(lo, hi + 1, size=(256, len(lo)), dtype=np.int64)])
    v = f(cands)
    best = cands[int(np.argmin(v))].copy()
    best_v = float(np.min(v))
    for _ in range(passes):
        rows = []
        for i in range(len(lo)):
            for val in range(int(lo[i]), int(hi[i]) + 1):
                if val != best[i]:
                    g = best.copy()
                    g[i] = val
                    rows.append(g)
        if not rows:
            break
        rows = np.asarray(rows)
        v = f(rows)
        j = int(np.argmin(v))
        if v[j] >= best_v - 1e-12:
            break
        best, best_v = rows[j].copy(), float(v[j])
    return best_v, best


# ---- table ----------------------------------------------------------------------------------------------
class TableLatency(LatencyModel):
    """Latency-table sum (ms) over the architecture's blocks (vectorised through the space's slots)."""

    kind = "table"

    def __init__(self, space: SearchSpace, device: str, table, path: Path):
        super().__init__(space, device)
        self.table = table
        self.path = Path(path)

    def ms(self, genomes):
        return self.table.sum_many(self.space, np.asarray(genomes, dtype=np.int64))

    def describe(self):
        return {**super().describe(), "table": str(self.path), "entries": len(self.table.entries)}


def open_table_model(space: SearchSpace, device: str, table_path: str | Path | None = None,
                     progress: Progress | None = None) -> TableLatency:
    """The device's table for ``space``, profiling whatever blocks it lacks first (resumable).

    Args:
        table_path: the table file; default: ``find_table`` (``latency_tables/<device>/<space>.json`` here,
            then the shipped tables), else a new table at ``latency_tables/<device>/<space>.json``.
    """
    from hwnat.devices.spec import load_device
    from hwnat.latency.table import LatencyTable, default_table_path, find_table

    spec = load_device(device)
    path = Path(table_path) if table_path else (find_table(spec.name, space.name)
                                                or default_table_path(spec.name, space.name))
    needed = space.all_blocks()
    table = LatencyTable.load(path, space=space.name, device=spec.name) if path.exists() else None
    missing = [b for b in needed if table is None or b.key not in table.entries]
    if missing:
        from hwnat.devices.device import open_device
        from hwnat.latency.profiler import profile_blocks

        target = path if table_path or _writable(path) else default_table_path(spec.name, space.name)
        log.info("profiling %d missing %s blocks on %s into %s", len(missing), space.name, spec.name, target)
        with open_device(spec) as dev:
            table = profile_blocks(space, dev, needed, target, progress=progress)
        path = target
    return TableLatency(space, spec.name, table, path)


def _writable(path: Path) -> bool:
    import os

    return os.access(path if path.exists() else path.parent, os.W_OK)


# ---- predictor ------------------------------------------------------------------------------------------
class PredictorLatency(LatencyModel):
    """A ``LatencyPredictor``'s estimate (ms) and its conformal interval (jackknife+ up to 20 samples, CV
    conformal above)."""

    kind = "predictor"

    def __init__(self, space: SearchSpace, device: str, predictor, path: Path):
        super().__init__(space, device)
        self.predictor = predictor
        self.path = Path(path)

    def ms(self, genomes):
        return self.predictor.predict_genomes(np.asarray(genomes, dtype=np.int64))[0]

    @property
    def has_interval(self) -> bool:
        return bool(self.predictor.interval.get("coverage"))

    def interval(self, genomes, coverage):
        """The predictor's central conformal interval (jackknife+ / CV conformal, see ``hwnat.latency.predictor``)
        at ``coverage``: computed from its out-of-fold models, not rescaled from the stored coverage."""
        if not self.has_interval:
            return super().interval(genomes, coverage)
        _, lo, hi = self.predictor.predict_genomes(np.asarray(genomes, dtype=np.int64), coverage=coverage)
        return lo, hi

    def describe(self):
        iv = self.predictor.interval
        return {**super().describe(), "predictor": str(self.path), "mode": self.predictor.mode,
                "interval_coverage": iv.get("coverage"), "interval_method": iv.get("method")}


def open_predictor_model(space: SearchSpace, device: str, path: str | Path | None = None) -> PredictorLatency:
    """A predictor JSON: ``path`` or ``<space>.predictor.json`` next to the device's table."""
    from hwnat.latency.predictor import LatencyPredictor
    from hwnat.latency.table import find_table

    if path is None:
        t = find_table(device, space.name)
        cand = t.with_name(f"{space.name}.predictor.json") if t else None
        if cand is None or not cand.is_file():
            raise BadInputError(f"no latency predictor for {space.name} on {device}: pass --predictor PATH "
                                f"(fit one with `hwnat predictor fit --space {space.name} ...`)")
        path = cand
    pred = LatencyPredictor.load(path, space=space.name)
    return PredictorLatency(space, device, pred, Path(path))


# ---- measure --------------------------------------------------------------------------------------------
class MeasuredLatency(LatencyModel):
    """Each architecture exported and timed end to end on the device, cached by canonical string."""

    kind = "measure"
    expensive = True

    def __init__(self, space: SearchSpace, device: str, cache: Path, progress: Progress | None = None):
        from hwnat.devices.spec import load_device

        self.spec = load_device(device)
        super().__init__(space, self.spec.name)
        self.cache = Path(cache)
        self.progress = progress
        self._ms: dict[str, float] = {}
        self._load()

    def _load(self) -> None:
        from hwnat.latency.profiler import read_done_archs

        if not self.cache.exists():
            return
        read_done_archs(self.cache, self.space)  # drops a torn last line (killed mid-write)
        self._ms.update(read_measured(self.cache))

    def ms(self, genomes):
        from hwnat.devices.device import open_device
        from hwnat.latency.profiler import measure_archs

        genomes = np.asarray(genomes, dtype=np.int64)
        archs = [self.space.format(self.space.decode(g)) for g in genomes]
        todo = list(dict.fromkeys(a for a in archs if a not in self._ms))
        if todo:
            with open_device(self.spec) as dev:
                measure_archs(self.space, dev, todo, self.cache, columns="stats", progress=self.progress)
            self._load()
        return np.array([self._ms[a] for a in archs], dtype=np.float64)

    def extremes(self):
        """Measured latency of the smallest and largest genomes (each a measurement; no search)."""
        lo, hi = search_bounds(self.space)
        v = self.ms(np.stack([lo, hi]))
        return {"fastest_ms": float(v[0]), "fastest_arch": self.space.format(self.space.decode(lo)),
                "slowest_ms": float(v[1]), "slowest_arch": self.space.format(self.space.decode(hi)),
                "method": "measured smallest and largest genome"}

    def describe(self):
        return {**super().describe(), "cache": str(self.cache), "cached": len(self._ms)}


# ---- calibrated ---------------------------------------------------------------------------------------
class CalibratedLatency(LatencyModel):
    """Another model's estimate mapped onto end-to-end measurements of whole networks: ``a * base + b``.

    A table sums blocks timed one by one; a whole network also pays per-call overhead, and its blocks share
    caches, so the sum is off by an error that differs per device (this machine: about -6%). A few
    networks measured end to end on the device fix the scale ``a`` (``fit_ratio``; ``b`` stays 0); the search's
    verification adds its own measurements and refits. The base model's interval, where it has one, is
    mapped the same way.
    """

    def __init__(self, base: LatencyModel, points: list[tuple[str, float, float]] | None = None):
        super().__init__(base.space, base.device)
        self.base = base
        self.kind = f"{base.kind}+calibration"
        self.points: list[tuple[str, float, float]] = []  # (arch, base ms, measured ms)
        self.a, self.b = 1.0, 0.0
        self.refit(points or [])

    def refit(self, points: list[tuple[str, float, float]]) -> None:
        """Use these ``(arch, base_ms, measured_ms)`` points (replacing the previous ones)."""
        self.points = [(str(a), float(p), float(m)) for a, p, m in points]
        if self.points:
            self.a, self.b = fit_ratio([p for _, p, _ in self.points], [m for _, _, m in self.points])

    def ms(self, genomes):
        return self.a * self.base.ms(genomes) + self.b

    @property
    def has_interval(self) -> bool:
        return self.base.has_interval

    def interval(self, genomes, coverage):
        lo, hi = self.base.interval(genomes, coverage)
        return self.a * lo + self.b, self.a * hi + self.b

    def extremes(self):
        out = self.base.extremes()
        for k in ("fastest_ms", "slowest_ms"):
            out[k] = self.a * out[k] + self.b
        return out

    def describe(self):
        return {**self.base.describe(), "model": self.kind, "calibration": {
            "a": round(self.a, 6), "b_ms": round(self.b, 6), "points": len(self.points),
            "mean_abs_error_pct_before": _mape([p for _, p, _ in self.points], [m for _, _, m in self.points]),
            "mean_abs_error_pct_after": _mape([self.a * p + self.b for _, p, _ in self.points],
                                              [m for _, _, m in self.points])}}


def fit_ratio(pred, measured) -> tuple[float, float]:
    """``(a, 0.0)`` with ``measured ~ a * pred``: the median of the ratios (robust to a disturbed
    measurement). A slope and intercept (Theil-Sen) were tried first: fitted on 8 networks spread over
    6-26 ms whose ratios scattered 0.82-1.13, it put the intercept at 2.6 ms and overestimated the 5 ms
    picks below that range by 33%; one scale factor extrapolates safely."""
    p, m = np.asarray(pred, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    ok = (p > 0) & (m > 0) & np.isfinite(p) & np.isfinite(m)
    if not ok.any():
        return 1.0, 0.0
    return float(np.median(m[ok] / p[ok])), 0.0


def _mape(pred, measured) -> float | None:
    p, m = np.asarray(pred, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    return round(float(np.mean(np.abs(p - m) / m) * 100), 2) if len(m) else None


def calibration_archs(model: LatencyModel, n: int, seed: int = 0) -> list[str]:
    """``n`` architectures spread evenly over the model's latency range (quantiles of 50 n random ones)."""
    rng = np.random.default_rng(seed)
    g = model.space.sample_genomes(rng, max(50 * n, 200))
    v = model.ms(g)
    order = np.argsort(v)
    idx = order[np.unique(np.round(np.linspace(0, len(v) - 1, n)).astype(int))]
    return [model.space.format(model.space.decode(x)) for x in g[idx]]


def calibrate(model: LatencyModel, n: int, cache: str | Path, progress: Progress | None = None,
              seed: int = 0, device: str | None = None) -> CalibratedLatency:
    """Measure ``n`` architectures spread over ``model``'s range end to end on its device (resumable CSV
    ``cache``: a rerun measures only what is missing) and return the model calibrated on them.

    Args:
        device: the device name or YAML path (default: the model's device name)."""
    from hwnat.devices.device import open_device
    from hwnat.devices.spec import load_device
    from hwnat.latency.profiler import measure_archs

    archs = calibration_archs(model, n, seed)
    with open_device(load_device(device or model.device)) as dev:
        measure_archs(model.space, dev, archs, cache, columns="stats", progress=progress)
    measured = read_measured(cache)
    g = np.stack([model.space.encode(model.space.parse(a)) for a in archs])
    base = model.ms(g)
    return CalibratedLatency(model, [(a, float(p), measured[a]) for a, p in zip(archs, base, strict=True)])


def read_measured(path: str | Path) -> dict[str, float]:
    """``arch -> latency_ms`` of a measurement CSV written by ``measure_archs`` (``stats`` columns)."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                out[row["arch"]] = float(row["latency_ms"])
            except (KeyError, TypeError, ValueError):
                raise BadInputError(f"{path}: row for {row.get('arch')!r} has no numeric latency_ms; expected "
                                    "a file written by hwnat") from None
    return out


# ---- csv ------------------------------------------------------------------------------------------------
class CsvLatency(LatencyModel):
    """Exact lookup of published latencies (ms) by architecture."""

    kind = "csv"

    def __init__(self, space: SearchSpace, device: str, path: Path, column: str):
        from hwnat.latency.predictor import read_latency_csv

        super().__init__(space, device)
        self.path, self.column = Path(path), column
        archs, vals, _ = read_latency_csv(path, [column], what="latency dataset")
        genomes = _encode_rows(space, archs, self.path)
        self._genomes = genomes
        self._values = vals[:, 0]
        self._index = {g.tobytes(): i for i, g in enumerate(genomes)}

    def ms(self, genomes):
        genomes = np.ascontiguousarray(np.asarray(genomes, dtype=np.int64))
        idx = np.empty(len(genomes), dtype=np.int64)
        for i, g in enumerate(genomes):
            j = self._index.get(g.tobytes())
            if j is None:
                raise BadInputError(f"{self.path}: column {self.column!r} has no latency for "
                                    f"{self.space.format(self.space.decode(g))}; a csv latency model needs "
                                    "every architecture the search visits")
            idx[i] = j
        return self._values[idx]

    def extremes(self):
        """The dataset's own fastest and slowest architectures (exact when it covers the space)."""
        i, j = int(np.argmin(self._values)), int(np.argmax(self._values))
        dec = self.space.decode
        return {"fastest_ms": float(self._values[i]), "fastest_arch": self.space.format(dec(self._genomes[i])),
                "slowest_ms": float(self._values[j]), "slowest_arch": self.space.format(dec(self._genomes[j])),
                "method": f"min/max of {len(self._values)} rows of the dataset"}

    def describe(self):
        return {**super().describe(), "path": str(self.path), "column": self.column,
                "rows": int(len(self._values))}


def _encode_rows(space: SearchSpace, archs: list[str], path: Path) -> np.ndarray:
    try:
        return np.ascontiguousarray(space.encode_many(space.parse_many(archs)))
    except BadInputError as e:
        raise BadInputError(f"{path}: {e}") from None


def parse_csv_spec(spec: str, space: SearchSpace, device: str) -> tuple[Path, str]:
    """``csv:PATH:COLUMN`` -> (path, column). Empty PATH: the dataset shipped for the space; no COLUMN:
    the device name."""
    body = spec[len("csv:"):]
    path, sep, column = body.rpartition(":")
    if not sep:
        path, column = body, ""
    if not path:
        from hwnat.data import latency_dataset

        p = latency_dataset(space.name)
    else:
        p = Path(path).expanduser()
    if not p.is_file():
        raise BadInputError(f"--latency-model {spec}: file {p} not found; expected csv:PATH:COLUMN")
    return p, column or device


# ---- factory --------------------------------------------------------------------------------------------
def open_latency_model(spec: str, space: SearchSpace, device: str, *, predictor: str | Path | None = None,
                       table: str | Path | None = None, cache_dir: str | Path = ".",
                       progress: Progress | None = None) -> LatencyModel:
    """One front door for every latency model.

    Args:
        spec: ``table``, ``predictor``, ``measure`` or ``csv:PATH:COLUMN``.
        space: the search space.
        device: device name or YAML path (for ``csv``, and ``predictor`` with a model file, a label is
            enough: the dataset's or the predictor's device).
        predictor: predictor JSON for ``predictor``.
        table: latency table path for ``table`` (default: found or profiled, see ``open_table_model``).
        cache_dir: where ``measure`` keeps ``measured-<device>-<space>.csv``.
        progress: ``(done, total, label)`` callback for profiling and measuring.

    Raises:
        BadInputError: an unknown kind (lists the valid ones), a missing file, a bad dataset.
    """
    if spec.startswith("csv:"):
        path, column = parse_csv_spec(spec, space, device)
        return CsvLatency(space, device, path, column)
    if spec == "table":
        return open_table_model(space, device, table, progress)
    from hwnat.devices.spec import load_device

    if spec == "predictor":  # needs no device: a label without a device file names the predicted one
        try:
            name = load_device(device).name
        except BadInputError:
            if predictor is None:
                raise
            name = device
        return open_predictor_model(space, name, predictor)
    name = load_device(device).name
    if spec == "measure":
        return MeasuredLatency(space, device, Path(cache_dir) / f"measured-{name}-{space.name}.csv", progress)
    raise BadInputError(f"unknown latency model {spec!r}; expected one of: {', '.join(KINDS)}")
