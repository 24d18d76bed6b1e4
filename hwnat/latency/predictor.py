"""Learned latency predictors: linear bases over additive terms, XGBoost corrections in log space, a
cross-validated blend of library transfer and architecture features, and conformal intervals (jackknife+
up to 20 samples, CV conformal above); stored as one JSON file (metadata + XGBoost's own JSON, never pickle).

A fitted model predicts ``log(latency_ms)`` as a blend ``w_lib * lib + w_one * one + w_feat * feat`` of up
to three components (weights >= 0, sum 1):

- a component has a *base* and a *form*. The base is a non-negative least-squares (NNLS) combination,
  in milliseconds, of terms that add up over an architecture's blocks: FLOPs, parameters, activation
  memory, the latency-table sum and per-stage sums when a table of the device exists, plus, on side
  ``feat``, block counts (how many blocks of each type run: what per-call overhead scales with), and, on
  side ``lib``, the latencies that a library of other devices' models predicts for the same architecture
  (few-shot transfer, ``hwnat.latency.transfer``; the library devices' latencies as features of the new
  device's is HELP's hardware embedding, Lee et al., NeurIPS 2021). The form is ``base`` (the base
  alone), ``residual`` (XGBoost on architecture features and ``log(base)`` fitted to ``log(y) -
  log(base)``) or ``log`` (the same XGBoost fitted to ``log(y)``); the ``one`` component (``OneDevice``) is
  a log-log line on the single library device that fits the samples best, never weighed more than the
  library base (it steadies the base's mixture of all devices; alone it may follow a chance fit);
- how much to trust the library versus the architecture features is decided from the k samples
  themselves: cross-validation (leave-one-out up to 20 samples, 10 or 3 folds above) scores every candidate
  component by out-of-fold log-RMSE, keeps the best of each side and picks the blend weights with the
  lowest out-of-fold error from a grid of quarters, a tie going to the library-free side (stacking, Wolpert
  1992; Breiman, "Stacked Regressions", 1996). The XGBoost round count of a candidate comes from the
  mean out-of-fold curve. XGBoost forms are candidates above 20 samples only (leave-one-out cannot tell
  a correction from noise at k = 10: measured, it lowered Spearman), and over the library base from 100
  samples on (``XGB_LIB_MIN``).

Intervals are conformal, on out-of-fold log residuals of the whole procedure: every choice above is re-run
without each fold, so the residual ``r_i`` of a training sample comes from a model that never saw it and
made no choice with it.

- Up to 20 samples, jackknife+ (Barber, Candes, Ramdas, Tibshirani, "Predictive inference with the
  jackknife+", Annals of Statistics 2021): at an architecture ``x`` the interval is built from the values
  ``log mu_{-i}(x) + r_i`` (``mu_{-i}``: the model fitted without sample ``i``). Of the
  ``m = floor(alpha (n+1))`` values a level-``alpha`` interval may leave out, the ``ceil(m/2)`` lowest
  and the ``floor(m/2)`` highest are left out (``interval_ranks``): central, so a skewed error gets a
  skewed interval. Below ``2/alpha - 1`` samples (19 for 90%) a central interval has no finite rank; the
  interval is then the symmetric jackknife+ one on ``|r_i|``. Guarantee (Barber et al., Theorem 1): coverage
  >= 1 - 2 alpha for exchangeable samples; the benchmark measures how close to 1 - alpha it is.
- Above 20 samples, CV conformal centred on the shipped model (``cv_interval``): ``log mu(x) + r_(lo)``
  .. ``log mu(x) + r_(hi)`` with the same ranks. If the test residual were exchangeable with the ``r_i``,
  as in split conformal (Vovk et al. 2005; Lei et al., JASA 2018), coverage would lie in
  ``[1 - alpha, 1 - alpha + 1/(n+1))``; it is only approximately so, because ``r_i`` comes from a fold
  model fitted on ``(K-1)/K`` of the samples and the test residual from ``mu``, fitted on all of them (a
  larger error of the fold models makes the interval conservative, a model less stable than the fold
  models makes it undercover; hence 10 folds up to 300 samples, where the fold models see 90% of them).
  There is no distribution-free guarantee: this is the K-fold form of the plain jackknife interval, which
  Barber et al. show has none without a stability assumption on the fit. CV+ (Barber et al., Theorem 4), whose
  guarantee is >= 1 - 2 alpha - a small term, was used before: at 5 and 3 folds its intervals add the
  disagreement between the fold models to the residuals and covered 93% / 92% for a stated 90% at
  k = 50 / 1000 on the shipped data.

``benchmarks/predictor_accuracy.py`` measures coverage and width at k = 10, 20, 50 and 1000. Any coverage
can be asked for at prediction time (``predict_genomes(g, coverage=0.95)``): the residuals and fold models
are stored.

Example:
    >>> p = LatencyPredictor.fit("nasbench201", archs, latency_ms, target="pixel3")   # doctest: +SKIP
    >>> p.save("pixel3.json"); LatencyPredictor.load("pixel3.json").predict(archs)     # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from hwnat._io import read_json, write_atomic
from hwnat.errors import BadInputError
from hwnat.latency import metrics
from hwnat.latency.features import ArchFeatures
from hwnat.latency.transfer import Library, booster_from_json, booster_to_json

log = logging.getLogger(__name__)

FORMAT = "hwnat-latency-predictor"
SCHEMA_VERSION = 2
MODES = ("base", "residual", "log")
#: component forms: the modes, and ``one`` (a log-log line on the library device that fits the samples best)
FORMS = MODES + ("one",)
#: ``lib``: the base may use the library devices' latencies; ``feat``: architecture features (and table) only
SIDES = ("lib", "feat")
#: grid of each component's weight in the blend (weights sum to 1)
BLEND_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: prefix of the block-count columns of a base (``ArchFeatures.counts``; side ``feat`` only: with a library
#: they add as many weights as there are library devices, and at k = 10 the library base ranked worse with
#: them on NAS-Bench-201, mean Spearman 0.941 -> 0.915, while the feature base gained 0.72 -> 0.83)
COUNT = "count:"
#: up to this many samples: leave-one-out folds, the linear base only
LOO_MAX = 20
#: from this many samples on, XGBoost corrections over the library base are candidates too
XGB_LIB_MIN = 100


@dataclass(frozen=True)
class FitSettings:
    """Settings of ``LatencyPredictor.fit``; the defaults need no tuning.

    Attributes:
        coverage: central interval coverage stated in the model (0.5..0.999); another can be asked for
            at prediction time.
        modes: candidate forms (``base``, ``residual``, ``log``). ``None``: ``base`` and ``residual``,
            plus ``log`` from 50 samples on. XGBoost forms need more than 20 samples.
        sides: candidate sides (``lib``, ``feat``). ``None``: both when a library is given (the blend
            decides how much to trust it), else ``feat``. ``("lib",)``: always through the library.
        folds: folds of the internal cross-validation above 20 samples (leave-one-out at or below).
            ``None``: 10 up to 300 samples, 3 above. The CV interval is conservative by the extra error
            of fold models fitted on ``(K-1)/K`` of the samples, which is largest where few samples
            are, so 10 folds there (each fold model sees 90%); every fold re-runs the whole procedure,
            whose own choices cross-validate on the other folds (about 1 + K + K(K-1)/2 XGBoost
            trainings per candidate), so 3 folds where each fold holds 100+ samples.
        max_rounds: cap on XGBoost rounds.
        patience: early-stopping patience (rounds) on each out-of-fold curve.
        nthread: XGBoost threads.
        seed: seed of fold shuffling and XGBoost sampling.
    """

    coverage: float = 0.9
    modes: tuple[str, ...] | None = None
    sides: tuple[str, ...] | None = None
    folds: int | None = None
    max_rounds: int = 1000
    patience: int = 40
    nthread: int = 2
    seed: int = 0

    def __post_init__(self):
        _check_coverage(self.coverage)
        bad = [m for m in (MODES if self.modes is None else self.modes) if m not in MODES]
        if bad or self.modes == ():
            raise BadInputError(f"unknown predictor mode {bad[0] if bad else '(none)'!r}; expected some of "
                                f"{', '.join(MODES)}")
        bad = [s for s in (SIDES if self.sides is None else self.sides) if s not in SIDES]
        if bad or self.sides == ():
            raise BadInputError(f"unknown predictor side {bad[0] if bad else '(none)'!r}; expected some of "
                                f"{', '.join(SIDES)}")
        if self.folds is not None and self.folds < 2:
            raise BadInputError(f"folds must be >= 2, got {self.folds}")


def _check_coverage(coverage: float, query: bool = False) -> float:
    """A model's stated coverage is in [0.5, 1); a query may ask any central interval in (0, 1) (the
    one-sided bound of ``--confidence 0.7`` is the upper end of the central 40% interval)."""
    if query and not 0.0 < coverage < 1.0:
        raise BadInputError(f"interval coverage must be in (0, 1), got {coverage}")
    if not query and not 0.5 <= coverage < 1.0:
        raise BadInputError(f"coverage must be in [0.5, 1), got {coverage}")
    return float(coverage)


def xgb_params(n: int, nthread: int, seed: int) -> dict:
    """XGBoost parameters by training-set size: shallow, strongly regularised trees for a few samples."""
    if n < 60:
        depth, mcw, sub, eta = 2, 1.0, 1.0, 0.1
    elif n < 300:
        depth, mcw, sub, eta = 4, 2.0, 0.9, 0.1
    else:
        depth, mcw, sub, eta = 6, 2.0, 0.8, 0.1
    return {"eta": eta, "max_depth": depth, "min_child_weight": mcw, "subsample": sub,
            "colsample_bytree": 0.8, "reg_lambda": 1.0, "objective": "reg:squarederror",
            "tree_method": "hist", "nthread": nthread, "seed": seed}


# ---- the linear base --------------------------------------------------------------------------------
@dataclass
class LinearBase:
    """``base_ms = intercept + sum_j weight_j * column_j``, weights and intercept >= 0 (NNLS).

    Attributes:
        columns: names of the additive terms (``lib:<device>`` for library devices, else feature names).
        weights: one weight per column (ms per unit of the column).
        intercept: ms.
        floor_ms: predictions are clipped below at this value (a base of 0 has no logarithm).
    """

    columns: list[str]
    weights: np.ndarray
    intercept: float
    floor_ms: float

    @classmethod
    def fit(cls, A: np.ndarray, y_ms: np.ndarray, columns: Sequence[str]) -> LinearBase:
        scale = np.abs(A).mean(axis=0)
        scale[scale == 0] = 1.0
        ys = float(np.mean(y_ms))
        M = np.hstack([A / scale, np.ones((len(A), 1))])
        w, _ = nnls(M, y_ms / ys, maxiter=50 * M.shape[1])
        return cls(list(columns), w[:-1] / scale * ys, float(w[-1] * ys), float(0.01 * np.min(y_ms)))

    def predict(self, A: np.ndarray) -> np.ndarray:
        return np.maximum(A @ self.weights + self.intercept, self.floor_ms)

    def pruned(self) -> LinearBase:
        """The same base without the library columns it gives no weight (their models need not ship)."""
        keep = [i for i, (c, w) in enumerate(zip(self.columns, self.weights, strict=True))
                if not c.startswith("lib:") or w > 0]
        return LinearBase([self.columns[i] for i in keep], self.weights[keep], self.intercept, self.floor_ms)

    def to_dict(self) -> dict:
        return {"columns": self.columns, "weights": [float(v) for v in self.weights],
                "intercept": self.intercept, "floor_ms": self.floor_ms}

    @classmethod
    def from_dict(cls, d: dict) -> LinearBase:
        return cls(list(d["columns"]), np.asarray(d["weights"], dtype=np.float64), float(d["intercept"]),
                   float(d["floor_ms"]))


@dataclass
class OneDevice:
    """``log base_ms = intercept + slope * log(column)``: the one library device whose latency, scaled,
    explains the samples best (chosen by leave-one-out among the library columns, slope >= 0).

    HELP's point (Lee et al., NeurIPS 2021) is that a new device's latencies follow those of the
    devices it resembles; with 10 noisy samples, two numbers on the most similar device are often a
    steadier guess than a mixture of all of them, and the blend averages the two (measured on the
    shipped data, k = 10, leave one device out: mean Spearman 0.938 -> 0.945 NAS-Bench-201, 0.853 ->
    0.864 FBNet).

    Attributes:
        columns: ``[lib:<device>]``.
        slope, intercept: in log space.
    """

    columns: list[str]
    slope: float
    intercept: float

    @classmethod
    def fit(cls, A: np.ndarray, y_ms: np.ndarray, columns: Sequence[str]) -> OneDevice:
        """Choose the column by closed-form leave-one-out error of the log-log line, then fit it."""
        yl = np.log(y_ms)
        n = len(yl)
        best = (np.inf, 0, 0.0, float(np.mean(yl)))
        for j in range(A.shape[1]):
            x = np.log(A[:, j])
            xc = x - x.mean()
            sxx = float(xc @ xc)
            if sxx <= 0:
                continue
            b = float(xc @ (yl - yl.mean())) / sxx
            if b < 0:
                continue
            a = float(yl.mean() - b * x.mean())
            h = 1.0 / n + xc ** 2 / sxx  # leverage of each sample
            e = float(np.mean(((yl - a - b * x) / np.maximum(1.0 - h, 1e-6)) ** 2))
            if e < best[0]:
                best = (e, j, b, a)
        _, j, b, a = best
        return cls([columns[j]], b, a)

    def predict_log(self, A: np.ndarray) -> np.ndarray:
        return self.intercept + self.slope * np.log(A[:, 0])

    def pruned(self) -> OneDevice:
        return self

    def to_dict(self) -> dict:
        return {"columns": self.columns, "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, d: dict) -> OneDevice:
        return cls(list(d["columns"]), float(d["slope"]), float(d["intercept"]))


def _xgb_input(X: np.ndarray, lb: np.ndarray) -> np.ndarray:
    """XGBoost's input: the architecture features and the log of the component's base."""
    return np.column_stack([X, lb]).astype(np.float32)


@dataclass
class Component:
    """One model form: a linear base on one side and, for ``residual``/``log``, an XGBoost booster; or,
    for ``one``, the ``OneDevice`` line on the library side.

    Attributes:
        form: ``base``, ``residual``, ``log`` or ``one``.
        side: ``lib`` or ``feat`` (which columns the base may use).
        base: the fitted ``LinearBase`` (``OneDevice`` for ``one``).
        booster: the XGBoost booster (None for ``base``).
    """

    form: str
    side: str
    base: LinearBase | OneDevice
    booster: object = None

    @property
    def name(self) -> str:
        return f"{self.form}:{self.side}"

    def predict_log(self, A: np.ndarray, index: dict[str, int], X: np.ndarray) -> np.ndarray:
        """log ms of every row; ``A``: the model's additive columns, ``index``: column name -> position."""
        cols = A[:, [index[c] for c in self.base.columns]]
        if self.form == "one":
            return self.base.predict_log(cols)
        lb = np.log(self.base.predict(cols))
        if self.form == "base":
            return lb
        r = self.booster.inplace_predict(_xgb_input(X, lb)).astype(np.float64)
        return lb + r if self.form == "residual" else r

    def to_dict(self) -> dict:
        return {"form": self.form, "side": self.side, "base": self.base.to_dict(),
                "booster": booster_to_json(self.booster) if self.booster is not None else None}

    @classmethod
    def from_dict(cls, d: dict, nthread: int, where: str) -> Component:
        form, side = d["form"], d["side"]
        if form not in FORMS or side not in SIDES:
            raise BadInputError(f"{where}: component form/side {form!r}/{side!r}; expected {FORMS} / {SIDES}")
        if form == "one":
            return cls(form, side, OneDevice.from_dict(d["base"]))
        booster = None
        if form != "base":
            if not d.get("booster"):
                raise BadInputError(f"{where}: form {form!r} needs field 'booster'")
            booster = booster_from_json(d["booster"], nthread, f"{where}.booster")
        return cls(form, side, LinearBase.from_dict(d["base"]), booster)


