"""Quality measures of a search's result: Pareto fronts, hypervolume, and the exhaustive truth of a
tabular space.

The hypervolume indicator (Zitzler & Thiele, "Multiobjective Evolutionary Algorithms: A Comparative Case
Study and the Strength Pareto Approach", IEEE TEC 1999) is the volume of objective space dominated by a
front and bounded by a fixed reference point; every objective is minimised. It is computed by pymoo's
``HV`` indicator. On a space whose every architecture has a published accuracy and latency
(NAS-Bench-201: 15,625 cells), the exhaustive Pareto front is the ceiling a search is measured against.

Example:
    >>> import numpy as np
    >>> hypervolume(np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]), ref=[4.0, 4.0])
    6.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwnat.errors import BadInputError

#: the budgets of HELP's Table 4 setting: percentiles of a device's latencies
BUDGET_PERCENTILES = (25.0, 50.0, 75.0)


def _objectives(F, what: str = "objectives") -> np.ndarray:
    F = np.asarray(F, dtype=np.float64)
    if F.ndim == 1:
        F = F[None, :] if F.size else F.reshape(0, 0)
    if F.ndim != 2:
        raise BadInputError(f"{what}: expected a 2-D array (points x objectives), got shape {F.shape}")
    if F.size and not np.all(np.isfinite(F)):
        raise BadInputError(f"{what}: every objective value must be finite")
    return F


def pareto_mask(F) -> np.ndarray:
    """Which rows of ``F`` (points x objectives, all minimised) no other row dominates.

    Equal rows do not dominate each other, so duplicates of a front point are all kept.
    """
    F = _objectives(F)
    mask = np.zeros(len(F), dtype=bool)
    if len(F):
        from pymoo.util.nds.non_dominated_sorting import find_non_dominated

        mask[find_non_dominated(F)] = True
    return mask


def hypervolume(F, ref: Sequence[float]) -> float:
    """Hypervolume of the points ``F`` (minimised objectives) bounded by the reference point ``ref``.

    Points that do not strictly dominate ``ref`` add nothing; an empty front has hypervolume 0.

    Args:
        F: array (n, m) of objective values.
        ref: the reference point, m values (fixed across the fronts being compared).
    """
    ref = np.asarray(ref, dtype=np.float64).ravel()
    F = _objectives(F)
    if not len(F):
        return 0.0
    if F.shape[1] != len(ref):
        raise BadInputError(f"hypervolume: {F.shape[1]} objectives but a reference point of {len(ref)} values")
    F = F[np.all(F < ref, axis=1)]
    if not len(F):
        return 0.0
    from pymoo.indicators.hv import HV

    return float(HV(ref_point=ref)(F))


def reference_point(F, margin: float = 0.1) -> np.ndarray:
    """A fixed reference point derived from a front: its nadir pushed out by ``margin`` of its range
    (so the front's extreme points still add volume). Use the *exhaustive* front's, then compare every
    other front against the same point.
    """
    F = _objectives(F)
    if not len(F):
        raise BadInputError("reference_point: the front is empty")
    lo, hi = F.min(axis=0), F.max(axis=0)
    span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
    return hi + margin * span


def percentile_budgets(latency_ms, q: Sequence[float] = BUDGET_PERCENTILES) -> np.ndarray:
    """Latency budgets (ms) at the percentiles ``q`` (0..100) of a device's latencies."""
    lat = np.asarray(latency_ms, dtype=np.float64).ravel()
    lat = lat[np.isfinite(lat)]
    if not len(lat):
        raise BadInputError("percentile_budgets: no finite latency")
    return np.percentile(lat, np.asarray(q, dtype=np.float64))


@dataclass(frozen=True)
class TabularTruth:
    """Published accuracy and latency of every architecture of a tabular space, joined on ``arch``.

    Attributes:
        space: space registry name, e.g. ``"nasbench201"``.
        archs: canonical architecture strings, shape (n,).
        accuracy: top-1 accuracy in percent, shape (n,).
        latency_ms: latency on one device in ms, shape (n,).
        accuracy_column: the accuracy column used.
        latency_column: the latency (device) column used.
    """

    space: str
    archs: np.ndarray
    accuracy: np.ndarray
    latency_ms: np.ndarray
    accuracy_column: str
    latency_column: str

    def index(self, archs: Sequence[str], what: str = "archs") -> np.ndarray:
        """Row of each arch string; an arch not in the table raises ``BadInputError``."""
        pos = {a: i for i, a in enumerate(self.archs)}
        missing = [a for a in archs if a not in pos]
        if missing:
            raise BadInputError(f"{what}: {len(missing)} arch(s) not in the {self.space} table, "
                                f"e.g. {missing[0]!r}")
        return np.array([pos[a] for a in archs], dtype=np.int64)

    def front(self, budget_ms: float | None = None) -> np.ndarray:
        """Rows of the exhaustive (error, latency) Pareto front, optionally among archs within
        ``budget_ms``, sorted by latency."""
        keep = np.arange(len(self.archs))
        if budget_ms is not None:
            keep = keep[self.latency_ms <= budget_ms]
        rows = keep[pareto_mask(objectives(self.accuracy[keep], self.latency_ms[keep]))]
        return rows[np.argsort(self.latency_ms[rows], kind="stable")]


def objectives(accuracy, latency_ms) -> np.ndarray:
    """(error %, latency ms) points, both minimised, from accuracy in percent and latency in ms."""
    acc = np.asarray(accuracy, dtype=np.float64).ravel()
    lat = np.asarray(latency_ms, dtype=np.float64).ravel()
    if acc.shape != lat.shape:
        raise BadInputError(f"objectives: {acc.size} accuracies but {lat.size} latencies")
    return np.column_stack([100.0 - acc, lat])


def load_truth(space: str, latency_column: str, accuracy_column: str, *,
               latency_path: str | Path | None = None, accuracy_path: str | Path | None = None) -> TabularTruth:
    """Join a latency dataset and an accuracy dataset of ``space`` (default: the ones shipped in
    ``hwnat.data``) on their ``arch`` column.

    Raises:
        BadInputError: a file or column is missing, or an arch lacks a finite value in either file.
    """
    import pandas as pd

    from hwnat.data import accuracy_dataset, latency_dataset

    lp = Path(latency_path) if latency_path is not None else latency_dataset(space)
    ap = Path(accuracy_path) if accuracy_path is not None else accuracy_dataset(space)
    frames = []
    for path, col in ((lp, latency_column), (ap, accuracy_column)):
        try:
            df = pd.read_csv(path)
        except (OSError, ValueError) as e:
            raise BadInputError(f"{path}: cannot read as CSV ({e})") from e
        for c in ("arch", col):
            if c not in df.columns:
                raise BadInputError(f"{path}: no column {c!r}; columns: {list(df.columns)}")
        frames.append(df[["arch", col]].drop_duplicates("arch"))
    joined = frames[0].merge(frames[1], on="arch", how="inner")
    for (path, df), other in (((lp, frames[0]), ap), ((ap, frames[1]), lp)):
        if len(joined) < len(df):
            lost = sorted(set(df["arch"]) - set(joined["arch"]))
            raise BadInputError(f"{other}: lacks {len(lost)} arch(s) of {path}, e.g. {lost[0]!r}")
    vals = joined[[latency_column, accuracy_column]].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(vals)):
        raise BadInputError(f"{lp} / {ap}: columns {latency_column!r}, {accuracy_column!r} have missing values")
    return TabularTruth(space, joined["arch"].to_numpy(dtype=object), vals[:, 1], vals[:, 0],
                        accuracy_column, latency_column)
