"""Was this machine busy while we timed? Two readings around one local timing, from Linux ``/proc``:

* ``wait_frac``: the fraction of the wall time this process's threads were runnable but waiting for a CPU
  (``/proc/self/task/*/schedstat``): another process took the CPU and the timed call was preempted;
* ``busy_frac``: the fraction of the CPU capacity not used by this process that other processes used
  (``/proc/stat``, all CPUs). On a small or virtual machine a busy neighbour slows the runtime without
  preempting it: a vCPU's SMT sibling, shared caches and memory bandwidth. On a 2-vCPU VM a neighbour
  on the other vCPU slowed 1-15 ms inferences by up to 60-90% with ``wait_frac`` near zero.

Both are None where ``/proc`` does not expose them (not Linux, or a remote device).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


def sched_ns() -> tuple[int, int] | None:
    """(time on a CPU, time waiting on the run queue) summed over this process's threads, in ns."""
    run = wait = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for t in tasks:
        try:
            with open(f"/proc/self/task/{t}/schedstat") as f:
                parts = f.read().split()
        except OSError:
            continue  # a thread that ended meanwhile
        if len(parts) < 2:
            return None
        run += int(parts[0])
        wait += int(parts[1])
    return run, wait


def cpu_busy_s() -> tuple[float, int] | None:
    """(seconds of non-idle CPU time summed over all CPUs since boot, number of CPUs) from /proc/stat.

    Non-idle = user + nice + system + irq + softirq + steal (guest time is already in user)."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    total = None
    ncpu = 0
    for line in lines:
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:]]
            total = sum(v[i] for i in (0, 1, 2, 5, 6, 7) if i < len(v))
        elif line.startswith("cpu"):
            ncpu += 1
    if total is None or ncpu == 0:
        return None
    return total / os.sysconf("SC_CLK_TCK"), ncpu


@dataclass(frozen=True)
class Reading:
    """What the probe saw over one interval."""

    wall_s: float
    wait_frac: float | None
    busy_frac: float | None

    def contended(self, max_wait_frac: float, max_busy_frac: float) -> bool:
        return bool((self.wait_frac is not None and self.wait_frac > max_wait_frac) or
                    (self.busy_frac is not None and self.busy_frac > max_busy_frac))

    def imbalance(self, other: Reading, max_wait_frac: float, max_busy_frac: float) -> float:
        """How differently loaded two timings were, in units of the limits: the larger of
        ``|wait_frac difference| / max_wait_frac`` and ``|busy_frac difference| / max_busy_frac``
        (above 1 = unbalanced; readings missing on either side count as equal). Symmetric in the two.

        Example:
            >>> Reading(0.2, 0.0, 0.9).imbalance(Reading(0.2, 0.02, 0.95), 0.10, 0.25)
            0.2
        """
        out = 0.0
        for a, b, limit in ((self.wait_frac, other.wait_frac, max_wait_frac),
                            (self.busy_frac, other.busy_frac, max_busy_frac)):
            if a is not None and b is not None:
                out = max(out, abs(a - b) / limit)
        return round(out, 6)

    def score(self) -> float:
        """Larger = more disturbed (to keep the least disturbed of several attempts)."""
        return max(self.wait_frac or 0.0, self.busy_frac or 0.0)

    def to_dict(self) -> dict:
        return {k: round(v, 4) for k, v in (("wait_frac", self.wait_frac), ("busy_frac", self.busy_frac))
                if v is not None}


class Probe:
    """Context manager: ``with Probe() as p: work()``, then ``p.reading``.

    Example:
        >>> with Probe() as p:
        ...     _ = sum(range(1000))
        >>> p.reading.wall_s >= 0
        True
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.reading: Reading | None = None

    def __enter__(self):
        self._s0 = sched_ns() if self.enabled else None
        self._c0 = cpu_busy_s() if self.enabled else None
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self._t0
        s1 = sched_ns() if self._s0 is not None else None
        c1 = cpu_busy_s() if self._c0 is not None else None
        wait_frac = busy_frac = None
        if s1 is not None and wall > 0:
            wait_frac = max(0.0, (s1[1] - self._s0[1]) / 1e9 / wall)
        if c1 is not None and s1 is not None and wall > 0:
            ours = (s1[0] - self._s0[0]) / 1e9
            others = (c1[0] - self._c0[0]) - ours
            capacity = wall * c1[1] - ours
            busy_frac = min(1.0, max(0.0, others / capacity)) if capacity > 0 else None
        self.reading = Reading(wall, wait_frac, busy_frac)
        return False
