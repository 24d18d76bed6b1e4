"""Run the protocol: time a callable, compute statistics, re-measure when unstable.

``remeasure`` is the one re-measure loop of every device (local in-process timing here, the remote agent
and native harnesses in ``hwnat.devices.remote``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from hwnat.measure._timing import time_runs
from hwnat.measure.protocol import Protocol
from hwnat.measure.stats import Measurement

log = logging.getLogger(__name__)


def measure_callable(run, protocol: Protocol, sync=None, time_once=None) -> Measurement:
    """Time ``run()`` with ``protocol`` (see ``remeasure``).

    ``time_once`` (optional): one run timed by the device itself, in ms (see ``time_runs``)."""
    return remeasure(lambda: Measurement.from_rounds(
        time_runs(run, sync=sync, time_once=time_once, **protocol.timing_kwargs()), protocol.unstable_tolerance),
        protocol)


def remeasure(once: Callable[[], Measurement], protocol: Protocol, what: str = "measurement") -> Measurement:
    """Call ``once()`` until a measurement is stable, at most ``protocol.max_remeasure`` extra times, and
    keep the most stable attempt (``extra["attempts"]`` says how many were made).

    Args:
        once: takes one complete measurement (all rounds).
        protocol: gives ``max_remeasure`` and ``unstable_tolerance``.
        what: names the thing measured in debug logs.
    """
    best: Measurement | None = None
    attempts = 0
    for _ in range(protocol.max_remeasure + 1):
        attempts += 1
        m = once()
        if best is None or _spread(m) < _spread(best):
            best = m
        if not m.unstable:
            break
        log.debug("%s: unstable (round medians %s), re-measuring", what, m.round_medians_ms)
    assert best is not None
    if not best.rounds_ms:  # a native harness that prints only a summary
        return dataclasses.replace(best, extra={**best.extra, "attempts": attempts})
    return Measurement.from_rounds(best.rounds_ms, protocol.unstable_tolerance,
                                   {**best.extra, "attempts": attempts})


def _spread(m: Measurement) -> float:
    r = m.round_medians_ms
    return (max(r) - min(r)) / m.median_ms if m.median_ms > 0 else 0.0
