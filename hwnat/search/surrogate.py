"""Accuracy surrogates with adaptive switching, as in Neural Architecture Transfer (Lu et al., TPAMI 2021).

Each iteration the NAT loop fits several regressors on the archive (genome -> accuracy) and keeps the one
whose cross-validated Kendall tau (rank agreement of out-of-fold predictions with the truth) is best: the
search only needs the ranking to be right. Candidates: radial basis functions (scipy), a Gaussian process,
gradient-boosted trees and a small MLP (scikit-learn). Features: every genome position scaled to [0, 1],
plus a one-hot of positions with 3..8 values (NAS-Bench-201's operations are categories, not magnitudes:
measured on its table, the one-hot roughly doubles the surrogates' Kendall tau at 60 samples).

Example:
    >>> s = fit_surrogate(X, y, lo, hi, seed=0)          # doctest: +SKIP
    >>> s.name, s.taus, s.predict(X_new)                   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from hwnat.errors import BadInputError

log = logging.getLogger(__name__)

#: the regressors adaptive switching chooses from
SURROGATES = ("rbf", "gp", "gbt", "mlp")


class _Scaled:
    """Standardised targets around any regressor with fit/predict."""

    def __init__(self, model):
        self.model = model

    def fit(self, X, y):
        self.mu, self.sd = float(np.mean(y)), float(np.std(y)) or 1.0
        self.model.fit(X, (y - self.mu) / self.sd)
        return self

    def predict(self, X):
        return np.asarray(self.model.predict(X)).ravel() * self.sd + self.mu


class _RBF:
    """scipy's RBF interpolator (smoothed: accuracies are noisy): cubic kernel with a linear tail where that
    tail is determined, else a linear kernel with a constant tail."""

    def fit(self, X, y):
        from scipy.interpolate import RBFInterpolator

        kernel, degree = ("cubic", 1) if len(X) > X.shape[1] + 1 else ("linear", 0)
        # duplicate rows make the system singular: average them
        uniq, inv = np.unique(X, axis=0, return_inverse=True)
        yy = np.bincount(inv.ravel(), weights=y) / np.bincount(inv.ravel())
        try:
            self.f = RBFInterpolator(uniq, yy, kernel=kernel, degree=degree, smoothing=1e-2 * len(uniq))
        except np.linalg.LinAlgError:  # one-hot columns make the linear tail rank-deficient
            self.f = RBFInterpolator(uniq, yy, kernel="linear", degree=0, smoothing=1e-2 * len(uniq))
        return self

    def predict(self, X):
        return self.f(X)


def _short_lbfgs(obj_func, initial_theta, bounds):
    """The GP's marginal-likelihood fit with at most 40 L-BFGS steps (ample for 3 hyper-parameters)."""
    from scipy.optimize import minimize

    res = minimize(obj_func, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds, options={"maxiter": 40})
    return res.x, res.fun


def make_regressor(name: str, seed: int):
    """A fresh regressor by name (``SURROGATES``)."""
    if name == "rbf":
        return _Scaled(_RBF())
    if name == "gp":
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel

        k = ConstantKernel(1.0) * RBF(length_scale=1.0) + WhiteKernel(0.1)
        return _Scaled(GaussianProcessRegressor(k, normalize_y=False, random_state=seed, n_restarts_optimizer=0,
                                                optimizer=_short_lbfgs))
    if name == "gbt":
        from sklearn.ensemble import GradientBoostingRegressor

        return _Scaled(GradientBoostingRegressor(n_estimators=100, max_depth=3, learning_rate=0.05,
                                                 subsample=0.8, random_state=seed))
    if name == "mlp":
        from sklearn.neural_network import MLPRegressor

        return _Scaled(MLPRegressor(hidden_layer_sizes=(32,), alpha=1e-2, max_iter=300, random_state=seed,
                                    learning_rate_init=1e-2, tol=1e-4, n_iter_no_change=20))
    raise BadInputError(f"unknown surrogate {name!r}; expected one of: {', '.join(SURROGATES)}")


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall rank correlation (tau-b); 0 where undefined (constant input)."""
    from scipy.stats import kendalltau

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    t = kendalltau(a, b).statistic
    return float(t) if np.isfinite(t) else 0.0


@dataclass
class Surrogate:
    """The regressor chosen this iteration, fitted on the whole archive.

    Attributes:
        name: which regressor (``rbf``, ``gp``, ``gbt``, ``mlp``).
        taus: cross-validated Kendall tau of every candidate regressor.
        model: the fitted regressor (predicts accuracy, percent).
    """

    name: str
    taus: dict[str, float]
    lo: np.ndarray
    hi: np.ndarray
    model: object = field(repr=False)

    def predict(self, genomes: np.ndarray) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return self.model.predict(scale(genomes, self.lo, self.hi))


def scale(genomes: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Surrogate features: positions scaled to [0, 1], then one-hots of positions with 3..8 values."""
    g = np.asarray(genomes, dtype=np.float64)
    lo, hi = np.asarray(lo), np.asarray(hi)
    span = np.maximum(hi - lo, 1)
    parts = [(g - lo) / span]
    for i in np.flatnonzero((hi - lo + 1 >= 3) & (hi - lo + 1 <= 8)):
        parts.append((g[:, i:i + 1] == np.arange(lo[i], hi[i] + 1)[None, :]).astype(np.float64))
    return np.hstack(parts)


def fit_surrogate(genomes: np.ndarray, acc: np.ndarray, lo: np.ndarray, hi: np.ndarray, seed: int = 0,
                  candidates=SURROGATES, folds: int = 5) -> Surrogate:
    """Cross-validate every candidate (out-of-fold Kendall tau), then fit the best on everything.

    Raises:
        BadInputError: fewer than 4 archive entries, or an unknown candidate name.
    """
    X = scale(genomes, lo, hi)
    y = np.asarray(acc, dtype=np.float64)
    n = len(y)
    if n < 4:
        raise BadInputError(f"the surrogate needs at least 4 evaluated architectures, got {n}")
    k = min(folds, n)
    perm = np.random.default_rng(seed).permutation(n)
    parts = [perm[i::k] for i in range(k)]
    taus = {}
    from threadpoolctl import threadpool_limits

    # one BLAS thread: these are tiny problems, and threads fighting over a busy machine cost 10x (measured)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # convergence chatter of GP/MLP on tiny data
        for name in candidates:
            oof = np.empty(n)
            for te in parts:
                tr = np.setdiff1d(perm, te)
                oof[te] = make_regressor(name, seed).fit(X[tr], y[tr]).predict(X[te])
            taus[name] = kendall_tau(oof, y)
        best = max(taus, key=lambda m: (taus[m], -list(candidates).index(m)))
        model = make_regressor(best, seed).fit(X, y)
    log.info("surrogate taus %s -> %s", {k: round(v, 3) for k, v in taus.items()}, best)
    return Surrogate(best, taus, np.asarray(lo), np.asarray(hi), model)
