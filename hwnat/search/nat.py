"""The Neural Architecture Transfer loop (Lu et al., "Neural Architecture Transfer", IEEE TPAMI 2021,
arXiv 2005.05859), with device latency as objective and constraint.

1. Initial archive: distinct random architectures evaluated by the accuracy source (supernet or table).
2. Each iteration: fit accuracy surrogates on the archive and keep the best by cross-validated Kendall tau
   (adaptive switching); run NSGA-III on surrogate error + latency models (+ FLOPs/params) under the
   latency budgets; pick new candidates spread along the predicted front; evaluate and archive them;
   online adaptation (the source fine-tunes on the archive's best encodings) and, when weights changed,
   re-evaluation of the archive.
3. Picks: the most accurate archived architecture within every budget, plus up to ``picks`` more spread
   along the feasible front.

State is saved after every evaluated chunk and every finished iteration (``state.json``), so rerunning
the same command resumes; settings that change what is computed must match (else ``BadInputError``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hwnat.errors import BadInputError
from hwnat.latency.model import search_bounds
from hwnat.search.archive import Archive, load_state, save_state, write_csv
from hwnat.search.problem import Objectives, make_problem, run_nsga3, spread_picks
from hwnat.search.surrogate import SURROGATES, fit_surrogate

log = logging.getLogger(__name__)

#: phase -> context manager yielding a ``(done, total, label)`` callback (or None)
PhaseFactory = Callable[[str], contextlib.AbstractContextManager]


@dataclass(frozen=True)
class SearchSettings:
    """Settings of one search (recorded in state.json; the ``identity`` ones must match to resume).

    Attributes:
        space: search space name.
        devices: device names, one latency objective each.
        budgets_ms: device -> latency budget (ms).
        latency_models: device -> latency model spec (``table``, ``predictor``, ``measure``, ``csv:...``).
        objectives: objective kinds (``error``, ``latency``, ``flops``, ``params``).
        confidence: probability the budget must hold with (upper bound constrained), or None.
        accuracy: the accuracy source's name (``table:...`` or ``supernet:<task>``).
        initial: architectures in the initial archive.
        iterations: NAT iterations after the initial archive.
        candidates: new architectures evaluated per iteration.
        picks: extra picks spread along the front besides the most accurate one.
        pop_size: NSGA-III population size.
        generations: NSGA-III generations per iteration.
        adapt: run the source's online adaptation after each iteration.
        seed: seed of every random choice.
        proxy_scale: training/evaluation input scale of a supernet source (recorded; 1.0 for tables).
        chunk: candidates evaluated between two state saves.
    """

    space: str
    devices: tuple[str, ...]
    budgets_ms: dict
    latency_models: dict
    objectives: tuple[str, ...] = ("error", "latency")
    confidence: float | None = None
    accuracy: str = ""
    initial: int = 20
    iterations: int = 5
    candidates: int = 8
    picks: int = 3
    pop_size: int = 60
    generations: int = 20
    adapt: bool = True
    seed: int = 0
    proxy_scale: float = 1.0
    chunk: int = 4
    extra: dict = field(default_factory=dict)

    IDENTITY = ("space", "devices", "budgets_ms", "latency_models", "objectives", "confidence", "accuracy",
                "initial", "candidates", "pop_size", "generations", "adapt", "seed", "proxy_scale")

    def __post_init__(self):
        for name in ("initial", "candidates", "pop_size", "generations", "chunk"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.initial < 4:
            raise BadInputError(f"initial archive of {self.initial}: the surrogate needs at least 4")
        if self.iterations < 0 or self.picks < 0:
            raise BadInputError("iterations and picks must be >= 0")
        if self.confidence is not None and not 0.5 <= self.confidence < 1:
            raise BadInputError(f"--confidence {self.confidence}: expected a probability in [0.5, 1)")
        for d, b in self.budgets_ms.items():
            if not (isinstance(b, (int, float)) and np.isfinite(b) and b > 0):
                raise BadInputError(f"--latency-ms for {d} = {b!r}; expected a number of ms > 0")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["devices"], d["objectives"] = list(self.devices), list(self.objectives)
        return d


@dataclass
class SearchResult:
    """What a finished search returns (also written to ``out``)."""

    out: Path
    archive: Archive
    picks: list[dict]
    history: list[dict]
    extremes: dict
    wall_s: float


class NATSearch:
    """One search, bound to its output folder (resumes from ``out/state.json``).

    Args:
        settings: ``SearchSettings``.
        space: the ``SearchSpace`` object (for a supernet: built with the task's class count).
        objectives: ``Objectives`` (names, latency models, budgets, confidence).
        accuracy: an ``AccuracySource``.
        out: output folder.
        phase: progress factory (see ``PhaseFactory``); default: no progress.
        checkpoint: called after every saved state with ``out`` (e.g. to save the supernet first).
    """

    def __init__(self, settings: SearchSettings, space, objectives: Objectives, accuracy, out: str | Path,
                 phase: PhaseFactory | None = None, checkpoint: Callable[[Path], None] | None = None):
        self.s, self.space, self.obj, self.acc = settings, space, objectives, accuracy
        self.out = Path(out)
        self.phase = phase or (lambda name: contextlib.nullcontext(None))
        self.checkpoint = checkpoint
        self.lo, self.hi = search_bounds(space)
        self.state_path = self.out / "state.json"
        self.archive = Archive()
        self.pending: list[dict] = []
        self.history: list[dict] = []
        self.done_iteration = -1
        self.extremes: dict = {}
        self.front: dict = {}
        self.rejected: set[str] = set()  # picks measured over a budget by the verification: never picked
        self.verified: dict[str, dict] = {}  # arch -> measured_ms_<device> (and p90) of verified picks
        self._loaded = False

    # ---- state -------------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Load ``out/state.json`` if there is one; True when resuming.

        Raises:
            BadInputError: corrupt state, or one saved with other settings (names the setting).
        """
        if self._loaded:
            return bool(self.history) or len(self.archive) > 0
        self._loaded = True
        st = load_state(self.state_path)
        if st is None:
            return False
        mine, theirs = self.s.to_dict(), st["settings"]
        for k in SearchSettings.IDENTITY:
            a, b = _norm(theirs.get(k)), _norm(mine.get(k))
            if a != b:
                raise BadInputError(f"{self.state_path}: this folder holds a search with {k} = {a!r}, not "
                                    f"{b!r}; rerun with the same settings to resume, or choose another --out")
        self.archive = Archive(st["archive"])
        self.pending = st["pending"]
        self.history = st["history"]
        self.done_iteration = st["done_iteration"]
        self.extremes = st.get("extremes", {})
        self.front = st.get("front", {})
        self.verified = st.get("verified", {})
        self.rejected = set(st.get("rejected", []))
        log.info("resuming %s: %d archived, iteration %d done", self.out, len(self.archive), self.done_iteration)
        return True

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        if self.checkpoint is not None:
            self.checkpoint(self.out)
        save_state(self.state_path, {
            "settings": self.s.to_dict(), "done_iteration": self.done_iteration, "archive": self.archive.rows,
            "pending": self.pending, "history": self.history, "extremes": self.extremes, "front": self.front,
            "verified": self.verified, "rejected": sorted(self.rejected),
            "accuracy_source": _safe_state(self.acc),
            "latency_models": {d: m.describe() for d, m in self.obj.models.items()}})
        self.archive.to_csv(self.out / "archive.csv", self.columns())

    def columns(self) -> list[str]:
        cols = ["arch", "iteration", "accuracy", "error"]
        for d in self.obj.models:
            cols.append(f"latency_ms_{d}")
            if self.obj.confidence is not None:
                cols.append(f"latency_ms_hi_{d}")
        cols += ["flops_m", "params_m", "feasible", "accuracy_source", "accuracy_evaluated_at", "latency_source",
                 "proxy_scale"]
        return cols

    # ---- the loop ----------------------------------------------------------------------------------
    def check_budgets(self) -> dict:
        """Fastest/slowest latency of the space per device; a budget below the fastest is bad input."""
        if not self.extremes:
            for d, m in self.obj.models.items():
                self.extremes[d] = m.extremes()
        for d, b in self.obj.budgets_ms.items():
            e = self.extremes[d]
            if b < e["fastest_ms"]:
                raise BadInputError(
                    f"--latency-ms {b:g} for {d} is below the fastest {self.space.name} architecture on {d} "
                    f"({e['fastest_ms']:.4g} ms by the {self.obj.models[d].kind} model: {e['fastest_arch']})")
        return self.extremes

    def run(self) -> SearchResult:
        t0 = time.perf_counter()
        self.resume()
        self.check_budgets()
        if self.done_iteration < 0:
            if not self.pending and not len(self.archive):
                rng = np.random.default_rng([self.s.seed, 0])
                self.pending = [self._candidate(g, 0) for g in self._initial_genomes(rng)]
                self.save()
            t = time.perf_counter()
            self._evaluate_pending("initial archive")
            self.done_iteration = 0
            self._record_front(0, None)
            self.front["initial"]["evaluate_s"] = round(time.perf_counter() - t, 2)
            self.save()
        for it in range(self.done_iteration + 1, self.s.iterations + 1):
            self._iterate(it)
        picks = self.select_picks()
        return SearchResult(self.out, self.archive, picks, self.history, self.extremes,
                            time.perf_counter() - t0)

    def _iterate(self, it: int) -> None:
        rng = np.random.default_rng([self.s.seed, it])
        entry = next((h for h in self.history if h["iteration"] == it), None)
        if entry is None:
            t = time.perf_counter()
            with self.phase(f"iteration {it}/{self.s.iterations}: surrogate + NSGA-III") as cb:
                if cb:
                    cb(0, 2, "fitting surrogates")
                entry = self._propose(it, rng)
                if cb:
                    cb(2, 2, f"{entry['surrogate']} (tau {entry['taus'][entry['surrogate']]:.3f})")
            entry["propose_s"] = round(time.perf_counter() - t, 2)
            self.history.append(entry)
            self.save()
        t = time.perf_counter()
        self._evaluate_pending(f"iteration {it}/{self.s.iterations}: evaluate")
        entry["evaluate_s"] = round(entry.get("evaluate_s", 0) + time.perf_counter() - t, 2)
        if self.s.adapt and not entry.get("adapted_done"):
            t = time.perf_counter()
            best = self._best_archs(20)
            with self.phase(f"iteration {it}/{self.s.iterations}: adapt") as cb:
                if cb:
                    cb(0, 1, "fine-tuning on the archive's best")
                changed = bool(self.acc.adapt(best, rng))
                if cb:
                    cb(1, 1, "done")
            entry["adapted"] = changed
            if changed:
                self._reevaluate(it)
            entry["adapted_done"] = True
            entry["adapt_s"] = round(time.perf_counter() - t, 2)
        self._record_front(it, entry)
        self.done_iteration = it
        self.save()

    def _initial_genomes(self, rng) -> np.ndarray:
        seen: dict[bytes, np.ndarray] = {}
        for _ in range(50):
            for g in self.space.sample_genomes(rng, self.s.initial):
                g = np.clip(g, self.lo, self.hi)
                seen.setdefault(self._key(g), g)
            if len(seen) >= self.s.initial:
                break
        return np.asarray(list(seen.values())[: self.s.initial])

    def _key(self, g) -> bytes:
        return np.ascontiguousarray(np.asarray(g, dtype=np.int64)).tobytes()

    def _candidate(self, g, it: int, predicted: float | None = None) -> dict:
        arch = self.space.format(self.space.decode(np.asarray(g)))
        return {"arch": arch, "genome": [int(v) for v in g], "iteration": it, "predicted_accuracy": predicted}

    def _propose(self, it: int, rng) -> dict:
        """Fit the surrogate, run NSGA-III, queue candidates spread along the predicted front."""
        G = self.archive.genomes()
        acc = self.archive.column("accuracy")
        sur = fit_surrogate(G, acc, self.lo, self.hi, seed=int(rng.integers(2**31)), candidates=SURROGATES)
        problem = make_problem(self.obj, lambda g: 100.0 - sur.predict(g), self.lo, self.hi)
        pop, gens = self.s.pop_size, self.s.generations
        if any(m.expensive for m in self.obj.models.values()):
            pop, gens = min(pop, 16), min(gens, 4)  # each new genome is a measurement on the device
        start = G[np.argsort(-acc)][:pop]
        X, F, Gc = run_nsga3(problem, start, pop, gens, seed=int(rng.integers(2**31)))
        err_pred = 100.0 - sur.predict(X)
        seen = {self._key(g) for g in G}
        new = np.array([self._key(x) not in seen for x in X])
        _, first = np.unique(np.asarray([self._key(x) for x in X]), return_index=True)
        uniq = np.zeros(len(X), dtype=bool)
        uniq[first] = True
        feas = (Gc <= 0).all(axis=1) if Gc.size else np.ones(len(X), dtype=bool)
        chosen: list[int] = []
        pool = np.flatnonzero(new & uniq & feas)
        if len(pool):
            from hwnat.search.metrics import pareto_mask

            front = pool[pareto_mask(F[pool])]
            ordered = front[spread_picks(F[front], self.s.candidates,
                                         first=int(np.argmin(err_pred[front])))]
            chosen = list(ordered)
            rest = [i for i in pool[np.argsort(err_pred[pool])] if i not in chosen]
            chosen += rest[: self.s.candidates - len(chosen)]
        if len(chosen) < self.s.candidates:  # too few feasible new ones: least violating, then random
            viol = np.clip(Gc, 0, None).sum(axis=1) if Gc.size else np.zeros(len(X))
            others = [i for i in np.lexsort((err_pred, viol)) if new[i] and uniq[i] and i not in chosen]
            chosen += others[: self.s.candidates - len(chosen)]
        self.pending = [self._candidate(X[i], it, float(100 - err_pred[i])) for i in chosen]
        return {"iteration": it, "surrogate": sur.name, "taus": sur.taus, "archive_size": len(self.archive),
                "candidates": len(self.pending), "nsga_feasible": int(feas.sum()), "nsga_pop": int(len(X))}

    def _evaluate_pending(self, phase: str) -> None:
        if not self.pending:
            return
        total = len(self.pending)
        with self.phase(phase) as cb:
            while self.pending:
                chunk = self.pending[: self.s.chunk]
                if cb:
                    cb(total - len(self.pending), total, chunk[0]["arch"])
                rows = self._rows(chunk, self.acc.evaluate([c["arch"] for c in chunk]))
                for r in rows:
                    self.archive.add(r)
                self.pending = self.pending[len(chunk):]
                self.save()
            if cb:
                cb(total, total, "done")

    def refresh_hardware(self) -> None:
        """Recompute every archived row's latency columns and feasibility (after a latency model changed,
        e.g. a calibration refitted on the verification's measurements)."""
        if not len(self.archive):
            return
        cols, feas = self._hardware([r["genome"] for r in self.archive.rows])
        for i, r in enumerate(self.archive.rows):
            r.update({k: float(v[i]) for k, v in cols.items()})
            r["feasible"] = bool(feas[i])

    def _hardware(self, genomes) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Hardware columns of ``genomes`` and whether each meets every budget."""
        g = np.asarray(genomes, dtype=np.int64)
        cols = self.obj.hardware(g)
        feas = (self.obj.G(cols) <= 0).all(axis=1) if self.obj.budgets_ms else np.ones(len(g), dtype=bool)
        return cols, feas

    def _rows(self, cands: list[dict], acc: np.ndarray) -> list[dict]:
        cols, feas = self._hardware([c["genome"] for c in cands])
        how = ";".join(f"{d}:{m.kind}" for d, m in self.obj.models.items())
        rows = []
        for i, c in enumerate(cands):
            r = {"arch": c["arch"], "genome": c["genome"], "iteration": c["iteration"],
                 "accuracy": float(acc[i]), "error": float(100 - acc[i]),
                 "predicted_accuracy": c.get("predicted_accuracy"), "feasible": bool(feas[i]),
                 "accuracy_source": self.acc.name, "accuracy_evaluated_at": c["iteration"],
                 "latency_source": how, "proxy_scale": self.s.proxy_scale}
            r.update({k: float(v[i]) for k, v in cols.items()})
            rows.append(r)
        return rows

    def _reevaluate(self, it: int) -> None:
        archs = self.archive.archs()
        with self.phase(f"iteration {it}/{self.s.iterations}: re-evaluate archive") as cb:
            accs = []
            for i in range(0, len(archs), max(self.s.chunk, 8)):
                if cb:
                    cb(i, len(archs), archs[i])
                accs.append(self.acc.evaluate(archs[i:i + max(self.s.chunk, 8)]))
            if cb:
                cb(len(archs), len(archs), "done")
        for r, a in zip(self.archive.rows, np.concatenate(accs), strict=True):
            r["accuracy"], r["error"], r["accuracy_evaluated_at"] = float(a), float(100 - a), it

    def _best_archs(self, k: int) -> list[str]:
        """The archive's best encodings: feasible front first, then the most accurate feasible ones."""
        rows = [r for r in self.archive.rows if r["feasible"]] or list(self.archive.rows)
        rows = sorted(rows, key=lambda r: -r["accuracy"])
        return [r["arch"] for r in rows[:k]]

    # ---- fronts and picks ----------------------------------------------------------------------------
    def objective_matrix(self, rows: list[dict]) -> np.ndarray:
        cols = {k: np.asarray([r[k] for r in rows], dtype=np.float64)
                for k in rows[0] if k.startswith("latency_ms") or k in ("flops_m", "params_m")} if rows else {}
        err = np.asarray([r["error"] for r in rows], dtype=np.float64)
        return self.obj.F(cols, err) if rows else np.zeros((0, len(self.obj.names)))

    def pareto_rows(self, exclude: set[str] = frozenset()) -> list[dict]:
        """Non-dominated archive rows among the feasible ones (all rows when none is feasible), leaving out
        the architectures in ``exclude``."""
        from hwnat.search.metrics import pareto_mask

        rows = [r for r in self.archive.rows if r["arch"] not in exclude]
        rows = [r for r in rows if r["feasible"]] or rows
        if not rows:
            return []
        mask = pareto_mask(self.objective_matrix(rows))
        return sorted([r for r, m in zip(rows, mask, strict=True) if m], key=lambda r: -r["accuracy"])

    def _record_front(self, it: int, entry: dict | None) -> None:
        from hwnat.search.metrics import hypervolume

        front = [r for r in self.pareto_rows() if r["feasible"]]  # hypervolume of what meets the budget
        F = self.objective_matrix(front)
        ref = self.front.get("hv_reference")
        if ref is None and len(F):
            allF = self.objective_matrix(self.archive.rows)
            ref = (allF.max(axis=0) + 0.1 * np.maximum(np.ptp(allF, axis=0), 1e-9)).tolist()
            self.front["hv_reference"] = ref
        hv = float(hypervolume(F, ref)) if len(F) else 0.0
        feasible = [r for r in self.archive.rows if r["feasible"]]
        rec = {"hypervolume": hv, "front_size": len(front), "archive_size": len(self.archive),
               "feasible": len(feasible),
               "best_feasible_accuracy": max((r["accuracy"] for r in feasible), default=None)}
        if entry is None:
            self.front["initial"] = rec
        else:
            entry.update(rec)

    def select_picks(self) -> list[dict]:
        """The most accurate feasible archive entry, then up to ``picks`` more spread along the feasible
        front (by the objectives). Empty when no archived architecture is predicted within budget.
        Architectures in ``rejected`` (measured over a budget) are never picked.

        The first pick is taken from the front: of several equally accurate entries, one that no other
        dominates (equal accuracy at less latency, FLOPs, ... by the search's objectives)."""
        front = [r for r in self.pareto_rows(exclude=self.rejected) if r["feasible"]]
        if not front:  # pareto_rows falls back to infeasible rows only when no feasible one is left
            return []
        best = max(front, key=lambda r: r["accuracy"])  # a most accurate entry is always on the front
        idx = spread_picks(self.objective_matrix(front), self.s.picks + 1, first=front.index(best))
        return [front[i] for i in idx]


def _norm(v):
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _norm(x) for k, x in sorted(v.items())}
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _safe_state(acc) -> dict:
    try:
        return dict(acc.state())
    except Exception as e:  # noqa: BLE001  (recorded, never fatal: the state is informative only)
        return {"error": f"{type(e).__name__}: {e}"}


