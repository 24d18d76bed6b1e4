"""hwnat remote agent: times a model with the runtime installed on a device and prints one JSON object.

The host pushes ONE file to the device: the source of ``hwnat/measure/_timing.py`` followed by this file
(``hwnat.devices.agent.agent_source()``), so the timing loop exists once and no hwnat install is needed
there. Only the standard library and the runtime on the device are imported. Python >= 3.7.

Usage (on the device):
    python3 agent.py --check                       # what is installed: Python, runtimes, harnesses
    python3 agent.py --fingerprint                 # the device fingerprint only
    python3 agent.py --request '{"model": ...}'    # time a model (request JSON: see ``measure``)
    python3 agent.py --request - < request.json

Output: exactly one line of JSON on stdout with ``"ok": true`` or ``"ok": false, "error": "..."`` (exit
status 0 or 1). Statistics are computed on the host from the raw ``rounds_ms``.
"""

# No ``from __future__`` import here: this file is appended to ``_timing.py``, which already has it.
import glob
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback

if "time_runs" not in globals():  # run from a source checkout: not composed with _timing.py
    from hwnat.measure._timing import time_runs

AGENT_PROTOCOL = 1
HARNESSES = ("trtexec", "benchmark_model", "onnxruntime_perf_test", "nvpmodel", "jetson_clocks",
             "tegrastats", "taskset")
# well-known places of harnesses that are not on PATH by default
HARNESS_DIRS = ("/usr/src/tensorrt/bin", "/usr/local/tensorrt/bin", "/data/local/tmp")
# pip distribution names of runtimes (read from metadata: nothing heavy is imported by --check)
RUNTIME_DISTS = {
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "litert": ("ai-edge-litert", "tflite-runtime", "tensorflow", "tensorflow-cpu"),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-libs"),
    "torch": ("torch",),
    "openvino": ("openvino",),
    "numpy": ("numpy",),
}


# -- reading the machine (files and fixed commands only) ---------------------------------------------

def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace").replace("\x00", "").strip()
    except OSError:
        return None


