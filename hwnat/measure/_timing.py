"""The timing loop of the measurement protocol, stdlib only.

This file is also embedded verbatim in the remote agent (``hwnat/devices/agent``), so it must import
nothing but the standard library. It returns raw samples; statistics are computed on the host
(``hwnat.measure.stats``).
"""

from __future__ import annotations

import time


def time_runs(run, *, warmup_s: float, warmup_runs: int, rounds: int, runs: int,
              min_round_s: float, max_runs_per_round: int, cooldown_s: float = 0.0,
              sync=None, time_once=None) -> list[list[float]]:
    """Warm up, then time ``rounds`` rounds of single calls of ``run()``.

    Warm-up runs until both ``warmup_runs`` calls and ``warmup_s`` seconds have passed. Each round times
    single calls with ``time.perf_counter_ns`` until it has ``runs`` samples (when ``runs > 0``) or, when
    ``runs == 0``, until ``min_round_s`` seconds have passed (at least 3 and at most
    ``max_runs_per_round`` samples). ``sync`` (optional) is called after each run before the clock stops
    (e.g. a CUDA synchronise). ``time_once`` (optional) replaces the host clock for the timed runs: it
    does one run and returns its duration in milliseconds as the device measured it (e.g. CUDA events
    recorded around a kernel launch); warm-up still calls ``run()`` and ``sync()``.

    Returns:
        one list of samples in milliseconds per round.
    """
    done = 0
    t0 = time.perf_counter()
    while done < warmup_runs or time.perf_counter() - t0 < warmup_s:
        run()
        if sync is not None:
            sync()
        done += 1
    out: list[list[float]] = []
    for r in range(rounds):
        if r and cooldown_s > 0:
            time.sleep(cooldown_s)
        samples: list[float] = []
        start = time.perf_counter()
        while True:
            if time_once is not None:
                samples.append(float(time_once()))
            else:
                a = time.perf_counter_ns()
                run()
                if sync is not None:
                    sync()
                b = time.perf_counter_ns()
                samples.append((b - a) / 1e6)
            n = len(samples)
            if runs > 0:
                if n >= runs:
                    break
            elif n >= max_runs_per_round or (n >= 3 and time.perf_counter() - start >= min_round_s):
                break
        out.append(samples)
    return out
