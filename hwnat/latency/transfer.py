"""Few-shot latency transfer: a library of measured devices as a hardware embedding, and the choice of
which architectures to measure on a new device.

The idea that other devices' latencies of the same architecture are strong features for a new device is
HELP's "hardware embedding" (Lee et al., "HELP: Hardware-Adaptive Efficient Latency Prediction for NAS
via Meta-Learning", NeurIPS 2021). This module does not meta-learn; it implements a simpler method:

1. ``Library``: one XGBoost model per library device maps architecture features to that device's
   log-latency. Its predictions (denoised versions of the library measurements, defined for any
   architecture, not only those in the library CSV) are the embedding.
2. The predictor (``hwnat.latency.predictor``) fits the new device's latency, in milliseconds, as a
   non-negative combination of the library devices' latencies plus analytic terms (non-negative least
   squares: latencies that add up over operators on every device are, to first order, non-negative
   mixtures of each other), then, when the k samples allow, an XGBoost residual in log space.
3. ``choose``: the k architectures to measure are chosen by greedy D-optimal design (``suggest``) on the
   first principal components of the library embedding, among architectures of typical latency (each
   pick maximises the leverage of a linear model in those components), so that k samples pin the
   combination weights down as well as k can.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np

from hwnat.errors import BadInputError

log = logging.getLogger(__name__)

#: XGBoost settings of the per-device library models (fixed: they see thousands of architectures)
LIBRARY_PARAMS = {"eta": 0.15, "max_depth": 6, "subsample": 0.8, "colsample_bytree": 0.8,
                  "min_child_weight": 1.0, "objective": "reg:squarederror", "tree_method": "hist"}
LIBRARY_MAX_ROUNDS = 600


def booster_to_json(booster) -> dict:
    """XGBoost's own JSON model format, as a parsed object (so it nests in a JSON file)."""
    return json.loads(bytes(booster.save_raw("json")).decode())


def booster_from_json(obj: dict, nthread: int = 2, where: str = "model"):
    """Inverse of ``booster_to_json``.

    Raises:
        BadInputError: the object is not an XGBoost JSON model.
    """
    import xgboost as xgb

    b = xgb.Booster()
    try:
        b.load_model(bytearray(json.dumps(obj).encode()))
    except (xgb.core.XGBoostError, TypeError, ValueError) as e:
        raise BadInputError(f"{where}: not a valid XGBoost JSON model: {str(e).splitlines()[0]}") from None
    b.set_param({"nthread": nthread})
    return b


