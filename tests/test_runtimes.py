"""Runtimes and exporters: every registered runtime either times a tiny real model on this machine through a
device file, or fails before measuring with a DeviceError (exit 3) that says what is missing; the torch
runtime end to end through `hwnat profile`; TensorRT's pure helpers; the export registry and `hwnat export
--format onnx|torch|tflite`.

What runs for real depends on what is installed: onnxruntime and torch (CPU) always; litert when
ai-edge-litert is importable (a tiny .tflite is built here with LiteRT's own flatbuffer schema when
litert-torch is absent); tensorrt and CUDA only on a machine with an NVIDIA GPU, otherwise their error path.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import yaml
from _hw import one_line_error, run_cli

from hwnat.devices.device import LocalDevice, open_device
from hwnat.devices.runtimes import Loaded, get_runtime, list_runtimes
from hwnat.devices.spec import RuntimeSpec, load_device
from hwnat.errors import BadInputError, DeviceError
from hwnat.export import ExportError, export_for_format, get_exporter, list_formats
from hwnat.measure._timing import time_runs

HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None
HAS_LITERT_TORCH = importlib.util.find_spec("litert_torch") is not None
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAS_CUDA = torch.cuda.is_available()

SHAPE = (1, 3, 16, 16)
FAST = {"warmup_s": 0.0, "warmup_runs": 2, "rounds": 3, "min_round_s": 0.005, "max_runs_per_round": 20,
        "unstable_tolerance": 0.5, "max_remeasure": 0}
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"

#: runtime -> (works on this machine?, what its error must say when it does not)
EXPECTED = {
    "onnxruntime": (True, ""),
    "torch": (True, ""),
    "litert": (HAS_LITERT, "pip install ai-edge-litert"),
    "tensorrt": (HAS_TENSORRT and HAS_CUDA,
                 "tensorrt is not installed" if not HAS_TENSORRT else "sees no CUDA GPU"),
}


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """The torch runtime sets torch's (process-wide) thread count: give later tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def device_yaml(tmp_path, name: str, runtime: dict) -> str:
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump({"name": name, "transport": {"kind": "local"}, "runtime": runtime,
                                 "measure": FAST}))
    return str(p)


def tiny_module():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                               torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1)).eval()


