"""A device reached through a transport (ssh, adb): models are pushed, timed there, statistics computed here.

On a device with Python the self-contained agent (``hwnat.devices.agent``) is pushed once per session and
times the model with the runtime installed there; without Python a native harness (``trtexec``,
``benchmark_model``, ``onnxruntime_perf_test``) runs and its output is parsed by ``hwnat.devices.parsers``.
Either way the raw samples come back and ``Measurement.from_rounds`` computes the statistics on the host,
with the same re-measure rule as ``hwnat.measure.runner``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shlex
import tempfile
from pathlib import Path

import hwnat
from hwnat._shapes import as_shapes, one_or_many
from hwnat.devices.agent.agent_main import HARNESS_DIRS, HARNESSES
from hwnat.devices.base import Device
from hwnat.devices.spec import DeviceSpec
from hwnat.devices.transports import Transport, get_transport
from hwnat.devices.transports._base import _tail
from hwnat.errors import BadInputError, DeviceError
from hwnat.measure.protocol import Protocol
from hwnat.measure.runner import remeasure
from hwnat.measure.stats import Measurement

log = logging.getLogger(__name__)

#: model file format each runtime loads on a remote device
MODEL_FORMATS = {"onnxruntime": "onnx", "openvino": "onnx", "tensorrt": "onnx", "litert": "tflite",
                 "torch": "onnx"}
#: runtimes the agent can run (see agent_main.LOADERS)
AGENT_RUNTIMES = ("onnxruntime", "litert")
#: pip package that provides each runtime (for "what is missing")
RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "litert": "ai-edge-litert", "tensorrt": "tensorrt",
                    "openvino": "openvino", "torch": "torch"}
#: the oldest Python the agent runs on (``from __future__ import annotations``, ``perf_counter_ns``)
AGENT_MIN_PYTHON = (3, 7)
#: longest a single agent or harness run may take (s); ``runtime.options.timeout_s`` overrides
DEFAULT_RUN_TIMEOUT_S = 600.0

# a constant script (no user data in it) that prints sysfs state as "path=value" lines, for devices
# without Python
_SHELL_FINGERPRINT = r"""
for f in /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor \
         /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq \
         /sys/class/thermal/thermal_zone*/temp /sys/class/thermal/thermal_zone*/type \
         /sys/class/devfreq/*/cur_freq /proc/device-tree/model /etc/nv_tegra_release; do
  [ -r "$f" ] && printf '%s=%s\n' "$f" "$(head -n 1 "$f" | tr -d '\000')"
done
printf 'uname=%s\n' "$(uname -srm)"
printf 'hostname=%s\n' "$(hostname 2>/dev/null || uname -n)"
grep -m 1 -i -E '^(model name|hardware)' /proc/cpuinfo | sed 's/^[^:]*: */cpu_model=/'
printf 'cores=%s\n' "$(grep -c ^processor /proc/cpuinfo)"
"""


# a constant script: temperatures and CPU frequencies as "path=value" lines (the harness path's guard)
_SHELL_THERMAL = r"""
for f in /sys/class/thermal/thermal_zone*/temp /sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq; do
  [ -r "$f" ] && printf '%s=%s\n' "$f" "$(cat "$f" 2>/dev/null)"