#: a blend: (weight, component) pairs whose log predictions are averaged with those weights (sum 1)
Blend = list


def _blend_log(blend: Blend, A: np.ndarray, index: dict[str, int], X: np.ndarray) -> np.ndarray:
    return sum(w * c.predict_log(A, index, X) for w, c in blend)


def _blend_name(blend: Blend) -> str:
    return " + ".join(f"{w:g} {c.name}" for w, c in blend)


# ---- conformal intervals ------------------------------------------------------------------------------
def _conformal_q(abs_res: np.ndarray, coverage: float) -> float:
    """Split-conformal half-width: the ceil(coverage * (n + 1))-th smallest |residual| (the largest when
    n is too small for the stated coverage)."""
    r = np.sort(np.asarray(abs_res, dtype=np.float64))
    rank = math.ceil(coverage * (len(r) + 1))
    return float(r[min(rank, len(r)) - 1])


def interval_ranks(n: int, coverage: float) -> tuple[int, int, bool, bool]:
    """1-based ranks of the lower and upper bound among ``n`` jackknife+ values.

    Central: of the ``m = floor(alpha (n+1))`` ranks a level-``alpha`` interval may leave out, the lower
    tail leaves out ``ceil(m/2)`` and the upper tail ``floor(m/2)`` (each tail calibrated on its own; an
    odd ``m`` gives the extra rank to the lower tail, so the upper bound, which a latency budget is held
    to, stays at ``alpha/2`` or less). Leaving ``floor(alpha/2 (n+1))`` out on each side instead would
    waste up to a rank per tail: at n = 50 that is 92% nominal coverage for a stated 90%.

    Returns:
        ``(lo_rank, hi_rank, central, exact)``: central when each tail can leave out at least one rank
        (``m >= 2``, from 19 samples at 90%); otherwise the symmetric ranks on ``|r|``. ``exact`` is False
        when even those had to be clipped to 1..n (too few samples for the coverage: no guarantee).
    """
    alpha = 1.0 - coverage
    m = math.floor(alpha * (n + 1) + 1e-9)
    if m >= 2:
        return (m + 1) // 2, n + 1 - m // 2, True, True
    lo, hi = m, math.ceil((1 - alpha) * (n + 1) - 1e-9)
    exact = lo >= 1 and hi <= n
    return max(lo, 1), min(hi, n), False, exact


