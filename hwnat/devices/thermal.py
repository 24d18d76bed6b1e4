"""Thermal and frequency guard: read temperatures/frequencies around a measurement, wait for cooling
above a threshold, and mark measurements taken while hot or throttled (where sysfs exposes them)."""

from __future__ import annotations

import contextlib
import time

from hwnat.devices.spec import ThermalSpec
from hwnat.measure.fingerprint import cpu_frequencies_khz, temperatures_c


class _Guard:
    def __init__(self):
        self.record: dict = {}


@contextlib.contextmanager
def guard(spec: ThermalSpec, read_temps=temperatures_c, read_freqs=cpu_frequencies_khz, sleep=time.sleep):
    """Context manager around one local measurement; ``record`` gets what was read (empty if nothing
    is readable), and ``throttled: True`` when the temperature stayed above ``max_temp_c`` or the
    frequency dropped during the measurement."""
    g = _Guard()
    temps = read_temps()
    if spec.max_temp_c is not None and temps:
        waited = 0.0
        while max(temps.values()) > spec.max_temp_c and waited < spec.cooldown_wait_s:
            sleep(1.0)
            waited += 1.0
            temps = read_temps()
        if waited:
            g.record["cooldown_waited_s"] = waited
    f0 = read_freqs()
    yield g
    t1, f1 = read_temps(), read_freqs()
    if temps or t1:
        g.record["temp_c_before"] = max(temps.values()) if temps else None
        g.record["temp_c_after"] = max(t1.values()) if t1 else None
    if f0 and f1:
        g.record["freq_khz_before"] = min(f0.values())
        g.record["freq_khz_after"] = min(f1.values())
    hot = spec.max_temp_c is not None and t1 and max(t1.values()) > spec.max_temp_c
    slowed = bool(f0 and f1 and min(f1.values()) < 0.9 * min(f0.values()))
    if hot or slowed:
        g.record["throttled"] = True