def tiny_tflite(path, shape=SHAPE, fp16_input: bool = False):
    """A valid .tflite built with LiteRT's flatbuffer schema: out = in + 1 (fp16 input: dequantized first)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    def tensor(name, buf, ttype=s.TensorType.FLOAT32):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), ttype, buf
        return t

    def opcode(op):
        c = s.OperatorCodeT()
        c.builtinCode = c.deprecatedBuiltinCode = op
        return c

    def operator(idx, inputs, outputs, opt_type, opt):
        o = s.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = idx, inputs, outputs
        o.builtinOptionsType, o.builtinOptions = opt_type, opt
        return o

    one = s.BufferT()
    one.data = np.frombuffer(np.ones(shape, np.float32).tobytes(), np.uint8)
    buffers = [s.BufferT(), s.BufferT(), one, s.BufferT(), s.BufferT()]  # buffer 0: the empty sentinel
    tensors = [tensor("input", 1, s.TensorType.FLOAT16 if fp16_input else s.TensorType.FLOAT32),
               tensor("one", 2), tensor("output", 3), tensor("dequantized", 4)]
    codes = [opcode(s.BuiltinOperator.ADD)]
    ops = [operator(0, [3 if fp16_input else 0, 1], [2], s.BuiltinOptions.AddOptions, s.AddOptionsT())]
    if fp16_input:
        codes.append(opcode(s.BuiltinOperator.DEQUANTIZE))
        ops.insert(0, operator(1, [0], [3], s.BuiltinOptions.DequantizeOptions, s.DequantizeOptionsT()))
    sg = s.SubGraphT()
    sg.tensors, sg.inputs, sg.outputs, sg.operators, sg.name = tensors, [0], [2], ops, "main"
    m = s.ModelT()
    m.version, m.operatorCodes, m.subgraphs, m.buffers, m.description = 3, codes, [sg], buffers, "hwnat test"
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path


def model_file(fmt: str, tmp_path):
    """A tiny model in ``fmt`` for input ``SHAPE``."""
    if fmt == "tflite" and not HAS_LITERT_TORCH:
        return tiny_tflite(tmp_path / "tiny.tflite")
    return export_for_format(fmt, tiny_module(), SHAPE, tmp_path / "tiny")


# ---- every registered runtime ---------------------------------------------------------------------

def test_registry_lists_the_runtimes_without_importing_backends():
    assert set(list_runtimes()) >= {"onnxruntime", "torch", "tensorrt", "litert"}
    with pytest.raises(BadInputError, match="onnxruntime, tensorrt, torch"):
        get_runtime(RuntimeSpec(kind="openvino"))


@pytest.mark.parametrize("name", list_runtimes())
def test_runtime_measures_here_or_says_what_is_missing(name, tmp_path):
    works, missing = EXPECTED.get(name, (None, ""))
    path = device_yaml(tmp_path, f"rt-{name}", {"kind": name, "threads": 1})
    try:
        dev = open_device(path)
    except DeviceError as e:
        assert works is not True, f"{name} should work on this machine: {e}"
        assert missing in str(e)
        r = run_cli(["profile", "--device", path, "--space", "nasbench201", "--out", tmp_path / "t.json"])
        assert r.exit_code == 3, r.output
        assert missing in one_line_error(r)
        assert not (tmp_path / "t.json").exists()
        return
    assert works is not False, f"{name} should have failed with DeviceError ({missing})"
    with dev:
        m = dev.measure(str(model_file(dev.model_format, tmp_path)), SHAPE)
        assert m.median_ms > 0 and len(m.round_medians_ms) == 3
        fp = dev.fingerprint()
    assert fp["runtime"] == name and fp["runtime_version"]


def test_profile_torch_cpu_end_to_end(tmp_path):
    dev = device_yaml(tmp_path, "torch-cpu", {"kind": "torch", "threads": 1})
    out = tmp_path / "nb.json"
    r = run_cli(["-q", "profile", "--device", dev, "--space", "nasbench201", "--out", out])
    assert r.exit_code == 0, r.output
    from hwnat.latency.table import LatencyTable
    from hwnat.spaces import get_space

    t = LatencyTable.load(out, space="nasbench201", device="torch-cpu")
    assert set(t.entries) == {b.key for b in get_space("nasbench201").all_blocks()}
    assert all(e["median_ms"] > 0 for e in t.entries.values())
    assert t.fingerprint["runtime"] == "torch" and t.fingerprint["timer"] == "perf_counter"
    assert t.fingerprint["device"] == "torch-cpu"


# ---- torch runtime ---------------------------------------------------------------------------------

def test_torch_fp16_and_threads_on_cpu(tmp_path):
    path = device_yaml(tmp_path, "torch-fp16", {"kind": "torch", "threads": 2, "precision": "fp16"})
    with open_device(path) as dev:
        m = dev.measure(str(model_file("torch", tmp_path)), SHAPE)
        assert m.median_ms > 0
        assert dev.fingerprint()["precision"] == "fp16"
        loaded = dev.runtime.load(str(tmp_path / "tiny.pt"), SHAPE)
        assert loaded.info["dtype"] == "float16" and loaded.time_once is None
        loaded.close()


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA: the no-GPU error path cannot happen")
@pytest.mark.parametrize("options", [{"device": "cuda"}, {"device": "cuda:0", "cuda_graphs": True}])
def test_torch_cuda_without_gpu_is_exit_3(tmp_path, options):
    path = device_yaml(tmp_path, "torch-cuda", {"kind": "torch", "options": options})
    with pytest.raises(DeviceError, match="cannot use CUDA"):
        open_device(path)
    r = run_cli(["profile", "--device", path, "--space", "nasbench201", "--out", tmp_path / "t.json"])
    assert r.exit_code == 3 and "CPU-only build" in one_line_error(r)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("graphs", [False, True])
def test_torch_cuda_timed_with_events(tmp_path, graphs):
    path = device_yaml(tmp_path, "torch-cuda", {"kind": "torch", "precision": "fp16",
                                                "options": {"device": "cuda", "cuda_graphs": graphs}})
    with open_device(path) as dev:
        m = dev.measure(str(model_file("torch", tmp_path)), SHAPE)
        assert m.median_ms > 0 and dev.fingerprint()["timer"] == "cuda_events"


@pytest.mark.parametrize("runtime, expected", [
    ({"options": {"cuda_graphs": True}}, "needs a CUDA device"),
    ({"precision": "int8"}, "fp32 or fp16"),
    ({"options": {"device": "tpu"}}, "expected cpu, cuda or cuda:N"),
    ({"options": {"cuda_graph": "yes"}}, "expected true or false"),
    ({"options": {"warp": 9}}, "unknown option(s) warp"),
])
def test_torch_bad_settings_are_exit_2(tmp_path, runtime, expected):
    path = device_yaml(tmp_path, "torch-bad", {"kind": "torch", **runtime})
    r = run_cli(["profile", "--device", path, "--space", "nasbench201", "--out", tmp_path / "t.json"])
    assert r.exit_code == 2 and expected in one_line_error(r)


def test_device_timer_replaces_host_clock(tmp_path, monkeypatch):
    """A runtime's ``Loaded.time_once`` (CUDA events) gives the samples; ``run`` is only used to warm up."""
    spec = load_device(device_yaml(tmp_path, "torch-cpu", {"kind": "torch"}))
    dev = LocalDevice(spec)
    calls = []
    monkeypatch.setattr(dev.runtime, "load", lambda p, s: Loaded(lambda: calls.append(1),
                                                                 time_once=lambda: 1.25))
    m = dev.measure("unused.pt", SHAPE)
    assert m.median_ms == 1.25 and m.p10_ms == m.p90_ms == 1.25
    assert len(calls) == FAST["warmup_runs"]
    rounds = time_runs(lambda: None, warmup_s=0, warmup_runs=0, rounds=2, runs=4, min_round_s=0,
                       max_runs_per_round=10, time_once=lambda: 0.5)
    assert rounds == [[0.5] * 4, [0.5] * 4]


