"""Accuracy metrics of latency predictions: RMSE, MAPE, +-x% accuracy, rank correlations, interval coverage.

The +-x% accuracy is the share of architectures whose prediction lies within x% of the measured latency
(the metric nn-Meter and HELP report); rank correlations are what matters when a predictor only has to
order architectures for a search. ``trim_middle`` drops the top and bottom 10% of measured latency before
evaluation, as HELP does (Lee et al., "HELP: Hardware-Adaptive Efficient Latency Prediction for NAS via
Meta-Learning", NeurIPS 2021).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from hwnat.errors import BadInputError


def _pair(pred_ms, true_ms) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred_ms, dtype=np.float64).ravel()
    t = np.asarray(true_ms, dtype=np.float64).ravel()
    if p.shape != t.shape:
        raise BadInputError(f"metrics: {p.size} predictions but {t.size} measured values")
    return p, t


def rmse(pred_ms, true_ms) -> float:
    """Root mean squared error (ms)."""
    p, t = _pair(pred_ms, true_ms)
    return float(np.sqrt(np.mean((p - t) ** 2))) if t.size else float("nan")


def mape(pred_ms, true_ms) -> float:
    """Mean absolute percentage error (%), relative to the measured latency."""
    p, t = _pair(pred_ms, true_ms)
    return float(100.0 * np.mean(np.abs(p - t) / t)) if t.size else float("nan")


def within(pred_ms, true_ms, pct: float) -> float:
    """Share (0..1) of predictions within ``pct`` percent of the measured latency.

    Example:
        >>> within([10.0, 12.0], [10.5, 10.0], 10)
        0.5
    """
    p, t = _pair(pred_ms, true_ms)
    return float(np.mean(np.abs(p - t) <= pct / 100.0 * t)) if t.size else float("nan")


def spearman(pred_ms, true_ms) -> float:
    """Spearman rank correlation (NaN for fewer than 3 points or a constant input)."""
    p, t = _pair(pred_ms, true_ms)
    if t.size < 3 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(stats.spearmanr(p, t)[0])


def kendall(pred_ms, true_ms) -> float:
    """Kendall's tau-b (NaN for fewer than 3 points or a constant input)."""
    p, t = _pair(pred_ms, true_ms)
    if t.size < 3 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(stats.kendalltau(p, t)[0])


def coverage(lo_ms, hi_ms, true_ms) -> float:
    """Share (0..1) of measured latencies inside ``[lo, hi]``."""
    lo, t = _pair(lo_ms, true_ms)
    hi, _ = _pair(hi_ms, true_ms)
    return float(np.mean((t >= lo) & (t <= hi))) if t.size else float("nan")


def trim_middle(true_ms, frac: float = 0.1) -> np.ndarray:
    """Boolean mask keeping measured latencies between the ``frac`` and ``1 - frac`` quantiles (HELP's
    evaluation drops the top and bottom 10%)."""
    t = np.asarray(true_ms, dtype=np.float64)
    lo, hi = np.quantile(t, [frac, 1.0 - frac])
    return (t >= lo) & (t <= hi)


def summary(pred_ms, true_ms, lo_ms=None, hi_ms=None) -> dict[str, float]:
    """Every metric at once: ``n, rmse_ms, mape_pct, acc5, acc10, acc15, spearman, kendall`` and, with
    interval bounds, ``coverage`` and the mean relative interval width ``interval_width_pct``.

    Accuracies and coverage are fractions in 0..1.
    """
    p, t = _pair(pred_ms, true_ms)
    out = {"n": int(t.size), "rmse_ms": rmse(p, t), "mape_pct": mape(p, t), "acc5": within(p, t, 5),
           "acc10": within(p, t, 10), "acc15": within(p, t, 15), "spearman": spearman(p, t),
           "kendall": kendall(p, t)}
    if lo_ms is not None and hi_ms is not None:
        lo, _ = _pair(lo_ms, t)
        hi, _ = _pair(hi_ms, t)
        out["coverage"] = coverage(lo, hi, t)
        out["interval_width_pct"] = float(100.0 * np.mean((hi - lo) / p)) if t.size else float("nan")
    return out
