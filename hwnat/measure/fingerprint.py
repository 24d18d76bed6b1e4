"""Environment fingerprint recorded with every result: host, CPU, cores, governor, frequencies,
temperatures (where readable), runtime and version, threads, precision, batch, input shape, hwnat version."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import hwnat

#: fingerprint fields that make two results incomparable when they differ
COMPARABLE_FIELDS = ("cpu_model", "machine", "logical_cores", "runtime", "runtime_version", "threads",
                     "precision", "provider", "device", "gpu_model")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo, else platform.processor()."""
    info = _read("/proc/cpuinfo") or ""
    for line in info.splitlines():
        if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_frequencies_khz() -> dict[str, int]:
    """Current frequency of each CPU (kHz) where cpufreq exposes it."""
    out = {}
    for d in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
        v = _read(str(d / "scaling_cur_freq"))
        if v and v.isdigit():
            out[d.parent.name] = int(v)
    return out


def governors() -> dict[str, str]:
    """Scaling governor of each CPU where readable."""
    out = {}
    for d in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
        v = _read(str(d / "scaling_governor"))
        if v:
            out[d.parent.name] = v
    return out


def temperatures_c() -> dict[str, float]:
    """Thermal zone temperatures (degrees C) where readable."""
    out = {}
    for z in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        t = _read(str(z / "temp"))
        kind = _read(str(z / "type")) or z.name
        if t and t.lstrip("-").isdigit():
            out[f"{z.name}:{kind}"] = int(t) / 1000.0
    return out


def local_fingerprint(runtime_info: dict | None = None, **extra) -> dict:
    """Fingerprint of this machine plus the runtime's own info (name, version, threads...)."""
    fp = {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "governors": sorted(set(governors().values())) or None,
        "cpu_freq_khz": cpu_frequencies_khz() or None,
        "temperatures_c": temperatures_c() or None,
        "python": platform.python_version(),
        "hwnat_version": hwnat.__version__,
    }
    fp.update(runtime_info or {})
    fp.update(extra)
    return fp


def fingerprint_diff(a: dict, b: dict, fields=COMPARABLE_FIELDS) -> dict[str, tuple]:
    """Fields (of ``fields``) whose values differ between two fingerprints: ``{field: (a, b)}``."""
    return {f: (a.get(f), b.get(f)) for f in fields if a.get(f) != b.get(f)}
