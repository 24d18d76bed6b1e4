"""PyTorch runtime: a TorchScript file on this machine's CPU or a CUDA GPU.

Loads what ``hwnat.export.torchscript`` writes (``torch.jit.load``: no user Python objects unpickled).
On the CPU one run is timed by the host clock like every other runtime, with ``torch.set_num_threads``.
On a GPU each run is timed with CUDA events recorded on the stream around the launch (the GPU's own
clock, without the host's launch-to-sync slack), either launching the TorchScript module or replaying a
CUDA graph captured from it (``options: {cuda_graphs: true}``), which removes per-kernel launch overhead.

Device file fields used: ``runtime.threads`` (CPU intra-op threads; 0 = torch's default),
``runtime.precision`` (fp32, or fp16 via ``.half()``; int8 is refused), ``runtime.provider`` or
``runtime.options.device`` (``cpu``, ``cuda`` or ``cuda:N``), ``runtime.options.cuda_graphs``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from hwnat._shapes import as_shapes
from hwnat.devices.runtimes._base import Loaded, Runtime, register_runtime
from hwnat.errors import BadInputError, DeviceError

#: runtime.options keys this runtime reads (``cuda_graph`` is accepted as a spelling of ``cuda_graphs``)
OPTIONS = ("device", "cuda_graphs", "cuda_graph")

_PROVIDER_ALIASES = {"cpuexecutionprovider": "cpu", "cudaexecutionprovider": "cuda"}


@dataclass(frozen=True)
class TorchSettings:
    """The torch runtime's reading of a ``RuntimeSpec``."""

    #: torch device string: "cpu", "cuda" or "cuda:N"
    device: str
    #: replay a captured CUDA graph instead of launching the module (CUDA only)
    cuda_graphs: bool

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")


def torch_settings(spec) -> TorchSettings:
    """Validate ``spec`` (a ``RuntimeSpec`` of kind torch) into ``TorchSettings``.

    Raises:
        BadInputError: an unknown option, a device that is not cpu/cuda/cuda:N, CUDA graphs on the CPU,
            or int8 precision (the torch runtime runs float models).
    """
    unknown = sorted(set(spec.options) - set(OPTIONS))
    if unknown:
        raise BadInputError(f"runtime.options: unknown option(s) {', '.join(unknown)} for the torch runtime; "
                            f"expected: device, cuda_graphs")
    raw = spec.options.get("device", spec.provider or "cpu")
    dev = _PROVIDER_ALIASES.get(str(raw).lower(), str(raw).lower())
    if not (dev in ("cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise BadInputError(f"runtime device {raw!r}: expected cpu, cuda or cuda:N for the torch runtime")
    graphs = spec.options.get("cuda_graphs", spec.options.get("cuda_graph", False))
    if not isinstance(graphs, bool):
        raise BadInputError(f"runtime.options.cuda_graphs: expected true or false (got {graphs!r})")
    if graphs and dev == "cpu":
        raise BadInputError("runtime.options.cuda_graphs needs a CUDA device (set runtime.options.device: cuda)")
    if spec.precision == "int8":
        raise BadInputError("runtime.precision int8: the torch runtime runs fp32 or fp16 models; time int8 "
                            "with tensorrt, onnxruntime or litert")
    return TorchSettings(device=dev, cuda_graphs=graphs)


@register_runtime("torch")
class TorchRuntime(Runtime):
    model_format = "torch"

    def _torch(self):
        try:
            import torch
        except ImportError as e:  # pragma: no cover - a dependency of hwnat
            raise DeviceError(f"torch is not installed: {e}") from None
        return torch

    def settings(self) -> TorchSettings:
        return torch_settings(self.spec)

    def version(self) -> str:
        return self._torch().__version__

    def check(self) -> None:
        torch = self._torch()
        s = self.settings()
        if not s.is_cuda:
            return
        if not torch.cuda.is_available():
            why = ("it is a CPU-only build" if torch.version.cuda is None
                   else f"it was built for CUDA {torch.version.cuda} but finds no usable GPU or driver")
            raise DeviceError(f"runtime torch on {s.device}: torch {torch.__version__} cannot use CUDA ({why}); "
                              "install a CUDA build of torch on a machine with an NVIDIA GPU, or set "
                              "runtime.options.device: cpu")
        idx = int(s.device[5:]) if ":" in s.device else 0
        if idx >= torch.cuda.device_count():
            raise DeviceError(f"runtime torch on {s.device}: only {torch.cuda.device_count()} CUDA device(s) "
                              "are visible")

    def info(self) -> dict:
        d = super().info()
        s = self.settings()
        d.update(device=s.device, cuda_graphs=s.cuda_graphs,
                 timer="cuda_events" if s.is_cuda else "perf_counter")
        if s.is_cuda:
            torch = self._torch()
            if torch.cuda.is_available():
                d["gpu"] = torch.cuda.get_device_name(torch.device(s.device))
                d["cuda_version"] = torch.version.cuda
        return d

    def load(self, model_path: str, input_shape: tuple[int, ...]) -> Loaded:
        torch = self._torch()
        self.check()
        s = self.settings()
        if self.spec.threads > 0:
            torch.set_num_threads(int(self.spec.threads))
        dev = torch.device(s.device)
        if s.is_cuda:
            if dev.index is None:  # "cuda" = the current device; set_device wants an index
                dev = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(dev)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = torch.jit.load(str(model_path), map_location=dev)
        except Exception as e:  # torch.jit raises its own untyped errors
            raise DeviceError(f"torch could not load {model_path} (expected a TorchScript file): {e}") from None
        module.eval()
        dtype = torch.float16 if self.spec.precision == "fp16" else torch.float32
        if dtype is torch.float16:
            module = module.half()
        rng = np.random.default_rng(0)
        xs = tuple(torch.from_numpy(rng.standard_normal(s).astype(np.float32)).to(device=dev, dtype=dtype)
                   for s in as_shapes(input_shape))
        info = {"device": str(dev), "dtype": str(dtype).replace("torch.", "")}

        def call():
            with torch.no_grad():
                module(*xs)

        if not s.is_cuda:
            return Loaded(call, info=info)
        return _cuda_loaded(torch, module, xs, call, s, info)


def _cuda_loaded(torch, module, xs, call, s: TorchSettings, info: dict) -> Loaded:
    """A ``Loaded`` for a module on a CUDA device: launch (or graph replay) timed with CUDA events.
    ``xs``: the input tensor, or a tuple of them for a module with several inputs."""
    xs = xs if isinstance(xs, tuple) else (xs,)
    run = call
    if s.cuda_graphs:
        # capture needs a few eager iterations first, on a side stream, so that lazy initialisation
        # (cuDNN algorithm choice, allocator pools) happens outside the graph
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                call()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.no_grad(), torch.cuda.graph(graph):
                module(*xs)
        except Exception as e:  # capture fails on ops that sync with the host
            raise DeviceError(f"CUDA graph capture failed for this model: {e}; set "
                              "runtime.options.cuda_graphs: false") from None
        run = graph.replay
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)

    def time_once() -> float:
        start.record()
        run()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))  # milliseconds

    def close():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()

    info = {**info, "cuda_graphs": s.cuda_graphs, "timer": "cuda_events"}
    return Loaded(run, sync=torch.cuda.synchronize, close=close, info=info, time_once=time_once)
