"""TensorRT runtime: an engine built from the ONNX file with the TensorRT Python API, timed with CUDA events.

Build: ``trt.Builder`` -> network (explicit batch) -> ``trt.OnnxParser`` -> ``IBuilderConfig`` with the
precision flags (fp32: none; fp16: ``FP16``; int8: ``INT8`` + ``FP16``, so layers without an int8 kernel
fall back to fp16 rather than fp32, like ``trtexec --int8 --fp16``) and, when asked, a workspace limit
(``set_memory_pool_limit(WORKSPACE, ...)``) -> ``build_serialized_network``. A dynamic input is pinned to
the measured shape with a one-shape optimization profile.

int8 without calibration data: TensorRT's entropy calibrator is fed ``calibration_batches`` (default 8)
batches of standard-normal random inputs. The scales it derives are meaningless for accuracy, but the
engine uses the same int8 kernels a calibrated one would, so its latency is representative (trtexec's
``--int8`` without ``--calib`` likewise uses placeholder ranges). Never use such an engine for accuracy.
TensorRT 11 removed the weak-typing precision flags (``BuilderFlag.FP16/INT8``, calibrators): there only
fp32 (or a model already converted to fp16 / quantized with Q/DQ nodes, timed as fp32) is accepted.

Engines are cached next to the model as ``<model stem>.<key>.engine``, where the key hashes the ONNX
bytes, the precision, the workspace limit, the input shape, the TensorRT version and the GPU (an engine is
only valid for the TensorRT version and GPU model that built it). ``options: {engine_cache: false}``
turns the cache off.

Run: one execution context; every I/O tensor is a torch CUDA tensor whose address is bound with
``set_tensor_address``; a run is ``execute_async_v3`` on a dedicated stream, timed by CUDA events
recorded on that stream around it (needs a CUDA build of torch for memory, streams and events;
cuda-python is not used).

Device file fields used: ``runtime.precision``, ``runtime.provider`` or ``runtime.options.device``
(``cuda`` or ``cuda:N``), ``runtime.options.workspace_mib``, ``engine_cache``, ``calibration_batches``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from hwnat._shapes import as_shapes
from hwnat.devices.runtimes._base import Loaded, Runtime, register_runtime
from hwnat.errors import BadInputError, DeviceError

log = logging.getLogger(__name__)

INSTALL_HINT = ("pip install tensorrt (NVIDIA's wheels, for an NVIDIA GPU with its driver; on Jetson it comes "
                "with JetPack), with a CUDA build of torch")

#: runtime.options keys this runtime reads
OPTIONS = ("device", "workspace_mib", "engine_cache", "calibration_batches")

#: TensorRT ``DataType`` member name -> torch dtype name
TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "UINT8": "uint8",
                "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


@dataclass(frozen=True)
class TrtSettings:
    """The tensorrt runtime's reading of a ``RuntimeSpec``."""

    #: torch device of the GPU: "cuda" or "cuda:N"
    device: str
    #: builder workspace limit in MiB; None = TensorRT's default (the GPU's memory)
    workspace_mib: int | None
    #: reuse a built engine cached next to the model
    engine_cache: bool
    #: random batches fed to the int8 calibrator
    calibration_batches: int