# ---- tensorrt: the error path and the pure helpers --------------------------------------------------

@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed here")
def test_tensorrt_missing_says_how_to_install():
    rt = get_runtime(RuntimeSpec(kind="tensorrt", precision="fp16"))
    assert rt.model_format == "onnx"
    with pytest.raises(DeviceError, match=r"tensorrt is not installed .*pip install tensorrt"):
        rt.check()


def test_tensorrt_builder_flags_by_precision():
    from hwnat.devices.runtimes.tensorrt import builder_flag_names, trt_major

    assert trt_major("8.6.1.6") == 8 and trt_major("10.3.0") == 10
    for v in ("8.6.1", "10.3.0", "10.13.2"):
        assert builder_flag_names("fp32", v) == ()
        assert builder_flag_names("fp16", v) == ("FP16",)
        assert builder_flag_names("int8", v) == ("INT8", "FP16")
    assert builder_flag_names("fp32", "11.0.0") == ()
    with pytest.raises(DeviceError, match="strongly typed"):
        builder_flag_names("fp16", "11.4.0")
    with pytest.raises(BadInputError):
        builder_flag_names("fp8", "10.3.0")


def test_tensorrt_engine_cache_key(tmp_path):
    from hwnat.devices.runtimes.tensorrt import engine_cache_path

    kw = dict(precision="fp16", workspace_mib=None, input_shape=(1, 3, 224, 224), trt_version="10.3.0",
              gpu="NVIDIA H100 sm90", calibration_batches=8)
    base = engine_cache_path(tmp_path / "m.onnx", b"onnx", **kw)
    assert base.parent == tmp_path and base.name.startswith("m.") and base.suffix == ".engine"
    assert engine_cache_path(tmp_path / "m.onnx", b"onnx", **kw) == base
    for change in ({"precision": "int8"}, {"workspace_mib": 512}, {"input_shape": (1, 3, 160, 160)},
                   {"trt_version": "10.4.0"}, {"gpu": "Orin sm87"}):
        assert engine_cache_path(tmp_path / "m.onnx", b"onnx", **{**kw, **change}) != base
    assert engine_cache_path(tmp_path / "m.onnx", b"other", **kw) != base
    # calibration batches only matter for int8
    assert engine_cache_path(tmp_path / "m.onnx", b"onnx", **{**kw, "calibration_batches": 2}) == base