done
true
"""


class RemoteDevice(Device):
    """A device behind an ssh or adb transport. Use as a context manager: ``close()`` removes the remote
    work directory and stops the shared connection.

    Example:
        >>> with RemoteDevice(load_device("jetson-orin-nano")) as dev:   # doctest: +SKIP
        ...     m = dev.measure("block.onnx", (1, 24, 56, 56))
        ...     print(m.median_ms, dev.fingerprint()["cpu_model"])
    """

    def __init__(self, spec: DeviceSpec, transport: Transport | None = None):
        super().__init__(spec)
        self.transport = transport or get_transport(spec.transport)
        self._workdir: str | None = None
        self._agent_remote: str | None = None
        self._pushed: dict[str, str] = {}          # content sha256 -> remote path
        self._hashes: dict[tuple, str] = {}        # (path, size, mtime_ns) -> sha256
        self._fp: dict | None = None
        self._check: dict | None = None
        self._harness: str | None = None           # the harness's path on the device
        self._runs = 0

    # -- configuration -------------------------------------------------------------------------------

    @property
    def model_format(self) -> str:
        return MODEL_FORMATS[self.spec.runtime.kind]

    @property
    def python_argv(self) -> list[str]:
        """How the agent's Python is started on the device (``[]``: no Python there). From
        ``runtime.options.python`` or the transport's ``python`` field; split like a shell would, so
        ``"taskset -c 4-7 python3"`` works."""
        py = self.spec.runtime.options.get("python", getattr(self.spec.transport, "python", ""))
        return shlex.split(str(py)) if py else []

    @property
    def prefix_argv(self) -> list[str]:
        """What every timed command runs under (``taskset MASK`` for adb devices with ``taskset``)."""
        mask = getattr(self.spec.transport, "taskset", None)
        return ["taskset", mask] if mask else []

    @property
    def uses_agent(self) -> bool:
        return self.spec.runtime.harness == "agent"

    @property
    def run_timeout_s(self) -> float:
        return float(self.spec.runtime.options.get("timeout_s", DEFAULT_RUN_TIMEOUT_S))

    # -- remote files --------------------------------------------------------------------------------

    @property
    def workdir(self) -> str:
        """This session's private directory on the device (created on first use)."""
        if self._workdir is None:
            self._workdir = self.transport.mkdtemp()
            log.info("%s: work directory %s", self.transport.host, self._workdir)
        return self._workdir

    def _agent_path(self) -> str:
        if self._agent_remote is None:
            from hwnat.devices.agent import agent_digest, agent_source

            remote = f"{self.workdir}/hwnat_agent_{agent_digest()}.py"
            with tempfile.TemporaryDirectory(prefix="hwnat-agent-") as d:
                local = Path(d) / "agent.py"
                local.write_text(agent_source())
                self.transport.push(str(local), remote)
            self._agent_remote = remote
        return self._agent_remote

    def _sha256(self, path: str) -> str:
        try:
            st = os.stat(path)
        except OSError as e:
            raise BadInputError(f"{path}: cannot read the model file: {e.strerror}") from None
        key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self._hashes[key] = h.hexdigest()
        return self._hashes[key]

    def push_model(self, model_path: str) -> str:
        """Copy a model file to the work directory once per content: a file with the same bytes (under any
        name) is not sent again. The remote name is the content hash (never the local name)."""
        sha = self._sha256(str(model_path))
        if sha not in self._pushed:
            suffix = Path(model_path).suffix
            suffix = suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,12}", suffix) else ""
            remote = f"{self.workdir}/m-{sha[:24]}{suffix}"
            self.transport.push(str(model_path), remote)
            self._pushed[sha] = remote
        return self._pushed[sha]

    def _forget_remote_files(self) -> None:
        """The device lost our files (rebooted, /tmp wiped): start a new work directory next time."""
        self._workdir, self._agent_remote, self._pushed = None, None, {}

    # -- measuring -----------------------------------------------------------------------------------

    def measure(self, model_path, input_shape, protocol: Protocol | None = None) -> Measurement:
        """Time one model file on the device; unstable results are re-measured up to
        ``protocol.max_remeasure`` times and the most stable attempt is kept (``extra["attempts"]``)."""
        protocol = protocol or self.spec.measure
        shape = one_or_many(as_shapes(input_shape))  # one shape, or a tuple of shapes (several inputs)
        once = self._measure_agent if self.uses_agent else self._measure_harness
        return remeasure(lambda: once(str(model_path), shape, protocol), protocol, what=self.name)

    def _run_agent(self, args: list[str], what: str) -> dict:
        py = self.python_argv
        if not py:
            raise DeviceError(f"{self.name}: no Python configured for the agent (transport.python is "
                              "empty); set runtime.harness to a native harness")
        for attempt in (1, 2):
            res = self.transport.run([*self.prefix_argv, *py, self._agent_path(), *args],
                                     timeout_s=self.run_timeout_s, what=what)
            out = _last_json(res.stdout)
            # Python's own message when the script is gone (the device rebooted or /tmp was wiped)
            if out is None and attempt == 1 and res.rc != 127 and "can't open file" in res.stderr:
                log.warning("%s: the work directory vanished; pushing again", self.transport.host)
                self._forget_remote_files()
                continue
            break
        if out is None:
            if res.rc == 127 or (re.search(r"not found|No such file", res.stderr) and py[0] in res.stderr):
                raise DeviceError(f"{self.transport.host}: Python {py[0]!r} not found on the device "
                                  "(set transport.python, or use a native harness)")
            raise DeviceError(f"{self.transport.host}: the agent failed ({what}, exit {res.rc}): "
                              f"{_tail(res.stderr or res.stdout)}")
        if not out.get("ok"):
            raise DeviceError(f"{self.transport.host}: {what} failed: {out.get('error', 'unknown error')}")
        return out

    def _request(self, remote_model: str, shape, protocol: Protocol) -> dict:
        rt = self.spec.runtime
        shapes = [list(s) for s in as_shapes(shape)]
        # one input: a flat list, as agents before multi-input models read it; several: a list of lists
        return {"model": remote_model, "input_shape": shapes[0] if len(shapes) == 1 else shapes,
                "runtime": {"kind": rt.kind, "threads": rt.threads, "precision": rt.precision,
                            "provider": rt.provider},
                "timing": protocol.timing_kwargs(),
                "thermal": {"max_temp_c": self.spec.thermal.max_temp_c,
                            "cooldown_wait_s": self.spec.thermal.cooldown_wait_s},
                "fingerprint": self._fp is None}

    def _measure_agent(self, model_path, shape, protocol) -> Measurement:
        if self.spec.runtime.kind not in AGENT_RUNTIMES:
            raise DeviceError(f"{self.name}: the agent runs {', '.join(AGENT_RUNTIMES)}, not "
                              f"{self.spec.runtime.kind!r}; set runtime.harness (e.g. trtexec)")
        for attempt in (1, 2):
            remote = self.push_model(model_path)
            try:
                out = self._run_agent(["--request", json.dumps(self._request(remote, shape, protocol))],
                                      f"timing {Path(model_path).name}")
                break
            except DeviceError as e:
                # the model file vanished but the agent is there: push again once
                if attempt == 1 and re.search(r"NO_SUCHFILE|No such file|does not exist", str(e)):
                    self._forget_remote_files()
                    continue
                raise
        if "fingerprint" in out and self._fp is None:
            self._fp = self._make_fingerprint(out["fingerprint"], out.get("info", {}))
        rounds = out.get("rounds_ms")
        if not rounds or not all(isinstance(r, list) and r for r in rounds):
            raise DeviceError(f"{self.transport.host}: the agent returned no samples")
        return Measurement.from_rounds(rounds, protocol.unstable_tolerance, dict(out.get("thermal") or {}))

    def _harness_exe(self) -> str:
        """The native harness's path on the device: ``runtime.harness_path``, else PATH, else the usual
        install directories (``/usr/src/tensorrt/bin`` on Jetson)."""
        if self._harness is None:
            rt = self.spec.runtime
            if rt.harness_path:
                self._harness = rt.harness_path
            else:
                found = self._which_harnesses([rt.harness]).get(rt.harness)
                if not found:
                    raise DeviceError(f"{self.transport.host}: the harness {rt.harness} is not on PATH or in "
                                      f"{', '.join(HARNESS_DIRS)}; set runtime.harness_path")
                self._harness = found
        return self._harness

    def _measure_harness(self, model_path, shape, protocol) -> Measurement:
        """Run the native harness and read its output with ``hwnat.devices.parsers``. Raw per-run times
        come from trtexec's ``--exportTimes`` and onnxruntime_perf_test's result file (grouped into the
        protocol's rounds); benchmark_model prints only a summary (a summary-only ``Measurement``)."""
        from hwnat.devices.parsers import HarnessOutputError, get_parser

        rt = self.spec.runtime
        parser = get_parser(rt.harness)
        remote = self.push_model(model_path)
        self._runs += 1
        kw: dict = {"executable": self._harness_exe()}
        times_remote = None
        if parser.name == "trtexec":
            times_remote = kw["export_times"] = f"{self.workdir}/times-{self._runs}.json"
        elif parser.name == "onnxruntime_perf_test":
            times_remote = kw["result_file"] = f"{self.workdir}/times-{self._runs}.txt"
        argv = parser.build_command(remote, rt, protocol, **kw)
        what = f"{parser.name} on {Path(model_path).name}"
        with self._thermal_guard() as g:
            res = self.transport.run([*self.prefix_argv, *argv], timeout_s=self.run_timeout_s, what=what)
        if res.rc != 0:
            raise DeviceError(f"{self.transport.host}: {what} failed (exit {res.rc}): "
                              f"{_tail(res.stderr or res.stdout)}")
        try:
            parsed = parser.parse(res.stdout + "\n" + res.stderr)
        except HarnessOutputError as e:
            raise DeviceError(f"{self.transport.host}: {what}: unreadable output: {e}") from None
        extra = {"harness": parser.name, "harness_version": parsed.version, "harness_layout": parsed.layout,
                 "metric": parsed.metric, **g.record}
        if parsed.warnings:
            extra["harness_warnings"] = list(parsed.warnings)
        samples = self._pull_samples(parser.name, times_remote, parsed) if times_remote else ()
        if not samples:
            m = parsed.to_measurement(protocol.unstable_tolerance)
            return dataclasses.replace(m, extra={**m.extra, **extra})
        m = Measurement.from_rounds(_as_rounds(samples, protocol), protocol.unstable_tolerance, extra)
        return dataclasses.replace(m, unstable=True) if parsed.unstable and not m.unstable else m

    def _thermal_guard(self):
        """``hwnat.devices.thermal.guard`` fed from the device's sysfs (one command per reading): cools
        down above ``thermal.max_temp_c``, records temperatures/frequencies and ``throttled``."""
        import time

        from hwnat.devices.thermal import guard

        snap: dict = {"freqs": {}}

        def read_temps() -> dict[str, float]:
            res = self.transport.run(["sh", "-c", _SHELL_THERMAL], what="reading temperatures")
            temps, freqs = {}, {}
            for line in res.stdout.splitlines():
                k, _, v = line.partition("=")
                if k.endswith("/temp") and v.lstrip("-").isdigit():
                    temps[k.split("/")[-2]] = int(v) / 1000.0
                elif k.endswith("/scaling_cur_freq") and v.isdigit():
                    freqs[k.split("/")[-3]] = int(v)
            snap["freqs"] = freqs
            return temps

        return guard(self.spec.thermal, read_temps=read_temps, read_freqs=lambda: dict(snap["freqs"]),
                     sleep=time.sleep)

    def _pull_samples(self, harness: str, remote: str, parsed) -> tuple[float, ...]:
        """Per-run times from the harness's export file on the device (empty when unavailable)."""
        from hwnat.devices.parsers import HarnessOutputError
        from hwnat.devices.parsers.onnxruntime_perf_test import samples_from_result_file
        from hwnat.devices.parsers.trtexec import samples_from_times_json

        with tempfile.TemporaryDirectory(prefix="hwnat-times-") as d:
            local = os.path.join(d, "times")
            try:
                self.transport.pull(remote, local)
                text = Path(local).read_text(errors="replace")
                self.transport.remove(remote)
            except DeviceError as e:
                log.warning("%s: no per-run times from %s (%s); using its summary", self.transport.host,
                            harness, e)
                return ()
        try:
            if harness == "trtexec":
                samples = samples_from_times_json(text, parsed.metric)
                if parsed.count and len(samples) > parsed.count:  # some versions export warm-up queries
                    samples = samples[len(samples) - parsed.count:]
                return samples
            return samples_from_result_file(text)
        except HarnessOutputError as e:
            log.warning("%s: unreadable per-run times from %s (%s); using its summary", self.transport.host,
                        harness, e)
            return ()

    # -- fingerprint and check -----------------------------------------------------------------------

    def _make_fingerprint(self, device_fp: dict, runtime_info: dict) -> dict:
        rt = self.spec.runtime
        fp = dict(device_fp)
        fp.update({"runtime": rt.kind, "runtime_version": None, "threads": rt.threads,
                   "precision": rt.precision, "provider": rt.provider})
        fp.update({k: v for k, v in runtime_info.items() if v is not None})
        fp.update({"device": self.name, "batch": 1, "hwnat_version": hwnat.__version__,
                   "transport": self.spec.transport.kind, "harness": rt.harness})
        return fp

    def fingerprint(self) -> dict:
        """The device's fingerprint (cached for the session): hardware, clocks, governors, temperatures,
        Jetson/Android state where present, and the runtime and its version."""
        if self._fp is None:
            rep = self.check()  # the agent's readout where Python >= 3.7 is there, else a shell readout
            self._fp = self._make_fingerprint(rep["fingerprint"], {"runtime_version": rep.get("runtime_version")})
        return self._fp

    def _shell_fingerprint(self) -> dict:
        res = self.transport.run(["sh", "-c", _SHELL_FINGERPRINT], what="reading the device state")
        kv = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
        govs, freqs, temps, types, devfreq = {}, {}, {}, {}, {}
        for k, v in kv.items():
            parts = k.split("/")
            if k.endswith("/scaling_governor"):
                govs[parts[-3]] = v
            elif k.endswith("/scaling_cur_freq") and v.isdigit():
                freqs[parts[-3]] = int(v)
            elif k.startswith("/sys/class/thermal/") and k.endswith("/temp") and v.lstrip("-").isdigit():
                temps[parts[-2]] = int(v) / 1000.0
            elif k.startswith("/sys/class/thermal/") and k.endswith("/type"):
                types[parts[-2]] = v
            elif k.startswith("/sys/class/devfreq/") and v.isdigit():
                devfreq[parts[-2]] = {"cur_hz": int(v)}
        uname = kv.get("uname", "").split()
        fp = {"host": kv.get("hostname"), "os": " ".join(uname[:2]) or None,
              "machine": uname[2] if len(uname) > 2 else None, "cpu_model": kv.get("cpu_model"),
              "logical_cores": int(kv["cores"]) if kv.get("cores", "").isdigit() else None,
              "governors": sorted(set(govs.values())) or None, "cpu_freq_khz": freqs or None,
              "temperatures_c": {f"{z}:{types.get(z, z)}": t for z, t in temps.items()} or None,
              "devfreq": devfreq or None, "board": kv.get("/proc/device-tree/model") or None}
        if "/etc/nv_tegra_release" in kv:
            fp["jetson"] = {"l4t_release": kv["/etc/nv_tegra_release"]}
        return fp

    def check(self) -> dict:
        """Connect and report what the device has: Python, runtimes and versions, harnesses, clocks,
        governors, temperatures, and ``missing`` (what this device file needs but the device lacks).

        Raises:
            DeviceError: the device cannot be reached.
        """
        if self._check is not None:
            return self._check
        rt = self.spec.runtime
        rep: dict = {"device": self.name, "transport": self.spec.transport.kind, "host": self.transport.host,
                     "reachable": False, "runtime": rt.kind, "harness": rt.harness, "missing": []}
        self.transport.run(["true"], check=True, what="connecting")
        rep["reachable"] = True
        rep["workdir"] = self.workdir
        missing = rep["missing"]
        py = self.python_argv
        if py:
            res = self.transport.run([*py, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
                                     what="checking Python")
            ver = res.stdout.strip().splitlines()[-1] if res.rc == 0 and res.stdout.strip() else None
            rep["python"] = ver
            if ver is None:
                rep["python_error"] = _tail(res.stderr or res.stdout)
        else:
            rep["python"] = None
        ok_py = rep["python"] is not None and tuple(int(x) for x in rep["python"].split(".")[:2]) >= \
            AGENT_MIN_PYTHON
        if ok_py:
            agent = self._run_agent(["--check"], "checking the device")
            rep.update(runtimes=agent["runtimes"], harnesses=agent["harnesses"],
                       fingerprint=agent["fingerprint"])
        else:
            rep.update(runtimes=None, harnesses=self._which_harnesses(), fingerprint=self._shell_fingerprint())
        fp = rep["fingerprint"]
        for k in ("governors", "cpu_freq_khz", "temperatures_c", "devfreq", "jetson", "android"):
            rep[k] = fp.get(k)
        rep["runtime_version"] = None
        if self.uses_agent:
            if rep["python"] is None:
                missing.append(f"Python >= {'.'.join(map(str, AGENT_MIN_PYTHON))} for the agent "
                               f"(transport.python = {' '.join(py) or '(empty)'!r} did not run)")
            elif not ok_py:
                missing.append(f"Python >= {'.'.join(map(str, AGENT_MIN_PYTHON))} for the agent "
                               f"(found {rep['python']}); or use a native harness")
            else:
                versions = (rep["runtimes"] or {}).get(rt.kind) or {}
                rep["runtime_version"] = next(iter(versions.values()), None)
                if rt.kind not in AGENT_RUNTIMES:
                    missing.append(f"the agent cannot run {rt.kind!r}; set runtime.harness")
                elif not versions:
                    missing.append(f"{rt.kind} (pip install {RUNTIME_PACKAGES.get(rt.kind, rt.kind)})")
                elif rt.kind == "onnxruntime" and rt.provider:
                    provs = rep["runtimes"].get("onnxruntime_providers") or []
                    if rt.provider not in provs:
                        missing.append(f"ONNX Runtime execution provider {rt.provider} "
                                       f"(available: {', '.join(provs) or 'none'})")
        else:
            versions = (rep["runtimes"] or {}).get(rt.kind) or {}
            rep["runtime_version"] = next(iter(versions.values()), None)
            path = rt.harness_path or (rep["harnesses"] or {}).get(rt.harness)
            if rt.harness_path:
                ok = self.transport.run(["test", "-x", rt.harness_path]).rc == 0
            else:
                ok = bool(path)
            rep["harness_path"] = path if ok else None
            if not ok:
                missing.append(f"the harness {rt.harness} ({rt.harness_path or 'not on PATH'})")
        if self.prefix_argv and not (rep["harnesses"] or {}).get("taskset"):
            missing.append("taskset (transport.taskset is set)")
        rep["requires"] = list(self.spec.requires)
        rep["setup"] = list(self.spec.setup)
        rep["ok"] = not missing
        self._check = rep
        return rep

    def _which_harnesses(self, names=HARNESSES) -> dict:
        """Where each named tool is on the device (PATH, then ``HARNESS_DIRS``), without Python."""
        out = {}
        for h in names:
            # a constant script: the tool name and the directories arrive as positional parameters
            res = self.transport.run(["sh", "-c", 'n="$1"; shift; command -v "$n" && exit 0; '
                                      'for d in "$@"; do [ -x "$d/$n" ] && echo "$d/$n" && exit 0; done; '
                                      'exit 1', "sh", h, *HARNESS_DIRS])
            out[h] = (res.stdout.strip().splitlines() or [None])[-1] if res.rc == 0 else None
        return out

    def close(self) -> None:
        """Remove the remote work directory (models, agent) and stop the shared connection."""
        self._forget_remote_files()
        self.transport.close()


def _as_rounds(samples, protocol: Protocol) -> list[list[float]]:
    """Consecutive per-run times grouped into the protocol's rounds (``runs`` each when ``runs > 0``,
    else ``rounds`` near-equal groups)."""
    samples = list(samples)
    if protocol.runs > 0:
        size = protocol.runs
    else:
        size = max(1, -(-len(samples) // protocol.rounds))
    return [samples[i:i + size] for i in range(0, len(samples), size)]


def _last_json(text: str) -> dict | None:
    """The last stdout line that is a JSON object (the agent prints exactly one)."""
    for line in reversed((text or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def check_device(device: str | DeviceSpec) -> dict:
    """What ``hwnat devices check`` reports for any device: for ssh/adb devices ``RemoteDevice.check``
    (connects; ``DeviceError`` when unreachable); for local devices the in-process runtime, its version
    and providers, harnesses on PATH and this machine's fingerprint. ``missing`` lists what the device
    file needs but the device lacks (empty: ready to measure).
    """
    from hwnat.devices.spec import load_device

    spec = load_device(device) if isinstance(device, str) else device
    if spec.transport.kind != "local":
        with RemoteDevice(spec) as dev:
            rep = dict(dev.check())
        rep.pop("workdir", None)  # removed again by close()
        return rep
    return _check_local(spec)


def _check_local(spec: DeviceSpec) -> dict:
    import platform
    import shutil

    from hwnat.devices.runtimes import get_runtime
    from hwnat.measure.fingerprint import local_fingerprint

    rt = spec.runtime
    rep: dict = {"device": spec.name, "transport": "local", "host": "local", "reachable": True,
                 "runtime": rt.kind, "harness": "in-process", "python": platform.python_version(),
                 "runtime_version": None, "missing": []}
    info: dict = {}
    try:
        runtime = get_runtime(rt)
        runtime.check()  # e.g. CUDA asked for and absent
        info = runtime.info()
        rep["runtime_version"] = info.get("runtime_version")
    except (DeviceError, BadInputError) as e:
        rep["missing"].append(f"{rt.kind}: {e}")
    if rt.kind == "onnxruntime" and rep["runtime_version"]:
        import onnxruntime as ort

        provs = ort.get_available_providers()
        rep["runtimes"] = {"onnxruntime": {"onnxruntime": ort.__version__}, "onnxruntime_providers": provs}
        if rt.provider and rt.provider not in provs:
            rep["missing"].append(f"ONNX Runtime execution provider {rt.provider} "
                                  f"(available: {', '.join(provs)})")
    rep["harnesses"] = {h: shutil.which(h) for h in HARNESSES}
    fp = local_fingerprint(info, device=spec.name, batch=1)
    rep["fingerprint"] = fp
    for k in ("governors", "cpu_freq_khz", "temperatures_c"):
        rep[k] = fp.get(k)
    rep["requires"] = list(spec.requires)
    rep["setup"] = list(spec.setup)
    rep["ok"] = not rep["missing"]
    return rep