def _cmd(argv, timeout_s=5.0):
    """stdout of a fixed argument list, or None when it is missing or fails (never a shell)."""
    exe = shutil.which(argv[0])
    if exe is None:
        return None
    try:
        p = subprocess.run([exe] + list(argv[1:]), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.decode(errors="replace").strip() if p.returncode == 0 else None


def cpu_model():
    info = _read("/proc/cpuinfo") or ""
    for line in info.splitlines():
        if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpufreq_dirs():
    return sorted(glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq"),
                  key=lambda d: int(d.split("/")[-2][3:]))


def cpu_frequencies_khz():
    out = {}
    for d in _cpufreq_dirs():
        v = _read(d + "/scaling_cur_freq")
        if v and v.isdigit():
            out[d.split("/")[-2]] = int(v)
    return out


def cpu_freq_limits_khz():
    """{cpu: [min, max]} of the scaling limits (equal limits = clocks pinned, e.g. by jetson_clocks)."""
    out = {}
    for d in _cpufreq_dirs():
        lo, hi = _read(d + "/scaling_min_freq"), _read(d + "/scaling_max_freq")
        if lo and hi and lo.isdigit() and hi.isdigit():
            out[d.split("/")[-2]] = [int(lo), int(hi)]
    return out


def governors():
    out = {}
    for d in _cpufreq_dirs():
        v = _read(d + "/scaling_governor")
        if v:
            out[d.split("/")[-2]] = v
    return out


def temperatures_c():
    out = {}
    for z in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        t = _read(z + "/temp")
        kind = _read(z + "/type") or os.path.basename(z)
        if t and t.lstrip("-").isdigit():
            out[f"{os.path.basename(z)}:{kind}"] = int(t) / 1000.0
    return out


def devfreq():
    """GPU / accelerator frequencies from devfreq (Jetson GPU, Mali, Adreno): {name: {cur, min, max, governor}}."""
    out = {}
    for d in sorted(glob.glob("/sys/class/devfreq/*")):
        rec = {}
        for key, fname in (("cur_hz", "cur_freq"), ("min_hz", "min_freq"), ("max_hz", "max_freq")):
            v = _read(d + "/" + fname)
            if v and v.isdigit():
                rec[key] = int(v)
        gov = _read(d + "/governor")
        if gov:
            rec["governor"] = gov
        if rec:
            out[os.path.basename(d)] = rec
    return out


def jetson_state():
    """L4T release, power model and whether clocks look pinned (jetson_clocks), where present."""
    release = _read("/etc/nv_tegra_release")
    if release is None and not os.path.exists("/etc/nvpmodel.conf"):
        return None
    st = {"l4t_release": release.splitlines()[0] if release else None}
    q = _cmd(["nvpmodel", "-q"])
    if q:
        st["nvpmodel"] = " | ".join(ln.strip() for ln in q.splitlines() if ln.strip())
    status = _read("/var/lib/nvpmodel/status")
    if status:
        st["nvpmodel_status"] = status
    limits = cpu_freq_limits_khz()
    gpus = [v for v in devfreq().values() if "min_hz" in v and "max_hz" in v]
    pinned = bool(limits) and all(lo == hi for lo, hi in limits.values()) and \
        all(g["min_hz"] == g["max_hz"] for g in gpus)
    # jetson_clocks pins min = max for CPU and GPU; reading this needs no root (``--show`` does)
    st["jetson_clocks_likely_on"] = pinned
    return st


def android_state():
    if _read("/system/build.prop") is None and shutil.which("getprop") is None:
        return None
    st = {}
    for key in ("ro.product.model", "ro.board.platform", "ro.build.version.release"):
        v = _cmd(["getprop", key])
        if v:
            st[key] = v
    return st or None


def fingerprint():
    fp = {
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "governors": sorted(set(governors().values())) or None,
        "cpu_freq_khz": cpu_frequencies_khz() or None,
        "cpu_freq_limits_khz": cpu_freq_limits_khz() or None,
        "temperatures_c": temperatures_c() or None,
        "devfreq": devfreq() or None,
        "board": _read("/proc/device-tree/model") or None,
        "python": platform.python_version(),
    }
    j = jetson_state()
    if j:
        fp["jetson"] = j
    a = android_state()
    if a:
        fp["android"] = a
    return fp


# -- what is installed ---------------------------------------------------------------------------------

def _dist_version(name):
    try:
        from importlib import metadata
    except ImportError:  # Python 3.7
        return None
    try:
        return metadata.version(name)
    except Exception:  # PackageNotFoundError, broken metadata
        return None


def check():
    runtimes = {}
    for rt, dists in RUNTIME_DISTS.items():
        found = {d: _dist_version(d) for d in dists}
        found = {d: v for d, v in found.items() if v}
        runtimes[rt] = found or None
    if runtimes.get("onnxruntime"):
        try:
            ort = importlib.import_module("onnxruntime")
            runtimes["onnxruntime_providers"] = list(ort.get_available_providers())
        except Exception as e:  # a broken install is worth reporting, not crashing on
            runtimes["onnxruntime_error"] = f"{type(e).__name__}: {e}"
    harnesses = {}
    for h in HARNESSES:
        path = shutil.which(h)
        if path is None:
            for d in HARNESS_DIRS:
                if os.access(os.path.join(d, h), os.X_OK):
                    path = os.path.join(d, h)
                    break
        harnesses[h] = path
    return {"python": platform.python_version(), "python_executable": sys.executable,
            "runtimes": runtimes, "harnesses": harnesses, "fingerprint": fingerprint()}


# -- runtimes --------------------------------------------------------------------------------------------

def _input(shape, dtype="float32", seed=0):
    np = importlib.import_module("numpy")
    x = np.random.default_rng(seed).standard_normal(shape)
    return x.astype(dtype)


def load_onnxruntime(model, shapes, rt):
    ort = importlib.import_module("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(rt.get("threads", 1))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    p = rt.get("provider") or "CPUExecutionProvider"
    wanted = [p] if p == "CPUExecutionProvider" else [p, "CPUExecutionProvider"]
    missing = [w for w in wanted if w not in ort.get_available_providers()]
    if missing:
        raise RuntimeError(f"ONNX Runtime {ort.__version__} has no {', '.join(missing)}; available: "
                           f"{', '.join(ort.get_available_providers())}")
    sess = ort.InferenceSession(model, so, providers=wanted)
    inputs = sess.get_inputs()
    if len(inputs) != len(shapes):
        raise RuntimeError(f"{model} takes {len(inputs)} input(s), but {len(shapes)} shape(s) were given")
    feed = {i.name: _input(s, seed=n) for n, (i, s) in enumerate(zip(inputs, shapes))}  # noqa: B905 (Python 3.7)
    outs = [o.name for o in sess.get_outputs()]

    def run():
        sess.run(outs, feed)

    info = {"runtime": "onnxruntime", "runtime_version": ort.__version__,
            "threads": int(rt.get("threads", 1)), "providers": sess.get_providers()}
    return run, info


def _tflite_interpreter():
    for mod, version_mod in (("ai_edge_litert.interpreter", "ai_edge_litert"),
                             ("tflite_runtime.interpreter", "tflite_runtime"),
                             ("tensorflow.lite", "tensorflow")):
        try:
            m = importlib.import_module(mod)
        except ImportError:
            continue
        v = getattr(importlib.import_module(version_mod), "__version__", None) or \
            _dist_version(version_mod.replace("_", "-"))
        return m.Interpreter, version_mod, v
    raise RuntimeError("no TFLite interpreter: install ai-edge-litert (pip install ai-edge-litert)")


def load_litert(model, shapes, rt):
    Interpreter, name, version = _tflite_interpreter()
    threads = int(rt.get("threads", 1))
    interp = Interpreter(model_path=model, num_threads=threads if threads > 0 else None)
    details = interp.get_input_details()
    if len(details) != len(shapes):
        raise RuntimeError(f"{model} takes {len(details)} input(s), but {len(shapes)} shape(s) were given")
    for inp, shape in zip(details, shapes):  # noqa: B905 (the agent runs on Python 3.7)
        if list(inp["shape"]) != list(shape):
            interp.resize_tensor_input(inp["index"], list(shape))
    interp.allocate_tensors()
    for n, (inp, shape) in enumerate(zip(interp.get_input_details(), shapes)):  # noqa: B905
        interp.set_tensor(inp["index"], _input(shape, inp["dtype"], seed=n))

    def run():
        interp.invoke()

    return run, {"runtime": "litert", "runtime_version": version, "threads": threads, "interpreter": name}


LOADERS = {"onnxruntime": load_onnxruntime, "litert": load_litert, "tflite": load_litert}


# -- measuring ---------------------------------------------------------------------------------------------

def input_shapes(value):
    """A request's ``input_shape`` as a list of shapes: ``[1, 3, 8, 8]`` (one input) or a list of them."""
    if value and isinstance(value[0], list):
        return [[int(d) for d in s] for s in value]
    return [[int(d) for d in value]]


def _max(d):
    return max(d.values()) if d else None


def measure(req):
    """Request: {"model": path, "input_shape": [..] or [[..], ..] (several inputs), "runtime": {"kind", "threads", "provider", ...},
    "timing": time_runs keyword arguments, "thermal": {"max_temp_c", "cooldown_wait_s"},
    "fingerprint": bool}."""
    rt = req.get("runtime") or {}
    kind = rt.get("kind", "onnxruntime")
    if kind not in LOADERS:
        raise RuntimeError(f"the agent cannot run runtime {kind!r}; it runs: {', '.join(sorted(LOADERS))}")
    run, info = LOADERS[kind](req["model"], input_shapes(req["input_shape"]), rt)
    thermal = req.get("thermal") or {}
    rec = {}
    temps = temperatures_c()
    limit = thermal.get("max_temp_c")
    if limit is not None and temps:
        waited = 0.0
        while _max(temps) > limit and waited < float(thermal.get("cooldown_wait_s", 30.0)):
            time.sleep(1.0)
            waited += 1.0
            temps = temperatures_c()
        if waited:
            rec["cooldown_waited_s"] = waited
    f0 = cpu_frequencies_khz()
    rounds = time_runs(run, **req["timing"])
    t1, f1 = temperatures_c(), cpu_frequencies_khz()
    if temps or t1:
        rec["temp_c_before"], rec["temp_c_after"] = _max(temps), _max(t1)
    if f0 and f1:
        rec["freq_khz_before"], rec["freq_khz_after"] = min(f0.values()), min(f1.values())
    if (limit is not None and t1 and _max(t1) > limit) or (f0 and f1 and min(f1.values()) <
                                                            0.9 * min(f0.values())):
        rec["throttled"] = True
    out = {"rounds_ms": rounds, "info": info, "thermal": rec}
    if req.get("fingerprint"):
        out["fingerprint"] = fingerprint()
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["--check"]:
            out = check()
        elif argv[:1] == ["--fingerprint"]:
            out = {"fingerprint": fingerprint()}
        elif argv[:1] == ["--request"] and len(argv) == 2:
            out = measure(json.loads(sys.stdin.read() if argv[1] == "-" else argv[1]))
        else:
            raise ValueError("usage: agent.py --check | --fingerprint | --request JSON|-")
    except Exception as e:  # everything becomes one JSON line the host can report
        sys.stderr.write(traceback.format_exc())
        print(json.dumps({"ok": False, "agent_protocol": AGENT_PROTOCOL,
                          "error": f"{type(e).__name__}: {e}"}))
        return 1
    out.update(ok=True, agent_protocol=AGENT_PROTOCOL)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
