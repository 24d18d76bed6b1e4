"""Statistics of a timed measurement, as a value object holding the raw samples (milliseconds)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Measurement:
    """A measured latency: raw samples per round and their statistics, all in milliseconds.

    Example:
        >>> m = Measurement.from_rounds([[1.0, 1.1, 0.9], [1.0, 1.05, 0.95]], tolerance=0.1)
        >>> round(m.median_ms, 3)
        1.0
    """

    rounds_ms: tuple[tuple[float, ...], ...]
    median_ms: float
    mean_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    cv: float
    round_medians_ms: tuple[float, ...]
    unstable: bool
    n: int
    extra: dict = field(default_factory=dict)

    @staticmethod
    def from_rounds(rounds_ms, tolerance: float = 0.10, extra: dict | None = None) -> Measurement:
        """Compute the statistics of samples grouped by round; ``unstable`` when the spread of round
        medians, ``(max - min) / median``, exceeds ``tolerance``."""
        rounds = tuple(tuple(float(x) for x in r) for r in rounds_ms if len(r))
        if not rounds:
            raise ValueError("a measurement needs at least one sample")
        allv = np.concatenate([np.asarray(r) for r in rounds])
        med = float(np.median(allv))
        q10, q25, q75, q90 = (float(v) for v in np.percentile(allv, [10, 25, 75, 90]))
        mean = float(allv.mean())
        std = float(allv.std(ddof=1)) if allv.size > 1 else 0.0
        rmeds = tuple(float(np.median(r)) for r in rounds)
        spread = (max(rmeds) - min(rmeds)) / med if med > 0 else 0.0
        return Measurement(rounds, med, mean, q10, q90, q75 - q25, std / mean if mean > 0 else 0.0,
                           rmeds, bool(len(rmeds) > 1 and spread > tolerance), int(allv.size),
                           dict(extra or {}))

    @property
    def samples_ms(self) -> np.ndarray:
        """All samples, flattened (ms)."""
        return np.concatenate([np.asarray(r) for r in self.rounds_ms])

    def summary(self) -> dict:
        """The statistics without raw samples (what a LUT entry stores)."""
        return {"median_ms": self.median_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms,
                "iqr_ms": self.iqr_ms, "n": self.n, "cv": self.cv, "unstable": self.unstable}

    def to_dict(self) -> dict:
        """Everything, raw samples included, as plain data."""
        d = self.summary()
        d.update(mean_ms=self.mean_ms, round_medians_ms=list(self.round_medians_ms),
                 rounds_ms=[list(r) for r in self.rounds_ms])
        if self.extra:
            d["extra"] = self.extra
        return d

    @staticmethod
    def from_dict(d: dict, tolerance: float = 0.10) -> Measurement:
        """Rebuild from ``to_dict`` output (statistics are recomputed from the raw samples)."""
        return Measurement.from_rounds(d["rounds_ms"], tolerance, d.get("extra"))
