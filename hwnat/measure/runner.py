"""Run the protocol on a callable: time it, compute statistics, re-measure when unstable."""

from __future__ import annotations

import logging

from hwnat.measure._timing import time_runs
from hwnat.measure.protocol import Protocol
from hwnat.measure.stats import Measurement

log = logging.getLogger(__name__)


def measure_callable(run, protocol: Protocol, sync=None, time_once=None) -> Measurement:
    """Time ``run()`` with ``protocol``; an unstable result is re-measured up to
    ``protocol.max_remeasure`` times and the most stable attempt is kept (``extra["attempts"]``).

    ``time_once`` (optional): one run timed by the device itself, in ms (see ``time_runs``)."""
    best: Measurement | None = None
    attempts = 0
    for _ in range(protocol.max_remeasure + 1):
        attempts += 1
        rounds = time_runs(run, sync=sync, time_once=time_once, **protocol.timing_kwargs())
        m = Measurement.from_rounds(rounds, protocol.unstable_tolerance)
        if best is None or _spread(m) < _spread(best):
            best = m
        if not m.unstable:
            break
        log.debug("unstable measurement (round medians %s), re-measuring", m.round_medians_ms)
    assert best is not None
    return Measurement.from_rounds(best.rounds_ms, protocol.unstable_tolerance,
                                   {**best.extra, "attempts": attempts})


def _spread(m: Measurement) -> float:
    r = m.round_medians_ms
    return (max(r) - min(r)) / m.median_ms if m.median_ms > 0 else 0.0