def write_outputs(search: NATSearch, picks: list[dict]) -> None:
    """archive.csv (already current), pareto.csv, picks.csv (DESIGN.md search CLI contract)."""
    cols = search.columns()
    write_csv(search.out / "pareto.csv", search.pareto_rows(), cols)
    write_csv(search.out / "picks.csv", picks_rows(search, picks), picks_columns(search, picks))


def picks_columns(search: NATSearch, picks: list[dict]) -> list[str]:
    """``arch,accuracy,latency_ms[,latency_ms_hi][,measured_ms]`` for the first device, then per-device
    columns for every device, FLOPs, params, whether the budget holds, and the proxy scale accuracy was
    measured at (1.0: full resolution or a table)."""
    devs = list(search.obj.models)
    cols = ["arch", "accuracy", "latency_ms"]
    if search.obj.confidence is not None:
        cols.append("latency_ms_hi")
    verified = any("measured_ms_" + devs[0] in p for p in picks)
    if verified:
        cols.append("measured_ms")
    if len(devs) > 1:
        for d in devs:
            cols.append(f"latency_ms_{d}")
            if search.obj.confidence is not None:
                cols.append(f"latency_ms_hi_{d}")
            if verified:
                cols.append(f"measured_ms_{d}")
    cols += ["flops_m", "params_m"]
    if verified:
        cols.append("within_budget")
    return cols + ["proxy_scale"]


def picks_rows(search: NATSearch, picks: list[dict]) -> list[dict]:
    d0 = next(iter(search.obj.models))
    out = []
    for p in picks:
        r = dict(p, proxy_scale=search.s.proxy_scale)
        r["latency_ms"] = p[f"latency_ms_{d0}"]
        if f"latency_ms_hi_{d0}" in p:
            r["latency_ms_hi"] = p[f"latency_ms_hi_{d0}"]
        if f"measured_ms_{d0}" in p:
            r["measured_ms"] = p[f"measured_ms_{d0}"]
        out.append(r)
    return out