def jackknife_plus(P_fold: np.ndarray, fold_of: np.ndarray, residuals: np.ndarray, coverage: float,
                   chunk: int = 2_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Jackknife+/CV+ bounds in log space.

    Args:
        P_fold: ``(m, K)`` log predictions of the K fold models (fitted without fold k) at m points.
        fold_of: ``(n,)`` fold of each training sample.
        residuals: ``(n,)`` signed out-of-fold log residuals ``log y_i - log mu_{-k(i)}(x_i)``.
        coverage: 1 - alpha.

    Returns:
        ``(lo, hi)`` log bounds ``(m,)``: central ranks where ``n`` allows, else symmetric (see
        ``interval_ranks``).
    """
    n = len(residuals)
    lo_r, hi_r, central, _ = interval_ranks(n, coverage)
    m = len(P_fold)
    lo, hi = np.empty(m), np.empty(m)
    step = max(1, chunk // max(n, 1))
    for s in range(0, m, step):
        V = P_fold[s:s + step][:, fold_of]
        if central:
            W = V + residuals
            lo[s:s + step] = np.partition(W, lo_r - 1, axis=1)[:, lo_r - 1]
            hi[s:s + step] = np.partition(W, hi_r - 1, axis=1)[:, hi_r - 1]
        else:
            R = np.abs(residuals)
            lo[s:s + step] = np.partition(V - R, lo_r - 1, axis=1)[:, lo_r - 1]
            hi[s:s + step] = np.partition(V + R, hi_r - 1, axis=1)[:, hi_r - 1]
    return lo, hi


def cv_interval(p_log: np.ndarray, residuals: np.ndarray, coverage: float) -> tuple[np.ndarray, np.ndarray]:
    """Cross-validation conformal bounds in log space: the shipped model's prediction plus order statistics
    of the out-of-fold residuals (the split-conformal ranks of ``interval_ranks`` applied to CV residuals).

    Args:
        p_log: ``(m,)`` log predictions of the shipped model.
        residuals: ``(n,)`` signed out-of-fold log residuals.
        coverage: 1 - alpha.

    Returns:
        ``(lo, hi)`` log bounds ``(m,)``: ``p + r_(lo)`` and ``p + r_(hi)`` where ``n`` allows central ranks,
        else ``p -/+ |r|_(hi)``.

    Example:
        >>> lo, hi = cv_interval(np.zeros(2), np.arange(99.0), 0.9)
        >>> lo.tolist(), hi.tolist()
        ([4.0, 4.0], [94.0, 94.0])
    """
    lo_r, hi_r, central, _ = interval_ranks(len(residuals), coverage)
    p = np.asarray(p_log, dtype=np.float64)
    if central:
        r = np.sort(residuals)
        return p + r[lo_r - 1], p + r[hi_r - 1]
    q = np.sort(np.abs(residuals))[hi_r - 1]
    return p - q, p + q


def _folds(n: int, settings: FitSettings) -> list[np.ndarray]:
    if n <= LOO_MAX:
        return [np.array([i]) for i in range(n)]
    k = settings.folds or (10 if n <= 300 else 3)
    perm = np.random.default_rng(settings.seed).permutation(n)
    return [np.sort(perm[f::k]) for f in range(k)]


# ---- fitting: one procedure, re-run without each fold ---------------------------------------------------
def _all_stalled(patience: int):
    """XGBoost callback: stop once every evaluation set's error has not improved for ``patience`` rounds."""
    import xgboost as xgb

    class AllStalled(xgb.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            for d in evals_log.values():
                c = d["rmse"]
                if len(c) - 1 - int(np.argmin(c)) < patience:
                    return False
            return bool(evals_log)

    return AllStalled()


def _own_curve(sq: np.ndarray, patience: int) -> np.ndarray:
    """The curve cut where early stopping on it alone would have stopped (so it depends on its own fold
    only, not on when the training stopped for another fold)."""
    best = 0
    for t in range(len(sq)):
        if sq[t] < sq[best]:
            best = t
        if t - best >= patience:
            return sq[: t + 1]
    return sq


def _mean_curve(curves: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """Out-of-fold mean squared error per round; a fold that stopped early keeps its last value."""
    L = max(len(c) for c in curves)
    tot = np.zeros(L)
    for c in curves:
        tot += np.concatenate([c, np.full(L - len(c), c[-1])])
    return tot / sum(sizes)


def _blend_choice(sq: dict[tuple, np.ndarray]) -> tuple:
    """The blend weights to ship: of the weight vectors in ``sq`` (feature side first, each a point of
    ``BLEND_WEIGHTS`` summing to 1), the one with the lowest out-of-fold mean squared error (stacking,
    Breiman 1996), a tie going to the larger weight of the library-free component, so that a library that
    does not explain the k samples better than the architecture features falls back to the library-free
    model. An earlier rule kept the library unless the features were better by one standard error; it
    ranked best with a library of similar devices but fell below the library-free model where the library
    held no device of the target's family (measured on the shipped data, leave-one-family-out, k = 10, 4
    seeds: 9 of 26 devices worse than library-free, against 5 with this rule)."""
    order = sorted(sq, key=lambda c: (-c[0], c))
    best = order[0]
    for c in order[1:]:
        if sq[c].mean() < sq[best].mean() * (1 - 1e-9):
            best = c
    return best


class _Fitter:
    """The fitting procedure on the rows outside a set of excluded folds, with every base and booster
    cached by the rows it was trained on (the fold models' procedures share the nested trainings)."""

    def __init__(self, A, cols, X, y, folds, forms, sides, settings: FitSettings):
        self.A, self.cols, self.X, self.y = A, cols, X, y
        self.ylog = np.log(y)
        self.folds = folds
        self.fold_of = np.empty(len(y), dtype=np.int64)
        for k, f in enumerate(folds):
            self.fold_of[f] = k
        self.side_cols = {"lib": [i for i, c in enumerate(cols) if not c.startswith(COUNT)],
                          "feat": [i for i, c in enumerate(cols) if not c.startswith("lib:")]}
        # with a library: log:lib sees the features too, so log:feat is left out; below XGB_LIB_MIN
        # samples no XGBoost on the library side (measured on NAS-Bench-201 at k = 50: no gain over the
        # library base, Spearman +0.011/-0.001/-0.001 on pixel3/gold_6240/titanx_32, at 30x the cost),
        # while residual:feat stays: it is what a model without library would use
        self.cands = [(f, s) for s in sides for f in forms
                      if f == "base" or not ("lib" in sides and (
                          (f == "log" and s == "feat") or (s == "lib" and len(y) < XGB_LIB_MIN)))]
        if "lib" in sides and any(c.startswith("lib:") for c in cols):
            self.cands.append(("one", "lib"))
        self.settings = settings
        self.params = xgb_params(len(y), settings.nthread, settings.seed)
        self._bases: dict = {}
        self._boosters: dict = {}

    def rows(self, excl: frozenset) -> np.ndarray:
        return np.flatnonzero(~np.isin(self.fold_of, sorted(excl)))

    def base(self, side: str, excl: frozenset) -> tuple[LinearBase, np.ndarray]:
        key = (side, excl)
        if key not in self._bases:
            r, idx = self.rows(excl), self.side_cols[side]
            b = LinearBase.fit(self.A[np.ix_(r, idx)], self.y[r], [self.cols[i] for i in idx])
            self._bases[key] = (b, np.log(b.predict(self.A[:, idx])))
        return self._bases[key]

    def one(self, excl: frozenset) -> tuple[OneDevice, np.ndarray]:
        """The ``OneDevice`` line fitted outside ``excl`` and its log predictions of every row."""
        key = ("one", excl)
        if key not in self._bases:
            r = self.rows(excl)
            idx = [i for i, c in enumerate(self.cols) if c.startswith("lib:")]
            b = OneDevice.fit(self.A[np.ix_(r, idx)], self.y[r], [self.cols[i] for i in idx])
            self._bases[key] = (b, b.predict_log(self.A[:, [self.cols.index(b.columns[0])]]))
        return self._bases[key]

    def _train(self, form, side, excl, rounds, evals=()):
        import xgboost as xgb

        _, lb = self.base(side, excl)
        F = _xgb_input(self.X, lb)
        off = lb if form == "residual" else np.zeros(len(lb))
        t = self.ylog - off
        r = self.rows(excl)
        hist: dict = {}
        dev = [(xgb.DMatrix(F[self.folds[j]], t[self.folds[j]]), f"f{j}") for j in evals]
        b = xgb.train(self.params, xgb.DMatrix(F[r], t[r]), rounds, evals=dev, evals_result=hist,
                      verbose_eval=False,
                      callbacks=[_all_stalled(self.settings.patience)] if dev else None)
        b.set_param({"nthread": self.settings.nthread})
        return b, hist, F, off

    def booster(self, form: str, side: str, excl: frozenset):
        """The candidate's booster trained outside ``excl`` and each excluded fold's own error curve."""
        key = (form, side, excl)
        if key not in self._boosters:
            ev = sorted(excl)
            b, hist, F, off = self._train(form, side, excl, self.settings.max_rounds, ev)
            curves = {j: _own_curve(np.asarray(hist[f"f{j}"]["rmse"]) ** 2 * len(self.folds[j]),
                                    self.settings.patience) for j in ev}
            self._boosters[key] = (b, curves, F, off)
        return self._boosters[key]

    def procedure(self, excl: frozenset) -> tuple[Blend, dict]:
        """Choose and fit the blend on the rows outside ``excl``, choosing by cross-validation over the
        other folds only."""
        inner = [j for j in range(len(self.folds)) if j not in excl]
        rows = self.rows(excl)
        oof, rounds = {}, {}
        for form, side in self.cands:
            name = f"{form}:{side}"
            pred = np.full(len(self.y), np.nan)
            if form in ("base", "one"):
                for j in inner:
                    fit = self.base(side, excl | {j}) if form == "base" else self.one(excl | {j})
                    pred[self.folds[j]] = fit[1][self.folds[j]]
            else:
                got = [self.booster(form, side, excl | {j}) for j in inner]
                sq = _mean_curve([e[1][j] for e, j in zip(got, inner, strict=True)],
                                 [len(self.folds[j]) for j in inner])
                rounds[name] = int(np.argmin(sq)) + 1
                for (b, _, F, off), j in zip(got, inner, strict=True):
                    f = self.folds[j]
                    it = min(rounds[name], b.num_boosted_rounds())
                    pred[f] = off[f] + b.inplace_predict(F[f], iteration_range=(0, it))
            oof[name] = pred
        yl = self.ylog[rows]
        scores = {k: float(np.sqrt(np.mean((v[rows] - yl) ** 2))) for k, v in oof.items()}
        best = {}
        for name in scores:
            side = name.split(":")[1]
            if name != "one:lib" and (side not in best or scores[name] < scores[best[side]]):
                best[side] = name
        if "one:lib" in scores:
            best["one"] = "one:lib"
        # the blend's members, library-free first: a tie goes to the smaller library weight
        members = [best[m] for m in ("feat", "lib", "one") if m in best]
        # OneDevice is a partner of the library base, never weighed more: alone, a line on whichever of a
        # dozen devices happens to fit 10 samples can rank badly (measured: Spearman 0.41 where the
        # library-free model had 0.79, FBNet samsung_a50 leave-one-family-out, k = 10)
        one = members.index("one:lib") if "one:lib" in members else None
        grid = [c for c in itertools.product(BLEND_WEIGHTS, repeat=len(members)) if abs(sum(c) - 1) < 1e-9
                and (one is None or c[one] <= c[one - 1])]
        sq = {c: (sum(wt * oof[m][rows] for wt, m in zip(c, members, strict=True)) - yl) ** 2 for c in grid}
        blend_scores = {c: float(np.sqrt(e.mean())) for c, e in sq.items()} if len(grid) > 1 else {}
        chosen = _blend_choice(sq)
        w = float(sum(wt for wt, m in zip(chosen, members, strict=True) if not m.endswith(":feat")))
        blend = []
        for wt, name in zip(chosen, members, strict=True):
            if wt <= 0:
                continue
            form, side = name.split(":")
            if form == "one":
                blend.append((wt, Component(form, side, self.one(excl)[0])))
                continue
            base, _ = self.base(side, excl)
            booster = None
            if form != "base":
                r = rounds[name]
                if excl:
                    b = self.booster(form, side, excl)[0]
                    if r <= b.num_boosted_rounds():  # a prefix: the same trees as a fresh r-round training
                        booster = b[:r]
                        booster.set_param({"nthread": self.settings.nthread})
                if booster is None:
                    booster = self._train(form, side, excl, r)[0]
            blend.append((wt, Component(form, side, base, booster)))
        info = {"rmse_log": scores, "rounds": rounds, "weight_lib": w,
                "blend_rmse_log": {" ".join(f"{x:g}" for x in k): v for k, v in blend_scores.items()},
                "blend_members": members, "chosen": _blend_name(blend)}
        return blend, info


# ---- the predictor ----------------------------------------------------------------------------------
class LatencyPredictor:
    """A fitted latency predictor of one device on one space. Build with ``fit`` or ``load``.

    Attributes:
        blend: the shipped model, ``[(weight, Component), ...]`` (log-space blend).
        fold_models: the blends fitted without each fold (the jackknife+ intervals use them), one per fold.
        fold_of: fold of each training sample; ``residuals``: its signed out-of-fold log residual.
        mode: the form of the blend's heaviest component (``base``, ``residual``, ``log``).
        interval: the stated coverage, the method and a typical half-width (``half_width_log``).
    """

    def __init__(self, space: str, target: str, features: ArchFeatures, blend: Blend, fold_models: list[Blend],
                 fold_of: np.ndarray, residuals: np.ndarray, library: Library | None = None,
                 interval: dict | None = None, meta: dict | None = None):
        self.space_name = space
        self.target = target
        self.features = features
        self.blend = blend
        self.fold_models = fold_models
        self.fold_of = np.asarray(fold_of, dtype=np.int64)
        self.residuals = np.asarray(residuals, dtype=np.float64)
        self.library = library
        self.interval = interval or {}
        self.meta = meta or {}
        self._n_lib_features = len(ArchFeatures(features.space).names) if features.has_table else None

    @property
    def mode(self) -> str:
        return max(self.blend, key=lambda wc: wc[0])[1].form if self.blend else "base"

    # ---- fitting ---------------------------------------------------------------------------------
    @classmethod
    def fit(cls, space, archs: Sequence[str] | None, latency_ms, *, genomes: np.ndarray | None = None,
            target: str = "latency_ms", library: Library | None = None, table=None,
            settings: FitSettings | None = None, source: str = "data") -> LatencyPredictor:
        """Fit a predictor (the blend, its fold models and the interval's residuals).

        Args:
            space: space name or ``SearchSpace``.
            archs: canonical strings (or pass ``genomes``).
            latency_ms: measured latency (ms, > 0) of each architecture.
            genomes: integer genomes instead of ``archs``.
            target: the device/column name, recorded in the model.
            library: a fitted ``Library`` of other devices (few-shot transfer), or None.
            table: a ``LatencyTable`` of this device, or None.
            settings: ``FitSettings``.
            source: name used in error messages (the training file).

        Raises:
            BadInputError: fewer than 5 samples, non-positive or non-finite latencies, bad archs.
        """
        settings = settings or FitSettings()
        fx = ArchFeatures(space, table=table)
        g = fx.genomes(list(archs), source) if genomes is None else fx.check_genomes(genomes)
        y = np.asarray(latency_ms, dtype=np.float64).ravel()
        if len(y) != len(g):
            raise BadInputError(f"{source}: {len(g)} archs but {len(y)} latencies")
        bad = np.flatnonzero(~np.isfinite(y) | (y <= 0))
        if len(bad):
            raise BadInputError(f"{source}: row {bad[0]}: latency {y[bad[0]]!r} ms; expected a number > 0")
        if len(y) < 5:
            raise BadInputError(f"{source}: {len(y)} training samples; a predictor needs at least 5 "
                                "(10 is the supported few-shot case)")
        X = fx.transform(g)
        if library is not None and library.feature_names != ArchFeatures(fx.space).names:
            raise BadInputError("library models were fitted on other features than this space's")
        if library is not None and not library.devices:
            library = None
        shell = cls(fx.space.name, target, fx, [], [], [], [], library=library)
        A, cols = shell._additive(X, library, g)
        n = len(y)
        forms = settings.modes or (("base", "residual") + (("log",) if n >= 50 else ()))
        forms = tuple(f for f in forms if f == "base" or n > LOO_MAX) or ("base",)
        sides = tuple(s for s in (settings.sides or SIDES) if s == "feat" or library is not None)
        if not sides:  # sides=("lib",) without a library
            sides = ("feat",)
        folds = _folds(n, settings)
        fitter = _Fitter(A, cols, X, y, folds, forms, sides, settings)
        blend, info = fitter.procedure(frozenset())
        index = {c: i for i, c in enumerate(cols)}
        fold_models, residuals = [], np.empty(n)
        for k, f in enumerate(folds):
            fm, _ = fitter.procedure(frozenset({k}))
            fold_models.append(fm)
            residuals[f] = fitter.ylog[f] - _blend_log(fm, A[f], index, X[f])
        log.info("fitted %s (cross-validated log-RMSE %s)", info["chosen"],
                 {k: round(v, 4) for k, v in info["rmse_log"].items()})

        # ship only the library devices some base uses
        for b in [blend, *fold_models]:
            for i, (w, c) in enumerate(b):
                b[i] = (w, Component(c.form, c.side, c.base.pruned(), c.booster))
        used = {col[4:] for b in [blend, *fold_models] for _, c in b for col in c.base.columns
                if col.startswith("lib:")}
        lib_used = library.select([d for d in library.devices if d in used]) if library is not None else None
        if lib_used is not None and not lib_used.devices:
            lib_used = None

        cv_ms = np.exp(fitter.ylog - residuals)
        scheme = "jackknife+" if n <= LOO_MAX else "cv"
        model = cls(fx.space.name, target, fx, blend, fold_models, fitter.fold_of, residuals, lib_used,
                    interval={"coverage": settings.coverage, "scheme": scheme})
        lo, hi = model._bounds_log(A, index, X, _blend_log(blend, A, index, X), settings.coverage)
        _, _, central, exact = interval_ranks(n, settings.coverage)
        method = ("jackknife+" if n <= LOO_MAX
                  else f"CV conformal ({len(folds)} folds, centred on the shipped model)")
        model.interval = {
            "coverage": settings.coverage, "scheme": scheme,
            "method": f"{method}, {'central' if central else 'symmetric'}, on out-of-fold log residuals "
                      "of the whole procedure",
            "n_calibration": int(n), "central": central, "exact": exact,
            "half_width_log": float(np.mean(hi - lo) / 2)}
        model.meta = {
            "training": {"n": int(n), "source": source,
                         "latency_ms": {"min": float(y.min()), "median": float(np.median(y)),
                                        "max": float(y.max())}},
            "cv": {"folds": len(folds), "scheme": "leave-one-out" if n <= LOO_MAX else f"{len(folds)}-fold",
                   **info, "metrics": metrics.summary(cv_ms, y)},
            "settings": {"coverage": settings.coverage, "modes": list(forms), "sides": list(sides),
                         "folds": settings.folds, "max_rounds": settings.max_rounds,
                         "patience": settings.patience, "seed": settings.seed,
                         "xgboost_params": {k: v for k, v in fitter.params.items() if k != "nthread"}},
        }
        return model

    def _additive(self, X: np.ndarray, library: Library | None, genomes: np.ndarray
                  ) -> tuple[np.ndarray, list[str]]:
        """The bases' columns (ms-like, >= 0): library latencies, additive features, then block counts
        (``ArchFeatures.counts``, the ``feat`` side only)."""
        names = self.features.names
        cols, mats = [], []
        if library is not None and library.devices:
            Xl = X if self._n_lib_features is None else X[:, : self._n_lib_features]
            mats.append(np.exp(library.predict_log(Xl)))
            cols += [f"lib:{d}" for d in library.devices]
        idx = [names.index(c) for c in self.features.additive_names()]
        mats.append(X[:, idx].astype(np.float64))
        cols += self.features.additive_names()
        mats.append(self.features.counts(genomes))
        cols += [f"{COUNT}{c}" for c in self.features.count_names()]
        return np.hstack(mats), cols

    # ---- prediction --------------------------------------------------------------------------------
    def predict_genomes(self, genomes: np.ndarray, coverage: float | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted latency and central interval bounds (ms) of many genomes, vectorised.

        Args:
            genomes: ``(n, g)`` integer genomes.
            coverage: the interval's coverage; default the one stated in the model (``interval``).
                Any other (e.g. 0.95 for a stricter budget) costs only a partial sort per row.

        Returns:
            ``(latency_ms, lo_ms, hi_ms)``, each ``(n,)``; ``lo_ms <= latency_ms <= hi_ms``.

        Example:
            >>> ms, lo, hi = model.predict_genomes(genomes, coverage=0.95)   # doctest: +SKIP
        """
        coverage = _check_coverage(self.interval.get("coverage", 0.9) if coverage is None else coverage,
                                   query=True)
        X = self.features.transform(genomes)
        A, cols = self._additive(X, self.library, genomes)
        index = {c: i for i, c in enumerate(cols)}
        missing = [c for _, comp in self.blend for c in comp.base.columns if c not in index]
        if missing:
            raise BadInputError(f"model base column {missing[0]!r} is not among {cols}")
        out = _blend_log(self.blend, A, index, X)
        lo, hi = self._bounds_log(A, index, X, out, coverage)
        return np.exp(out), np.exp(np.minimum(lo, out)), np.exp(np.maximum(hi, out))

    def _bounds_log(self, A, index, X, out, coverage: float) -> tuple[np.ndarray, np.ndarray]:
        """Log interval bounds by the model's scheme (``jackknife_plus`` or ``cv_interval``)."""
        if self.interval.get("scheme", "jackknife+") == "cv":
            return cv_interval(out, self.residuals, coverage)
        P = np.column_stack([_blend_log(fm, A, index, X) for fm in self.fold_models])
        return jackknife_plus(P, self.fold_of, self.residuals, coverage)

    def predict(self, archs: Sequence[str], source: str = "archs", coverage: float | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like ``predict_genomes`` for canonical strings (the error names ``source`` and the row)."""
        return self.predict_genomes(self.features.genomes(list(archs), source), coverage)

    def evaluate(self, archs: Sequence[str], latency_ms, source: str = "data") -> dict:
        """``metrics.summary`` of the predictions against measured latencies."""
        y = np.asarray(latency_ms, dtype=np.float64)
        p, lo, hi = self.predict(archs, source)
        return metrics.summary(p, y, lo, hi)

    # ---- files ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        import xgboost as xgb

        import hwnat

        table = None
        if self.features.table is not None:
            t = self.features.table
            table = {"device": t.device, "space": t.space,
                     "entries": {k: {"median_ms": float(e["median_ms"])} for k, e in t.entries.items()}}

        def blend_dict(b):
            return [{"weight": float(w), **c.to_dict()} for w, c in b]

        return {
            "format": FORMAT, "schema_version": SCHEMA_VERSION, "space": self.space_name, "target": self.target,
            "mode": self.mode, "features": {"names": self.features.names, "has_table": self.features.has_table},
            "blend": blend_dict(self.blend), "interval": self.interval,
            "conformal": {"fold_of": self.fold_of.tolist(), "residuals_log": self.residuals.tolist(),
                          "fold_models": [blend_dict(b) for b in self.fold_models]},
            **self.meta,
            "versions": {"hwnat": hwnat.__version__, "xgboost": xgb.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
            "table": table,
            "library": self.library.to_dict() if self.library is not None else None,
        }

    def save(self, path: str | Path) -> Path:
        """Write the model as one JSON file (atomically)."""
        path = Path(path)
        write_atomic(path, json.dumps(self.to_dict(), separators=(",", ":")).encode())
        return path

    @classmethod
    def load(cls, path: str | Path, space: str | None = None, nthread: int = 2) -> LatencyPredictor:
        """Read a model file; with ``space`` given, refuse a model of another space.

        Raises:
            BadInputError: missing, corrupt or truncated file, not a predictor, another space, a feature
                set this hwnat does not produce.
        """
        path = Path(path)
        d = read_json(path, "model file")
        return cls.from_dict(d, where=str(path), space=space, nthread=nthread)

    @classmethod
    def from_dict(cls, d, where: str = "model", space: str | None = None, nthread: int = 2) -> LatencyPredictor:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise BadInputError(f"{where}: not an hwnat latency predictor (field 'format' should be {FORMAT!r})")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise BadInputError(f"{where}: field schema_version = {d.get('schema_version')!r}; this hwnat reads "
                                f"{SCHEMA_VERSION} (refit the model with `hwnat predictor fit`)")
        sp = d.get("space")
        if not isinstance(sp, str):
            raise BadInputError(f"{where}: field 'space' missing")
        if space is not None and sp.replace("_", "-") != space.replace("_", "-"):
            raise BadInputError(f"{where}: model is for space {sp!r}, not {space!r}")
        table = None
        try:
            if d.get("table"):
                from hwnat.latency.table import LatencyTable

                t = d["table"]
                table = LatencyTable(t["space"], t["device"], entries=dict(t["entries"]))
            fx = ArchFeatures(sp, table=table)
            names = d["features"]["names"]
            interval = dict(d["interval"])
            _check_coverage(float(interval["coverage"]))
            if interval.get("scheme", "jackknife+") not in ("jackknife+", "cv"):
                raise ValueError(f"interval.scheme {interval['scheme']!r} is not 'jackknife+' or 'cv'")
            conf = d["conformal"]
            fold_of = np.asarray(conf["fold_of"], dtype=np.int64)
            residuals = np.asarray(conf["residuals_log"], dtype=np.float64)
            raw_blends = [d["blend"], *conf["fold_models"]]
            if len(fold_of) != len(residuals) or not len(fold_of) or fold_of.min() < 0 \
                    or fold_of.max() >= len(conf["fold_models"]):
                raise ValueError("conformal.fold_of / residuals_log do not match the fold models")
        except BadInputError as e:
            raise BadInputError(f"{where}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise BadInputError(f"{where}: missing or malformed field ({type(e).__name__}: {e})") from None
        if names != fx.names:
            raise BadInputError(f"{where}: the model's {len(names)} features differ from the {len(fx.names)} this "
                                f"hwnat computes for {sp} (fitted by another version?); refit it")
        library = Library.from_dict(d["library"], nthread, where) if d.get("library") else None
        blends = []
        for b_i, raw in enumerate(raw_blends):
            here = f"{where}: {'blend' if b_i == 0 else f'conformal.fold_models[{b_i - 1}]'}"
            try:
                blends.append([(float(c["weight"]), Component.from_dict(c, nthread, here)) for c in raw])
            except BadInputError:
                raise
            except (KeyError, TypeError, ValueError) as e:
                raise BadInputError(f"{here}: missing or malformed field ({type(e).__name__}: {e})") from None
        meta = {k: d[k] for k in ("training", "cv", "settings") if k in d}
        return cls(sp, d.get("target", "latency_ms"), fx, blends[0], blends[1:], fold_of, residuals, library,
                   interval, meta)


def read_latency_csv(path: str | Path, columns: Sequence[str] | None = None, what: str = "latency",
                     arch_col: str = "arch"):
    """Read a latency CSV: an ``arch`` column and columns of milliseconds (``.csv`` or ``.csv.gz``).

    Args:
        path: the CSV file.
        columns: the latency columns required (None: every column but ``arch``; ``[]``: none, the archs
            only).
        what: wording for messages (``training data``, ``library``...).

    Returns:
        ``(archs, values, columns)``: the list of arch strings, an ``(n, m)`` float array, the column names.

    Raises:
        BadInputError: missing file or column, no rows, a non-numeric, non-finite or non-positive latency
            (names the file, column and 1-based data row), or an empty arch.
    """
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise BadInputError(f"{path}: {what} file not found") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as e:
        raise BadInputError(f"{path}: cannot read {what} CSV: {str(e).splitlines()[0] if str(e) else e!r}") from None
    if arch_col not in df.columns:
        raise BadInputError(f"{path}: no {arch_col!r} column (columns: {', '.join(df.columns) or 'none'})")
    if columns is None:
        columns = [c for c in df.columns if c != arch_col]
        if not columns:
            raise BadInputError(f"{path}: no latency columns besides {arch_col!r}")
    for c in columns:
        if c not in df.columns:
            raise BadInputError(f"{path}: no column {c!r} (columns: {', '.join(df.columns)})")
    if len(df) == 0:
        raise BadInputError(f"{path}: no data rows")
    archs = df[arch_col].tolist()
    for i, a in enumerate(archs):
        if not a.strip():
            raise BadInputError(f"{path}: row {i + 1}: column {arch_col!r} is empty")
    vals = np.empty((len(df), len(columns)))
    for j, c in enumerate(columns):
        v = pd.to_numeric(df[c].str.strip(), errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(v) | (v <= 0))
        if len(bad):
            i = bad[0]
            raise BadInputError(f"{path}: row {i + 1}, column {c!r}: {df[c].iloc[i]!r} is not a positive "
                                f"latency in ms")
        vals[:, j] = v
    return archs, vals, list(columns)


def read_archs_csv(path: str | Path, arch_col: str = "arch") -> list[str]:
    """Read the ``arch`` column of a CSV (other columns are ignored): ``read_latency_csv`` with no
    latency column.

    Raises:
        BadInputError: missing file, no ``arch`` column, no rows, an empty arch.
    """
    return read_latency_csv(path, [], what="archs", arch_col=arch_col)[0]
