"""Objectives of a hardware-aware search and the pymoo problem NSGA-III runs on (STYLE.md point 7).

Objectives (all minimised, ``--objective``, repeatable): ``error`` (100 - accuracy in percent, from the
surrogate during the search), ``latency`` (one objective per device: ``latency_<device>`` in ms, from that
device's ``LatencyModel``), ``flops`` (MFLOPs) and ``params`` (millions), the last two analytic. A latency
budget per device is an inequality constraint ``G = latency_ms - budget_ms`` (feasible when ``<= 0``);
with ``confidence`` set, the constraint uses the model's upper bound at that confidence instead.

NSGA-III (Deb & Jain, "An Evolutionary Many-Objective Optimization Algorithm Using Reference-Point-Based
Nondominated Sorting Approach", IEEE TEC 2014) runs with Das-Dennis reference directions of the objective
count on the integer genome (``IntegerRandomSampling``-style start, SBX/PM with ``RoundingRepair``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hwnat.errors import BadInputError
from hwnat.latency.model import LatencyModel
from hwnat.spaces import SearchSpace

#: objective kinds accepted by ``--objective``
OBJECTIVES = ("error", "latency", "flops", "params")


def objective_names(kinds: tuple[str, ...], devices: tuple[str, ...]) -> list[str]:
    """Column names of the objectives: ``latency`` expands to ``latency_<device>`` per device.

    Raises:
        BadInputError: an unknown kind (lists the valid ones), a repeated one, or no objective at all.
    """
    names: list[str] = []
    for k in kinds:
        if k not in OBJECTIVES:
            raise BadInputError(f"unknown objective {k!r}; expected some of: {', '.join(OBJECTIVES)}")
        if k in kinds[: kinds.index(k)]:
            raise BadInputError(f"objective {k!r} given twice")
        names += [f"latency_{d}" for d in devices] if k == "latency" else [k]
    if not names:
        raise BadInputError("no objective; expected some of: " + ", ".join(OBJECTIVES))
    return names


@dataclass
class Objectives:
    """How every objective and constraint of a search is computed, for many genomes at once.

    Attributes:
        space: the search space.
        names: objective columns (``objective_names``).
        models: device name -> its ``LatencyModel``.
        budgets_ms: device name -> latency budget (ms); every device in ``models`` has one.
        confidence: None, or the probability with which the budget must hold (upper bound constrained).
    """

    space: SearchSpace
    names: list[str]
    models: dict[str, LatencyModel]
    budgets_ms: dict[str, float]
    confidence: float | None = None

    def __post_init__(self):
        if self.confidence is not None:
            for d, m in self.models.items():
                if not m.has_interval:
                    raise BadInputError(f"--confidence {self.confidence} needs a latency model with an "
                                        f"interval; the {m.kind} model of {d} has none (use --latency-model "
                                        "predictor)")

    def hardware(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        """Columns every candidate gets whatever the objectives: latency per device (and its upper bound
        with ``confidence``), MFLOPs, millions of parameters."""
        g = np.asarray(genomes, dtype=np.int64)
        cols: dict[str, np.ndarray] = {}
        for d, m in self.models.items():
            cols[f"latency_ms_{d}"] = m.ms(g)
            if self.confidence is not None:
                cols[f"latency_ms_hi_{d}"] = m.upper_ms(g, self.confidence)
        cols["flops_m"] = _many(self.space, "flops", g) / 1e6
        cols["params_m"] = _many(self.space, "params", g) / 1e6
        return cols

    def constrained_ms(self, cols: dict[str, np.ndarray], device: str) -> np.ndarray:
        """The latency the budget is checked on: the upper bound with ``confidence``, else the estimate."""
        key = f"latency_ms_hi_{device}" if self.confidence is not None else f"latency_ms_{device}"
        return np.asarray(cols[key], dtype=np.float64)

    def G(self, cols: dict[str, np.ndarray]) -> np.ndarray:
        """Constraint values ``(n, devices)``: ``latency - budget`` (feasible when all <= 0)."""
        return np.column_stack([self.constrained_ms(cols, d) - b for d, b in self.budgets_ms.items()])

    def F(self, cols: dict[str, np.ndarray], error: np.ndarray) -> np.ndarray:
        """Objective matrix ``(n, M)`` in the order of ``names``."""
        out = []
        for n in self.names:
            if n == "error":
                out.append(np.asarray(error, dtype=np.float64))
            elif n.startswith("latency_"):
                out.append(cols[f"latency_ms_{n[len('latency_'):]}"])
            elif n == "flops":
                out.append(cols["flops_m"])
            else:
                out.append(cols["params_m"])
        return np.column_stack(out)


def _many(space: SearchSpace, what: str, g: np.ndarray) -> np.ndarray:
    fn = getattr(space, f"{what}_many", None)
    if fn is not None:
        return np.asarray(fn(g), dtype=np.float64)
    single = getattr(space, what)
    return np.array([single(space.decode(x)) for x in g], dtype=np.float64)


def reference_directions(n_obj: int, target: int):
    """Das-Dennis directions for ``n_obj`` objectives, as many as fit in ``target`` (at least one layer)."""
    from pymoo.util.ref_dirs import get_reference_directions

    p = 1
    while math.comb(p + 1 + n_obj - 1, n_obj - 1) <= target:
        p += 1
    return get_reference_directions("das-dennis", n_obj, n_partitions=p)


def make_problem(objectives: Objectives, predict_error, lo: np.ndarray, hi: np.ndarray):
    """The pymoo ``Problem``: integer genomes in ``[lo, hi]``; F from ``predict_error`` (surrogate) and the
    latency models; G from the budgets."""
    from pymoo.core.problem import Problem

    class NATProblem(Problem):
        def __init__(self):
            super().__init__(n_var=len(lo), n_obj=len(objectives.names),
                             n_ieq_constr=len(objectives.budgets_ms), xl=lo, xu=hi, vtype=int)

        def _evaluate(self, X, out, *args, **kwargs):
            g = np.clip(np.round(X).astype(np.int64), lo, hi)
            cols = objectives.hardware(g)
            err = predict_error(g) if "error" in objectives.names else np.zeros(len(g))
            out["F"] = objectives.F(cols, err)
            if objectives.budgets_ms:
                out["G"] = objectives.G(cols)

    return NATProblem()


def run_nsga3(problem, start: np.ndarray, pop_size: int, generations: int, seed: int) -> tuple[np.ndarray, ...]:
    """NSGA-III from ``start`` genomes (the archive's best, topped up at random by pymoo's integer sampling).

    Returns:
        ``(X, F, G)`` of the final population (``X`` integer genomes).
    """
    from pymoo.algorithms.moo.nsga3 import NSGA3
    from pymoo.core.population import Population
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    dirs = reference_directions(problem.n_obj, pop_size)
    pop_size = max(pop_size, len(dirs))
    lo, hi = problem.xl.astype(np.int64), problem.xu.astype(np.int64)
    start = np.clip(np.asarray(start, dtype=np.int64), lo, hi)[:pop_size]
    if len(start) < pop_size:
        rnd = IntegerRandomSampling().do(problem, pop_size - len(start), random_state=np.random.default_rng(seed)) \
            if _sampling_takes_rng() else IntegerRandomSampling().do(problem, pop_size - len(start))
        start = np.vstack([start, np.asarray(rnd.get("X"), dtype=np.int64)]) if len(start) else \
            np.asarray(rnd.get("X"), dtype=np.int64)
    algo = NSGA3(ref_dirs=dirs, pop_size=pop_size, sampling=Population.new("X", start.astype(float)),
                 crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                 mutation=PM(eta=20, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
    res = minimize(problem, algo, ("n_gen", generations), seed=seed, verbose=False)
    pop = res.algorithm.pop
    X = np.clip(np.round(pop.get("X")).astype(np.int64), lo, hi)
    G = pop.get("G") if problem.n_ieq_constr else np.zeros((len(X), 0))
    return X, pop.get("F"), G


def _sampling_takes_rng() -> bool:
    import inspect

    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    return "random_state" in inspect.signature(IntegerRandomSampling().do).parameters


def spread_picks(F: np.ndarray, k: int, first: int | None = None) -> list[int]:
    """``k`` row indices spread over the points ``F``: ``first`` (default: the best first objective),
    then each time the point farthest (in objectives scaled to [0, 1]) from those already chosen."""
    F = np.asarray(F, dtype=np.float64)
    if not len(F) or k <= 0:
        return []
    span = np.ptp(F, axis=0)
    Z = (F - F.min(axis=0)) / np.where(span > 0, span, 1.0)
    chosen = [int(np.argmin(F[:, 0])) if first is None else int(first)]
    d = np.linalg.norm(Z - Z[chosen[0]], axis=1)
    while len(chosen) < min(k, len(F)):
        j = int(np.argmax(d))
        if d[j] <= 0:
            break
        chosen.append(j)
        d = np.minimum(d, np.linalg.norm(Z - Z[j], axis=1))
    return chosen