def trt_settings(spec) -> TrtSettings:
    """Validate ``spec`` (a ``RuntimeSpec`` of kind tensorrt) into ``TrtSettings`` (``BadInputError``)."""
    unknown = sorted(set(spec.options) - set(OPTIONS))
    if unknown:
        raise BadInputError(f"runtime.options: unknown option(s) {', '.join(unknown)} for the tensorrt runtime; "
                            f"expected: {', '.join(OPTIONS)}")
    raw = str(spec.options.get("device", spec.provider or "cuda"))
    dev = "cuda" if raw.lower() in ("cuda", "cudaexecutionprovider", "tensorrtexecutionprovider") else raw.lower()
    if not (dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise BadInputError(f"runtime device {raw!r}: expected cuda or cuda:N for the tensorrt runtime")
    ws = spec.options.get("workspace_mib")
    if ws is not None and (isinstance(ws, bool) or not isinstance(ws, int) or ws <= 0):
        raise BadInputError(f"runtime.options.workspace_mib: expected a positive whole number of MiB (got {ws!r})")
    cache = spec.options.get("engine_cache", True)
    if not isinstance(cache, bool):
        raise BadInputError(f"runtime.options.engine_cache: expected true or false (got {cache!r})")
    nb = spec.options.get("calibration_batches", 8)
    if isinstance(nb, bool) or not isinstance(nb, int) or nb < 1:
        raise BadInputError(f"runtime.options.calibration_batches: expected a whole number >= 1 (got {nb!r})")
    return TrtSettings(device=dev, workspace_mib=ws, engine_cache=cache, calibration_batches=nb)


def trt_major(version: str) -> int:
    """Major version of a TensorRT version string (``"10.3.0.26"`` -> 10)."""
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise DeviceError(f"cannot read the TensorRT version {version!r}") from None


def builder_flag_names(precision: str, trt_version: str) -> tuple[str, ...]:
    """Names of the ``trt.BuilderFlag`` members to set for ``precision`` on TensorRT ``trt_version``.

    Raises:
        DeviceError: fp16/int8 on TensorRT >= 11, which removed these flags (strong typing only).
        BadInputError: an unknown precision.

    Example:
        >>> builder_flag_names("int8", "10.3.0")
        ('INT8', 'FP16')
    """
    flags = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8", "FP16")}
    if precision not in flags:
        raise BadInputError(f"runtime.precision {precision!r}: expected fp32, fp16 or int8")
    if flags[precision] and trt_major(trt_version) >= 11:
        raise DeviceError(f"TensorRT {trt_version} builds strongly typed networks only (BuilderFlag.FP16/INT8 "
                          f"were removed in 11.x): set runtime.precision: fp32 and give a model already in "
                          f"{precision} (converted to fp16, or quantized with Q/DQ nodes)")
    return flags[precision]


def engine_cache_path(model_path: str | Path, model_bytes: bytes, *, precision: str, workspace_mib: int | None,
                      input_shape: tuple[int, ...], trt_version: str, gpu: str,
                      calibration_batches: int) -> Path:
    """Where the engine for this model and build configuration is cached: next to the model, named by a
    hash of everything that makes an engine differ."""
    h = hashlib.sha256(model_bytes)
    h.update(json.dumps({"precision": precision, "workspace_mib": workspace_mib, "input": list(input_shape),
                         "trt": trt_version, "gpu": gpu,
                         "calib": calibration_batches if precision == "int8" else None},
                        sort_keys=True).encode())
    p = Path(model_path)
    return p.with_name(f"{p.stem}.{h.hexdigest()[:16]}.engine")


def torch_dtype_name(trt_dtype) -> str:
    """torch dtype name for a ``trt.DataType`` (or its member name)."""
    name = getattr(trt_dtype, "name", None) or str(trt_dtype).rsplit(".", 1)[-1]
    if name not in TORCH_DTYPES:
        raise DeviceError(f"TensorRT I/O tensor type {name} is not supported by hwnat's tensorrt runtime")
    return TORCH_DTYPES[name]


def _fill_random(torch, t, gen) -> None:
    if t.dtype.is_floating_point:
        t.normal_(generator=gen)
    elif t.dtype == torch.bool:
        t.random_(0, 2, generator=gen)
    else:
        t.random_(0, 100, generator=gen)


@register_runtime("tensorrt")
class TensorRtRuntime(Runtime):
    model_format = "onnx"

    def _trt(self):
        try:
            import tensorrt as trt
        except ImportError as e:
            raise DeviceError(f"tensorrt is not installed ({e}); the tensorrt runtime needs {INSTALL_HINT}") from None
        return trt

    def _torch_cuda(self):
        import torch

        if not torch.cuda.is_available():
            raise DeviceError(f"the tensorrt runtime keeps its buffers in torch CUDA tensors, and torch "
                              f"{torch.__version__} sees no CUDA GPU ("
                              f"{'a CPU-only build' if torch.version.cuda is None else 'no usable GPU or driver'})")
        return torch

    def settings(self) -> TrtSettings:
        return trt_settings(self.spec)

    def version(self) -> str:
        return self._trt().__version__

    def check(self) -> None:
        trt = self._trt()
        s = self.settings()
        builder_flag_names(self.spec.precision, trt.__version__)
        torch = self._torch_cuda()
        idx = int(s.device[5:]) if ":" in s.device else 0
        if idx >= torch.cuda.device_count():
            raise DeviceError(f"runtime tensorrt on {s.device}: only {torch.cuda.device_count()} CUDA device(s) "
                              "are visible")

    def info(self) -> dict:
        d = super().info()
        s = self.settings()
        d.update(device=s.device, workspace_mib=s.workspace_mib, timer="cuda_events")
        try:
            import torch

            if torch.cuda.is_available():
                d["gpu"] = torch.cuda.get_device_name(torch.device(s.device))
        except ImportError:  # pragma: no cover - torch is a dependency of hwnat
            pass
        return d

    # ---- build ------------------------------------------------------------------------------------

    def build_engine(self, onnx_bytes: bytes, input_shape: tuple[int, ...], model_name: str = "model") -> bytes:
        """Parse the ONNX model and build a serialized engine for ``input_shape`` and the spec's precision."""
        trt = self._trt()
        s = self.settings()
        flag_names = builder_flag_names(self.spec.precision, trt.__version__)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        flags = 0
        if trt_major(trt.__version__) < 10:  # explicit batch is the only mode from 10.0 on
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise DeviceError(f"TensorRT could not parse {model_name}: {errors or 'no error reported'}")
        config = builder.create_builder_config()
        if s.workspace_mib is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(s.workspace_mib) << 20)
        for name in flag_names:
            config.set_flag(getattr(trt.BuilderFlag, name))

        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        given = as_shapes(input_shape)
        shapes = {}
        for i, t in enumerate(inputs):
            dims = tuple(t.shape)
            shapes[t.name] = given[i] if i < len(given) else dims
            if any(d < 0 for d in shapes[t.name]):
                raise DeviceError(f"{model_name}: input {t.name} has dynamic dims {dims}; only the shapes of the "
                                  f"first {len(given)} input(s) are known (input_shape)")
        profile = None
        if any(any(d < 0 for d in tuple(t.shape)) for t in inputs):
            profile = builder.create_optimization_profile()
            for t in inputs:
                shp = shapes[t.name]
                profile.set_shape(t.name, shp, shp, shp)
            config.add_optimization_profile(profile)

        calibrator = None
        if self.spec.precision == "int8":
            torch = self._torch_cuda()
            dtypes = {t.name: getattr(torch, torch_dtype_name(t.dtype)) for t in inputs}
            calibrator = _random_calibrator(trt, torch, shapes, dtypes, s.calibration_batches, s.device)
            config.int8_calibrator = calibrator  # deprecated in 10.1, still honoured through 10.x
            if profile is not None:
                config.set_calibration_profile(profile)

        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise DeviceError(f"TensorRT could not build an engine for {model_name} "
                              f"({self.spec.precision}); see TensorRT's log above")
        return bytes(plan)

    def _engine_bytes(self, model_path: str, input_shape: tuple[int, ...], gpu: str) -> tuple[bytes, str]:
        from hwnat._io import write_atomic

        trt = self._trt()
        s = self.settings()
        try:
            onnx_bytes = Path(model_path).read_bytes()
        except OSError as e:
            raise DeviceError(f"cannot read {model_path}: {e.strerror or e}") from None
        cache = engine_cache_path(model_path, onnx_bytes, precision=self.spec.precision,
                                  workspace_mib=s.workspace_mib, input_shape=input_shape,
                                  trt_version=trt.__version__, gpu=gpu,
                                  calibration_batches=s.calibration_batches)
        if s.engine_cache and cache.is_file():
            log.debug("engine cache hit: %s", cache)
            return cache.read_bytes(), "cached"
        plan = self.build_engine(onnx_bytes, input_shape, Path(model_path).name)
        if s.engine_cache:
            try:
                write_atomic(cache, plan)
            except Exception as e:  # a read-only model directory only costs a rebuild next time
                log.warning("could not cache the engine at %s: %s", cache, e)
        return plan, "built"

    # ---- run --------------------------------------------------------------------------------------

    def load(self, model_path: str, input_shape: tuple[int, ...]) -> Loaded:
        self.check()
        trt = self._trt()
        torch = self._torch_cuda()
        s = self.settings()
        dev = torch.device(s.device)
        if dev.index is None:  # "cuda" = the current device; set_device wants an index
            dev = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(dev)
        gpu = f"{torch.cuda.get_device_name(dev)} sm{''.join(map(str, torch.cuda.get_device_capability(dev)))}"
        plan, how = self._engine_bytes(model_path, tuple(input_shape), gpu)

        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise DeviceError(f"TensorRT could not deserialize the engine for {model_path}")
        context = engine.create_execution_context()
        if context is None:
            raise DeviceError(f"TensorRT could not create an execution context for {model_path} (GPU memory?)")

        gen = torch.Generator(device=dev).manual_seed(0)
        buffers = {}
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        given = as_shapes(input_shape)
        for i, name in enumerate(inputs):
            shape = given[i] if i < len(given) else tuple(engine.get_tensor_shape(name))
            if not context.set_input_shape(name, shape):
                raise DeviceError(f"TensorRT rejected input shape {list(shape)} for {name} of {model_path}")
            t = torch.empty(shape, dtype=getattr(torch, torch_dtype_name(engine.get_tensor_dtype(name))),
                            device=dev)
            _fill_random(torch, t, gen)
            buffers[name] = t
        for name in names:
            if name in buffers:
                continue
            shape = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise DeviceError(f"TensorRT output {name} of {model_path} has a data-dependent shape {shape}")
            buffers[name] = torch.empty(shape, dtype=getattr(torch, torch_dtype_name(engine.get_tensor_dtype(name))),
                                        device=dev)
        for name, t in buffers.items():
            context.set_tensor_address(name, t.data_ptr())

        stream = torch.cuda.Stream(device=dev)
        handle = stream.cuda_stream

        def run():
            if not context.execute_async_v3(handle):
                raise DeviceError(f"TensorRT execute_async_v3 failed for {model_path}")

        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)

        def time_once() -> float:
            start.record(stream)
            run()
            end.record(stream)
            end.synchronize()
            return float(start.elapsed_time(end))  # milliseconds

        held = [logger, runtime, engine, context, buffers]  # kept alive until close

        def close():
            stream.synchronize()
            held.clear()
            torch.cuda.empty_cache()

        return Loaded(run, sync=stream.synchronize, close=close, time_once=time_once,
                      info={"engine": how, "gpu": gpu, "io": {n: list(t.shape) for n, t in buffers.items()}})


def _random_calibrator(trt, torch, shapes: dict, dtypes: dict, n_batches: int, device: str):
    """An ``IInt8EntropyCalibrator2`` that hands TensorRT ``n_batches`` batches of random inputs (latency
    only: see the module docstring)."""

    class RandomCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.left = n_batches
            self.gen = torch.Generator(device=device).manual_seed(0)
            self.buffers = {n: torch.empty(shp, dtype=dtypes[n], device=device) for n, shp in shapes.items()}

        def get_batch_size(self):
            return 1  # explicit-batch networks: the batch is in the input shape

        def get_batch(self, names):
            if self.left <= 0:
                return None
            self.left -= 1
            for n in names:
                _fill_random(torch, self.buffers[n], self.gen)
            return [int(self.buffers[n].data_ptr()) for n in names]

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache):
            return None

    return RandomCalibrator()