def test_tensorrt_settings_and_dtypes():
    from hwnat.devices.runtimes.tensorrt import torch_dtype_name, trt_settings

    s = trt_settings(RuntimeSpec(kind="tensorrt", options={"workspace_mib": 1024, "engine_cache": False}))
    assert (s.device, s.workspace_mib, s.engine_cache, s.calibration_batches) == ("cuda", 1024, False, 8)
    assert trt_settings(RuntimeSpec(kind="tensorrt", provider="cuda:1")).device == "cuda:1"
    for bad, msg in ([{"workspace_mib": -1}, "positive"], [{"device": "cpu"}, "cuda or cuda:N"],
                     [{"calibration_batches": 0}, ">= 1"], [{"fp16": True}, "unknown option"]):
        with pytest.raises(BadInputError, match=msg):
            trt_settings(RuntimeSpec(kind="tensorrt", options=bad))
    assert torch_dtype_name("DataType.FLOAT") == "float32" and torch_dtype_name("HALF") == "float16"
    with pytest.raises(DeviceError, match="FP8"):
        torch_dtype_name("FP8")


# ---- litert -----------------------------------------------------------------------------------------

@pytest.mark.skipif(not HAS_LITERT, reason="ai-edge-litert is not installed (pip install ai-edge-litert)")
@pytest.mark.parametrize("xnnpack", [True, False])
@pytest.mark.parametrize("fp16_input", [False, True])
def test_litert_xnnpack_on_off_and_input_types(tmp_path, xnnpack, fp16_input):
    model = tiny_tflite(tmp_path / "t.tflite", fp16_input=fp16_input)
    path = device_yaml(tmp_path, "litert", {"kind": "litert", "threads": 2, "options": {"xnnpack": xnnpack}})
    with open_device(path) as dev:
        assert dev.model_format == "tflite" and dev.fingerprint()["xnnpack"] is xnnpack
        loaded = dev.runtime.load(str(model), SHAPE)
        assert loaded.info == {"xnnpack": xnnpack, "input_dtype": "float16" if fp16_input else "float32"}
        loaded.close()
        assert dev.measure(str(model), SHAPE).median_ms > 0