class Library:
    """Per-device models of library devices' log-latency (ms) from architecture features.

    Args:
        devices: library device (column) names.
        boosters: ``{device: xgboost.Booster}``.
        feature_names: the ``ArchFeatures.names`` the boosters were fitted on.
        stats: per device ``{"n": int, "rmse_log": float}`` (held-out error of the embedding model).
    """

    def __init__(self, devices: Sequence[str], boosters: dict, feature_names: Sequence[str],
                 stats: dict | None = None):
        self.devices = list(devices)
        self.boosters = dict(boosters)
        self.feature_names = list(feature_names)
        self.stats = dict(stats or {})

    @classmethod
    def fit(cls, X: np.ndarray, latency_ms: np.ndarray, devices: Sequence[str], feature_names: Sequence[str],
            nthread: int = 2, seed: int = 0) -> Library:
        """Fit one model per library device.

        Args:
            X: architecture features ``(n, f)`` (``ArchFeatures.transform`` without a table).
            latency_ms: ``(n, m)`` measured latencies of the ``m`` library devices; NaN = not measured.
            devices: the ``m`` device names.
            feature_names: names of the columns of ``X``.
        """
        import xgboost as xgb

        lat = np.asarray(latency_ms, dtype=np.float64)
        boosters, stats = {}, {}
        rng = np.random.default_rng(seed)
        for j, dev in enumerate(devices):
            ok = np.isfinite(lat[:, j]) & (lat[:, j] > 0)
            idx = np.flatnonzero(ok)
            if len(idx) < 20:
                raise BadInputError(f"library device {dev!r} has only {len(idx)} positive latencies; "
                                    "a library device needs at least 20")
            perm = rng.permutation(idx)
            nv = max(len(idx) // 10, 5)
            va, tr = perm[:nv], perm[nv:]
            y = np.log(lat[:, j])
            dtr = xgb.DMatrix(X[tr], y[tr])
            dva = xgb.DMatrix(X[va], y[va])
            params = dict(LIBRARY_PARAMS, nthread=nthread, seed=seed)
            b = xgb.train(params, dtr, LIBRARY_MAX_ROUNDS, evals=[(dva, "val")], early_stopping_rounds=30,
                          verbose_eval=False)
            # keep only the rounds that helped, so prediction costs no more than it must
            b = b[: b.best_iteration + 1]
            b.set_param({"nthread": nthread})
            res = b.inplace_predict(X[va]) - y[va]
            boosters[dev] = b
            stats[dev] = {"n": int(len(idx)), "rounds": int(b.num_boosted_rounds()),
                          "rmse_log": float(np.sqrt(np.mean(res ** 2)))}
            log.info("library model %s: %d archs, %d rounds, held-out log-RMSE %.4f", dev, len(idx),
                     stats[dev]["rounds"], stats[dev]["rmse_log"])
        return cls(devices, boosters, feature_names, stats)

    def select(self, devices: Sequence[str]) -> Library:
        """The sub-library of some devices."""
        missing = [d for d in devices if d not in self.boosters]
        if missing:
            raise BadInputError(f"library has no device {missing[0]!r}; it has {', '.join(self.devices)}")
        return Library(devices, {d: self.boosters[d] for d in devices}, self.feature_names,
                       {d: self.stats[d] for d in devices if d in self.stats})

    def predict_log(self, X: np.ndarray) -> np.ndarray:
        """``(n, m)`` predicted log-latency (log ms) of every library device."""
        if not self.devices:
            return np.zeros((len(X), 0))
        return np.column_stack([self.boosters[d].inplace_predict(X) for d in self.devices]).astype(np.float64)

    def to_dict(self) -> dict:
        return {"devices": self.devices, "feature_names": self.feature_names, "stats": self.stats,
                "models": {d: booster_to_json(self.boosters[d]) for d in self.devices}}

    @classmethod
    def from_dict(cls, obj: dict, nthread: int = 2, where: str = "model") -> Library:
        try:
            devices = list(obj["devices"])
            models = obj["models"]
            names = list(obj["feature_names"])
        except (KeyError, TypeError):
            raise BadInputError(f"{where}: field 'library' lacks devices/models/feature_names") from None
        boosters = {}
        for d in devices:
            if d not in models:
                raise BadInputError(f"{where}: field library.models lacks device {d!r}")
            boosters[d] = booster_from_json(models[d], nthread, f"{where}: library.models[{d!r}]")
        return cls(devices, boosters, names, obj.get("stats") or {})


def design_matrix(embed_log: np.ndarray, extra: np.ndarray | None = None, components: int = 3) -> np.ndarray:
    """The matrix the D-optimal design works on: the library devices' log-latencies (and the logs of
    optional extra, analytic features), standardised, reduced to their first ``components`` principal
    components, plus an intercept column.

    Few components: the linear base of a transfer predictor has about as many weights as there are
    samples, and the first components carry the differences between devices (measured on the shared
    data: 3 components beat the full embedding and 2 or 5 components).
    """
    cols = [np.asarray(embed_log, dtype=np.float64)]
    if extra is not None and np.size(extra):
        cols.append(np.log(np.maximum(np.asarray(extra, dtype=np.float64), 1e-9)))
    Z = np.hstack(cols)
    sd = Z.std(axis=0)
    keep = sd > 0
    Z = (Z[:, keep] - Z[:, keep].mean(axis=0)) / sd[keep]
    if Z.shape[1] > components:
        U, S, _ = np.linalg.svd(Z, full_matrices=False)
        Z = U[:, :components] * S[:components]
    return np.hstack([np.ones((len(Z), 1)), Z])


def choose(embed_log: np.ndarray, k: int, extra: np.ndarray | None = None, trim: float = 0.1) -> np.ndarray:
    """The ``k`` candidates to measure on a new device (indices into the candidate rows).

    Candidates whose mean library log-latency lies in the lowest or highest ``trim`` fraction are left
    out first: a D-optimal design alone picks extremes, and a base fitted on extremes ranks the bulk of
    the space worse (measured on FBNet: Spearman 0.83 with extremes, 0.86 without). Then ``suggest`` on
    ``design_matrix``.

    Raises:
        BadInputError: ``k`` < 1 or more than the candidates.
    """
    E = np.asarray(embed_log, dtype=np.float64)
    n = len(E)
    if k < 1 or k > n:
        raise BadInputError(f"-k must be between 1 and the number of candidate archs ({n}), got {k}")
    level = E.mean(axis=1) if E.shape[1] else np.log(np.maximum(np.asarray(extra)[:, 0], 1e-9))
    lo, hi = np.quantile(level, [trim, 1.0 - trim])
    pool = np.flatnonzero((level >= lo) & (level <= hi))
    if len(pool) < k:
        pool = np.arange(n)
    Z = design_matrix(E[pool], None if extra is None else np.asarray(extra)[pool])
    return pool[suggest(Z, k)]


def suggest(Z: np.ndarray, k: int, ridge: float = 1e-3) -> np.ndarray:
    """Greedy D-optimal choice of ``k`` rows of the design matrix ``Z`` (``design_matrix``).

    Starts from the most extreme architecture, then repeatedly adds the one with the largest leverage
    ``z^T (Z_S^T Z_S + ridge I)^-1 z`` under the current picks (equivalently, the largest increase of
    ``det(Z_S^T Z_S)``), so the picks span the directions in which devices differ. Deterministic.

    Returns:
        Indices of the chosen rows, in pick order.

    Raises:
        BadInputError: ``k`` < 1 or larger than the number of candidates.
    """
    n, d = Z.shape
    if k < 1 or k > n:
        raise BadInputError(f"-k must be between 1 and the number of candidate archs ({n}), got {k}")
    picks = [int(np.argmax(np.linalg.norm(Z[:, 1:], axis=1)))] if d > 1 else [0]
    A_inv = np.linalg.inv(np.outer(Z[picks[0]], Z[picks[0]]) + ridge * np.eye(d))
    chosen = np.zeros(n, dtype=bool)
    chosen[picks[0]] = True
    for _ in range(k - 1):
        lev = np.einsum("ij,jk,ik->i", Z, A_inv, Z)
        lev[chosen] = -np.inf
        j = int(np.argmax(lev))
        picks.append(j)
        chosen[j] = True
        z = Z[j]
        Az = A_inv @ z  # Sherman-Morrison rank-one update
        A_inv -= np.outer(Az, Az) / (1.0 + z @ Az)
    return np.asarray(picks, dtype=np.int64)
