"""Learned latency predictors: a non-negative linear base over additive terms, an XGBoost correction in
log space, and conformal intervals; stored as one JSON file (metadata + XGBoost's own JSON, never pickle).

The model for one device predicts ``latency_ms = exp(log(base) + residual)``:

- ``base`` is a non-negative least-squares (NNLS) combination, in milliseconds, of terms that add up over
  an architecture's blocks: the latency-table sum and per-stage sums when a table for the device exists,
  FLOPs, parameters, activation memory, and, in few-shot transfer, the latencies that a library of other
  devices' models predict for the same architecture (``hwnat.latency.transfer``);
- ``residual`` is an XGBoost regressor on architecture features plus ``log(base)``, fitted either to
  ``log(y) - log(base)`` (mode ``residual``: the table/library carries the scale, XGBoost what sums
  miss: fusion, memory traffic, per-call overhead) or to ``log(y)`` directly (mode ``log``);
- which of ``base``, ``residual`` and ``log`` ships is decided by 5-fold cross-validation on the training
  data (out-of-fold log-RMSE), and the XGBoost round count by the mean out-of-fold curve (early stopping
  without a separate validation split); with <= 20 samples the base ships alone (leave-one-out residuals
  still calibrate its interval);
- the central interval at the stated coverage (default 90%) is split-conformal on the out-of-fold log
  residuals (Vovk et al., "Algorithmic Learning in a Random World", 2005; Lei et al., "Distribution-Free
  Predictive Inference for Regression", JASA 2018): ``exp(log(pred) -+ q)`` with ``q`` the
  ``ceil((1 - alpha)(n + 1))``-th smallest absolute residual. Coverage is measured in
  ``benchmarks/predictor_accuracy.py``, not assumed.

Example:
    >>> p = LatencyPredictor.fit("nasbench201", archs, latency_ms, target="pixel3")   # doctest: +SKIP
    >>> p.save("pixel3.json"); LatencyPredictor.load("pixel3.json").predict(archs)     # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from hwnat.errors import BadInputError
from hwnat.latency import metrics
from hwnat.latency.features import ArchFeatures
from hwnat.latency.transfer import Library, booster_from_json, booster_to_json

log = logging.getLogger(__name__)

FORMAT = "hwnat-latency-predictor"
SCHEMA_VERSION = 1
MODES = ("base", "residual", "log")


@dataclass(frozen=True)
class FitSettings:
    """Settings of ``LatencyPredictor.fit``; the defaults need no tuning.

    Attributes:
        coverage: central interval coverage (0.5..0.999).
        modes: candidate model forms; cross-validation picks one (``base``, ``residual``, ``log``). ``None``:
            ``base`` and ``residual``, plus ``log`` from 50 samples on.
        folds: folds of the internal cross-validation above 20 samples (leave-one-out at or below).
        max_rounds: cap on XGBoost rounds.
        patience: early-stopping patience (rounds) on the out-of-fold curve.
        nthread: XGBoost threads.
        seed: seed of fold shuffling and XGBoost sampling.
    """

    coverage: float = 0.9
    modes: tuple[str, ...] | None = None
    folds: int = 5
    max_rounds: int = 1500
    patience: int = 60
    nthread: int = 2
    seed: int = 0

    def __post_init__(self):
        if not 0.5 <= self.coverage < 1.0:
            raise BadInputError(f"coverage must be in [0.5, 1), got {self.coverage}")
        bad = [m for m in (MODES if self.modes is None else self.modes) if m not in MODES]
        if bad or self.modes == ():
            raise BadInputError(f"unknown predictor mode {bad[0] if bad else '(none)'!r}; expected some of "
                                f"{', '.join(MODES)}")


def xgb_params(n: int, nthread: int, seed: int) -> dict:
    """XGBoost parameters by training-set size: shallow, strongly regularised trees for a few samples."""
    if n < 60:
        depth, mcw, sub, eta = 2, 1.0, 1.0, 0.05
    elif n < 300:
        depth, mcw, sub, eta = 4, 2.0, 0.9, 0.05
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

    def to_dict(self) -> dict:
        return {"columns": self.columns, "weights": [float(v) for v in self.weights],
                "intercept": self.intercept, "floor_ms": self.floor_ms}

    @classmethod
    def from_dict(cls, d: dict) -> LinearBase:
        return cls(list(d["columns"]), np.asarray(d["weights"], dtype=np.float64), float(d["intercept"]),
                   float(d["floor_ms"]))


def _conformal_q(abs_res: np.ndarray, coverage: float) -> float:
    """Split-conformal half-width: the ceil(coverage * (n + 1))-th smallest |residual| (the largest when
    n is too small for the stated coverage)."""
    r = np.sort(np.asarray(abs_res, dtype=np.float64))
    rank = math.ceil(coverage * (len(r) + 1))
    return float(r[min(rank, len(r)) - 1])


def _folds(n: int, settings: FitSettings) -> list[np.ndarray]:
    rng = np.random.default_rng(settings.seed)
    if n <= 20:
        return [np.array([i]) for i in range(n)]
    perm = rng.permutation(n)
    return [perm[f::settings.folds] for f in range(settings.folds)]


# ---- the predictor ----------------------------------------------------------------------------------
class LatencyPredictor:
    """A fitted latency predictor of one device on one space. Build with ``fit`` or ``load``."""

    def __init__(self, space: str, target: str, features: ArchFeatures, base: LinearBase, mode: str,
                 booster=None, library: Library | None = None, interval: dict | None = None,
                 meta: dict | None = None):
        self.space_name = space
        self.target = target
        self.features = features
        self.base = base
        self.mode = mode
        self.booster = booster
        self.library = library
        self.interval = interval or {}
        self.meta = meta or {}
        self._n_lib_features = len(ArchFeatures(features.space).names) if features.has_table else None

    # ---- fitting ---------------------------------------------------------------------------------
    @classmethod
    def fit(cls, space, archs: Sequence[str] | None, latency_ms, *, genomes: np.ndarray | None = None,
            target: str = "latency_ms", library: Library | None = None, table=None,
            settings: FitSettings | None = None, source: str = "data") -> LatencyPredictor:
        """Fit a predictor.

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
        pred = cls(fx.space.name, target, fx, LinearBase([], np.zeros(0), 0.0, 0.0), "base", library=library)
        A_all, cols = pred._additive(X, library)
        y_log = np.log(y)

        # -- cross-validation of the candidate forms ------------------------------------------------
        folds = _folds(len(y), settings)
        n = len(y)
        modes = settings.modes
        if modes is None:
            modes = ("base", "residual") + (("log",) if n >= 50 else ())
        # with <= 20 samples leave-one-out cannot tell a correction from noise (measured: picking by it
        # lowered k=10 Spearman), so the linear base ships alone
        xgb_modes = [m for m in modes if m != "base"] if n > 20 else []
        oof = {m: np.zeros(n) for m in ("base", *xgb_modes)}
        curves = {m: [] for m in xgb_modes}
        fold_models = {m: [] for m in xgb_modes}
        params = xgb_params(n, settings.nthread, settings.seed)
        for te in folds:
            tr = np.setdiff1d(np.arange(n), te)
            base = LinearBase.fit(A_all[tr], y[tr], cols)
            lb = np.log(base.predict(A_all))
            oof["base"][te] = lb[te]
            F = np.column_stack([X, lb])
            for m in xgb_modes:
                off = lb if m == "residual" else np.zeros(n)
                b, curve = _train_xgb(F[tr], y_log[tr] - off[tr], F[te], y_log[te] - off[te], params,
                                      settings.max_rounds, settings.patience)
                curves[m].append(curve)
                fold_models[m].append((te, b, F[te], off[te]))
        rounds = {}
        for m in xgb_modes:
            sq = _mean_curve(curves[m], [len(te) for te in folds])
            rounds[m] = int(np.argmin(sq)) + 1
            for te, b, Fte, off in fold_models[m]:
                r = min(rounds[m], b.num_boosted_rounds())
                oof[m][te] = off + b.inplace_predict(Fte, iteration_range=(0, r))
        scores = {m: float(np.sqrt(np.mean((oof[m] - y_log) ** 2))) for m in oof}
        eligible = [m for m in scores if m in modes] or ["base"]
        mode = min(eligible, key=scores.get)
        log.info("cross-validated log-RMSE %s -> mode %s", {k: round(v, 4) for k, v in scores.items()}, mode)

        # -- final fit on everything -------------------------------------------------------------------
        base = LinearBase.fit(A_all, y, cols)
        used_lib = [c[4:] for c, w in zip(cols, base.weights, strict=True) if c.startswith("lib:") and w > 0]
        keep = [i for i, (c, w) in enumerate(zip(cols, base.weights, strict=True))
                if not c.startswith("lib:") or w > 0]
        base = LinearBase([cols[i] for i in keep], base.weights[keep], base.intercept, base.floor_ms)
        lib_used = library.select(used_lib) if library is not None else None
        booster = None
        if mode != "base":
            lb = np.log(base.predict(A_all[:, keep]))
            off = lb if mode == "residual" else np.zeros(n)
            import xgboost as xgb

            booster = xgb.train(params, xgb.DMatrix(np.column_stack([X, lb]), y_log - off), rounds[mode])
            booster.set_param({"nthread": settings.nthread})

        res = np.abs(oof[mode] - y_log)
        q = _conformal_q(res, settings.coverage)
        cv_ms = np.exp(oof[mode])
        interval = {"coverage": settings.coverage, "half_width_log": q,
                    "method": "split-conformal on out-of-fold log residuals", "n_calibration": int(n),
                    "exact": bool(math.ceil(settings.coverage * (n + 1)) <= n)}
        meta = {
            "training": {"n": int(n), "source": source,
                         "latency_ms": {"min": float(y.min()), "median": float(np.median(y)),
                                        "max": float(y.max())}},
            "cv": {"folds": len(folds), "rmse_log": scores, "rounds": rounds, "chosen": mode,
                   "metrics": metrics.summary(cv_ms, y, cv_ms * math.exp(-q), cv_ms * math.exp(q))},
            "settings": {"coverage": settings.coverage, "modes": list(modes), "folds": settings.folds,
                         "max_rounds": settings.max_rounds, "patience": settings.patience,
                         "seed": settings.seed, "xgboost_params": {k: v for k, v in params.items()
                                                                   if k != "nthread"}},
        }
        return cls(fx.space.name, target, fx, base, mode, booster, lib_used, interval, meta)

    def _additive(self, X: np.ndarray, library: Library | None) -> tuple[np.ndarray, list[str]]:
        """The base's columns (ms-like, >= 0): library latencies, then additive features."""
        names = self.features.names
        cols, mats = [], []
        if library is not None and library.devices:
            Xl = X if self._n_lib_features is None else X[:, : self._n_lib_features]
            mats.append(np.exp(library.predict_log(Xl)))
            cols += [f"lib:{d}" for d in library.devices]
        idx = [names.index(c) for c in self.features.additive_names()]
        mats.append(X[:, idx].astype(np.float64))
        cols += self.features.additive_names()
        return np.hstack(mats), cols

    # ---- prediction --------------------------------------------------------------------------------
    def predict_genomes(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predicted latency and interval bounds (ms) of many genomes, vectorised.

        Returns:
            ``(latency_ms, lo_ms, hi_ms)``, each ``(n,)``.
        """
        X = self.features.transform(genomes)
        A, cols = self._additive(X, self.library)
        if cols != self.base.columns:
            raise BadInputError(f"model base columns {self.base.columns} do not match {cols}")
        lb = np.log(self.base.predict(A))
        if self.mode == "base":
            out = lb
        else:
            r = self.booster.inplace_predict(np.column_stack([X, lb.astype(np.float32)]))
            out = (lb if self.mode == "residual" else 0.0) + r
        q = float(self.interval.get("half_width_log", 0.0))
        return np.exp(out), np.exp(out - q), np.exp(out + q)

    def predict(self, archs: Sequence[str], source: str = "archs") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like ``predict_genomes`` for canonical strings (the error names ``source`` and the row)."""
        return self.predict_genomes(self.features.genomes(list(archs), source))

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
        return {
            "format": FORMAT, "schema_version": SCHEMA_VERSION, "space": self.space_name, "target": self.target,
            "mode": self.mode, "features": {"names": self.features.names, "has_table": self.features.has_table},
            "base": self.base.to_dict(), "interval": self.interval, **self.meta,
            "versions": {"hwnat": hwnat.__version__, "xgboost": xgb.__version__, "numpy": np.__version__,
                         "python": platform.python_version()},
            "table": table,
            "library": self.library.to_dict() if self.library is not None else None,
            "residual_model": booster_to_json(self.booster) if self.booster is not None else None,
        }

    def save(self, path: str | Path) -> Path:
        """Write the model as one JSON file (atomically)."""
        from hwnat._io import write_atomic

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
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise BadInputError(f"{path}: model file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise BadInputError(f"{path}: cannot read model: {e}") from None
        except json.JSONDecodeError as e:
            raise BadInputError(f"{path}: not valid JSON (truncated or corrupt?) at line {e.lineno} column "
                                f"{e.colno}: {e.msg}") from None
        return cls.from_dict(d, where=str(path), space=space, nthread=nthread)

    @classmethod
    def from_dict(cls, d, where: str = "model", space: str | None = None, nthread: int = 2) -> LatencyPredictor:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise BadInputError(f"{where}: not an hwnat latency predictor (field 'format' should be {FORMAT!r})")
        if d.get("schema_version") != SCHEMA_VERSION:
            raise BadInputError(f"{where}: field schema_version = {d.get('schema_version')!r}; this hwnat reads "
                                f"{SCHEMA_VERSION}")
        sp = d.get("space")
        if not isinstance(sp, str):
            raise BadInputError(f"{where}: field 'space' missing")
        if space is not None and sp.replace("_", "-") != space.replace("_", "-"):
            raise BadInputError(f"{where}: model is for space {sp!r}, not {space!r}")
        mode = d.get("mode")
        if mode not in MODES:
            raise BadInputError(f"{where}: field mode = {mode!r}; expected one of {', '.join(MODES)}")
        table = None
        try:
            if d.get("table"):
                from hwnat.latency.table import LatencyTable

                t = d["table"]
                table = LatencyTable(t["space"], t["device"], entries=dict(t["entries"]))
            fx = ArchFeatures(sp, table=table)
            names = d["features"]["names"]
            base = LinearBase.from_dict(d["base"])
            interval = dict(d.get("interval") or {})
            float(interval.get("half_width_log", 0.0))
        except BadInputError as e:
            raise BadInputError(f"{where}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise BadInputError(f"{where}: missing or malformed field ({type(e).__name__}: {e})") from None
        if names != fx.names:
            raise BadInputError(f"{where}: the model's {len(names)} features differ from the {len(fx.names)} this "
                                f"hwnat computes for {sp} (fitted by another version?); refit it")
        library = Library.from_dict(d["library"], nthread, where) if d.get("library") else None
        booster = None
        if mode != "base":
            if not d.get("residual_model"):
                raise BadInputError(f"{where}: mode {mode!r} needs field 'residual_model'")
            booster = booster_from_json(d["residual_model"], nthread, f"{where}: residual_model")
        meta = {k: d[k] for k in ("training", "cv", "settings") if k in d}
        return cls(sp, d.get("target", "latency_ms"), fx, base, mode, booster, library, interval, meta)


def _train_xgb(Ftr, ytr, Fte, yte, params, max_rounds, patience):
    """Train with the held-out fold tracked; return the booster and its per-round squared-error sum."""
    import xgboost as xgb

    dtr = xgb.DMatrix(Ftr, ytr)
    dte = xgb.DMatrix(Fte, yte)
    hist: dict = {}
    b = xgb.train(params, dtr, max_rounds, evals=[(dte, "te")], early_stopping_rounds=patience,
                  evals_result=hist, verbose_eval=False)
    rmse = np.asarray(hist["te"]["rmse"], dtype=np.float64)
    return b, rmse ** 2 * len(yte)


def _mean_curve(curves: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """Out-of-fold mean squared error per round; a fold that stopped early keeps its last value."""
    L = max(len(c) for c in curves)
    tot = np.zeros(L)
    for c in curves:
        tot += np.concatenate([c, np.full(L - len(c), c[-1])])
    return tot / sum(sizes)


def read_latency_csv(path: str | Path, columns: Sequence[str] | None = None, what: str = "latency",
                     arch_col: str = "arch"):
    """Read a latency CSV: an ``arch`` column and columns of milliseconds.

    Args:
        path: the CSV file.
        columns: the latency columns required (None: every column but ``arch``).
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
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise BadInputError(f"{path}: cannot read {what} CSV: {str(e).splitlines()[0]}") from None
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
    """Read the ``arch`` column of a CSV (other columns are ignored).

    Raises:
        BadInputError: missing file, no ``arch`` column, no rows, an empty arch.
    """
    import pandas as pd

    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise BadInputError(f"{path}: archs file not found") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as e:
        raise BadInputError(f"{path}: cannot read archs CSV: {str(e).splitlines()[0]}") from None
    if arch_col not in df.columns:
        raise BadInputError(f"{path}: no {arch_col!r} column (columns: {', '.join(df.columns) or 'none'})")
    if len(df) == 0:
        raise BadInputError(f"{path}: no data rows")
    archs = df[arch_col].tolist()
    for i, a in enumerate(archs):
        if not a.strip():
            raise BadInputError(f"{path}: row {i + 1}: column {arch_col!r} is empty")
    return archs