@pytest.mark.skipif(not HAS_LITERT, reason="ai-edge-litert is not installed (pip install ai-edge-litert)")
def test_litert_bad_file_and_option(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    path = device_yaml(tmp_path, "litert", {"kind": "litert"})
    with open_device(path) as dev, pytest.raises(DeviceError, match="LiteRT could not load"):
        dev.measure(str(bad), SHAPE)
    path = device_yaml(tmp_path, "litert2", {"kind": "litert", "options": {"xnnpak": False}})
    r = run_cli(["profile", "--device", path, "--space", "nasbench201", "--out", tmp_path / "t.json"])
    assert r.exit_code == 2 and "unknown option(s) xnnpak" in one_line_error(r)


def test_random_input_types():
    from hwnat.devices.runtimes.litert import random_input

    assert random_input((2, 3), np.float16).dtype == np.float16
    q = random_input((1000,), np.int8)
    assert q.dtype == np.int8 and q.min() < -100 and q.max() > 100


# ---- exporters and `hwnat export` -------------------------------------------------------------------

def test_export_registry(tmp_path):
    assert list_formats() == ["onnx", "tflite", "torch"]
    with pytest.raises(BadInputError, match="expected one of: onnx, tflite, torch"):
        export_for_format("engine", tiny_module(), SHAPE, tmp_path / "m")
    m = tiny_module()
    for fmt, suffix in (("onnx", ".onnx"), ("torch", ".pt")):
        p = export_for_format(fmt, m, SHAPE, tmp_path / "m")
        assert p == tmp_path / f"m{suffix}" and p.stat().st_size > 0
        assert get_exporter(fmt).check(m, p, SHAPE) < 1e-4
    # a different module with the same shape is caught by the numerical check
    with pytest.raises(ExportError, match="differs from torch"):
        get_exporter("torch").check(torch.nn.Conv2d(3, 8, 3, padding=1).eval(),
                                    export_for_format("torch", torch.nn.Conv2d(3, 8, 3, padding=1), SHAPE,
                                                      tmp_path / "c"), SHAPE)


@pytest.mark.skipif(HAS_LITERT_TORCH, reason="litert-torch is installed here")
def test_tflite_export_without_litert_torch_says_how_to_install(tmp_path):
    with pytest.raises(DeviceError, match=r"pip install litert-torch"):
        export_for_format("tflite", tiny_module(), SHAPE, tmp_path / "m")
    r = run_cli(["export", "--space", "nasbench201", "--arch", ARCH, "--format", "tflite",
                 "--out", tmp_path / "n.tflite"])
    assert r.exit_code == 3 and "pip install litert-torch" in one_line_error(r)


@pytest.mark.skipif(not HAS_LITERT_TORCH, reason="litert-torch is not installed (pip install litert-torch)")
def test_tflite_export_matches_torch_and_runs_in_litert(tmp_path):
    m = tiny_module()
    p = export_for_format("tflite", m, SHAPE, tmp_path / "m")
    assert p.suffix == ".tflite" and get_exporter("tflite").check(m, p, SHAPE) < 1e-3
    dev = device_yaml(tmp_path, "litert", {"kind": "litert", "threads": 1})
    with open_device(dev) as d:
        assert d.measure(str(p), SHAPE).median_ms > 0
    r = run_cli(["export", "--space", "nasbench201", "--arch", ARCH, "--block", "1", "--format", "tflite",
                 "--out", tmp_path / "b.tflite"])
    assert r.exit_code == 0 and "LiteRT matches torch" in r.stdout, r.output


def test_cli_export_torch_format(tmp_path):
    r = run_cli(["export", "--space", "nasbench201", "--arch", ARCH, "--format", "torch",
                 "--out", tmp_path / "n.pt"])
    assert r.exit_code == 0 and "torch.jit matches torch" in r.stdout, r.output
    r = run_cli(["export", "--space", "nasbench201", "--arch", ARCH, "--format", "torch",
                 "--out", tmp_path / "n.onnx"])
    assert r.exit_code == 2 and "use a name ending in .pt" in one_line_error(r)


# ---- GPU code paths against fake backends (control flow and API use only; no GPU here) ---------------

class _Named:
    def __init__(self, name):
        self.name = name


class _FakeEvent:
    def __init__(self, log, enable_timing=False):
        self.log = log

    def record(self, stream=None):
        self.log.append("record")

    def synchronize(self):
        self.log.append("event-sync")

    def elapsed_time(self, other):
        return 0.75


class _FakeStream:
    cuda_stream = 1234

    def __init__(self, log, device=None):
        self.log = log

    def synchronize(self):
        self.log.append("stream-sync")

    def wait_stream(self, other):
        self.log.append("wait")


class _FakeGraph:
    def __init__(self, log):
        self.log = log

    def replay(self):
        self.log.append("replay")


class _FakeCtx:
    def __init__(self, log, what):
        self.log, self.what = log, what

    def __enter__(self):
        self.log.append(f"enter-{self.what}")

    def __exit__(self, *exc):
        self.log.append(f"exit-{self.what}")


class FakeTorch:
    """Real torch (CPU tensors) with a fake ``torch.cuda`` that records what it is asked to do."""

    def __init__(self):
        import types

        self.log = []
        log = self.log
        self.cuda = types.SimpleNamespace(
            is_available=lambda: True, device_count=lambda: 1, current_device=lambda: 0,
            set_device=lambda d: log.append(f"set_device {d}"), get_device_name=lambda d=None: "FakeGPU",
            get_device_capability=lambda d=None: (9, 0), synchronize=lambda d=None: log.append("sync"),
            empty_cache=lambda: log.append("empty_cache"),
            Stream=lambda device=None: _FakeStream(log, device), current_stream=lambda d=None: _FakeStream(log),
            stream=lambda s: _FakeCtx(log, "stream"), Event=lambda enable_timing=False: _FakeEvent(log),
            CUDAGraph=lambda: _FakeGraph(log), graph=lambda g: _FakeCtx(log, "capture"))

    def __getattr__(self, name):
        return getattr(torch, name)

    def empty(self, shape, dtype=None, device=None):
        self.log.append(f"empty {list(shape)} on {device}")
        return torch.empty(shape, dtype=dtype)

    def Generator(self, device=None):  # noqa: N802  (torch's name)
        return torch.Generator()


@pytest.mark.parametrize("graphs", [False, True])
def test_torch_cuda_path_with_fake_cuda(tmp_path, graphs):
    from hwnat.devices.runtimes.torch import TorchSettings, _cuda_loaded
    from hwnat.export.torchscript import load_torchscript

    ft = FakeTorch()
    module = load_torchscript(model_file("torch", tmp_path)).eval()
    x = torch.zeros(SHAPE)
    calls = []
    loaded = _cuda_loaded(ft, module, x, lambda: calls.append(1), TorchSettings("cuda:0", graphs), {})
    assert loaded.time_once() == 0.75 and loaded.sync is not None
    if graphs:  # 3 eager warm-up calls on a side stream, then the capture; a timed run replays the graph
        assert len(calls) == 3 and ft.log.index("enter-stream") < ft.log.index("enter-capture")
        assert ft.log[-4:] == ["record", "replay", "record", "event-sync"] and loaded.info["cuda_graphs"]
    else:  # a timed run launches the module between two event records
        assert calls == [1] and "replay" not in ft.log and ft.log[-3:] == ["record", "record", "event-sync"]
    loaded.close()
    assert ft.log[-2:] == ["sync", "empty_cache"]


def fake_tensorrt(version: str, log: list):
    """A stand-in ``tensorrt`` module with the names hwnat's runtime uses (TensorRT 8.6/10 Python API)."""
    import types

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, sev: None})
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.DataType = types.SimpleNamespace(FLOAT=_Named("FLOAT"))
    trt.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None})
    dyn = (-1, *SHAPE[1:])
    out_shape = (1, 8, 16, 16)

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape, self.dtype = name, shape, trt.DataType.FLOAT

    class Network:
        num_inputs = 1

        def get_input(self, i):
            return Tensor("input", dyn)

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse(self, data):
            log.append(f"parse {len(data)} bytes")
            return data[:2] != b"no"

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            log.append(f"profile {name} {list(lo)} {list(opt)} {list(hi)}")

    class Config:
        int8_calibrator = None

        def set_memory_pool_limit(self, pool, size):
            log.append(f"pool {pool} {size}")

        def set_flag(self, flag):
            log.append(f"flag {flag}")

        def add_optimization_profile(self, p):
            log.append("add profile")

        def set_calibration_profile(self, p):
            log.append("calibration profile")

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            log.append(f"network flags {flags}")
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calib = config.int8_calibrator
            if calib is not None:
                n = 0
                while calib.get_batch(["input"]) is not None:
                    n += 1
                log.append(f"calibrated {n} batches of {calib.get_batch_size()}")
            log.append("build")
            return b"PLAN"

    class Context:
        def set_input_shape(self, name, shape):
            log.append(f"input shape {name} {list(shape)}")
            return True

        def get_tensor_shape(self, name):
            return out_shape

        def set_tensor_address(self, name, ptr):
            log.append(f"address {name}")

        def execute_async_v3(self, handle):
            log.append(f"execute {handle}")
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return ["input", "output"][i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == "input" else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT

        def get_tensor_shape(self, name):
            return dyn if name == "input" else out_shape

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            log.append(f"deserialize {plan!r}")
            return Engine()

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, Parser, Runtime
    return trt


@pytest.mark.parametrize("version, precision, expect", [
    ("10.3.0", "int8", ["network flags 0", "pool WORKSPACE 268435456", "flag INT8", "flag FP16",
                        "profile input [1, 3, 16, 16] [1, 3, 16, 16] [1, 3, 16, 16]", "add profile",
                        "calibration profile", "calibrated 8 batches of 1", "build"]),
    ("8.6.1", "fp16", ["network flags 1", "pool WORKSPACE 268435456", "flag FP16",
                       "profile input [1, 3, 16, 16] [1, 3, 16, 16] [1, 3, 16, 16]", "add profile", "build"]),
])
def test_tensorrt_build_cache_and_run_with_fake_backend(tmp_path, monkeypatch, version, precision, expect):
    import sys

    from hwnat.devices.runtimes.tensorrt import TensorRtRuntime

    log = []
    ft = FakeTorch()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(version, log))
    monkeypatch.setattr(TensorRtRuntime, "_torch_cuda", lambda self: ft)
    path = device_yaml(tmp_path, "trt", {"kind": "tensorrt", "precision": precision,
                                         "options": {"workspace_mib": 256}})
    model = model_file("onnx", tmp_path)
    with open_device(path) as dev:
        assert dev.model_format == "onnx" and dev.fingerprint()["timer"] == "cuda_events"
        loaded = dev.runtime.load(str(model), SHAPE)
        assert [x for x in log if x.split()[0] in ("network", "pool", "flag", "profile", "add", "calibration",
                                                   "calibrated", "build")] == expect
        assert loaded.info["engine"] == "built" and loaded.info["io"] == {"input": list(SHAPE),
                                                                         "output": [1, 8, 16, 16]}
        assert "input shape input [1, 3, 16, 16]" in log and {"address input", "address output"} <= set(log)
        assert loaded.time_once() == 0.75 and log[-1] == "execute 1234"
        loaded.close()
        engines = list(tmp_path.glob("tiny.*.engine"))
        assert len(engines) == 1 and engines[0].read_bytes() == b"PLAN"
        log.clear()
        m = dev.measure(str(model), SHAPE)  # second load: the cached engine, no build
        assert "build" not in log and m.median_ms == 0.75
        assert dev.runtime.load(str(model), SHAPE).info["engine"] == "cached"


def test_tensorrt_parse_failure_and_trt11_fp16_with_fake_backend(tmp_path, monkeypatch):
    import sys

    from hwnat.devices.runtimes.tensorrt import TensorRtRuntime

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.3.0", []))
    monkeypatch.setattr(TensorRtRuntime, "_torch_cuda", lambda self: FakeTorch())
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    rt = TensorRtRuntime(RuntimeSpec(kind="tensorrt"))
    with pytest.raises(DeviceError, match="could not parse bad.onnx"):
        rt.load(str(bad), SHAPE)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.0.0", []))
    with pytest.raises(DeviceError, match="strongly typed"):
        TensorRtRuntime(RuntimeSpec(kind="tensorrt", precision="fp16")).check()
