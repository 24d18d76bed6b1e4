"""ONNX Runtime (https://onnxruntime.ai) runtime: CPU, CUDA and TensorRT execution providers."""

from __future__ import annotations

import numpy as np

from hwnat._shapes import as_shapes
from hwnat.devices.runtimes._base import Loaded, Runtime, register_runtime
from hwnat.errors import DeviceError


@register_runtime("onnxruntime")
class OnnxRuntime(Runtime):
    model_format = "onnx"

    def _ort(self):
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - a dependency of hwnat
            raise DeviceError(f"onnxruntime is not installed: {e}") from None
        return ort

    def version(self) -> str:
        return self._ort().__version__

    def providers(self) -> list[str]:
        p = self.spec.provider or "CPUExecutionProvider"
        return [p] if p == "CPUExecutionProvider" else [p, "CPUExecutionProvider"]

    def check(self) -> None:
        ort = self._ort()
        missing = [p for p in self.providers() if p not in ort.get_available_providers()]
        if missing:
            raise DeviceError(f"ONNX Runtime {ort.__version__} has no {', '.join(missing)}; available: "
                              f"{', '.join(ort.get_available_providers())}")

    def load(self, model_path: str, input_shape: tuple[int, ...]) -> Loaded:
        ort = self._ort()
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(self.spec.threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.check()
        wanted = self.providers()
        try:
            sess = ort.InferenceSession(str(model_path), so, providers=wanted)
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise DeviceError(f"ONNX Runtime could not load {model_path}: {e}") from None
        shapes = as_shapes(input_shape)
        inputs = sess.get_inputs()
        if len(inputs) != len(shapes):
            raise DeviceError(f"{model_path} takes {len(inputs)} input(s), but {len(shapes)} shape(s) were given")
        rng = np.random.default_rng(0)
        feed = {i.name: rng.standard_normal(s).astype(np.float32) for i, s in zip(inputs, shapes, strict=True)}
        out_names = [o.name for o in sess.get_outputs()]

        def run():
            sess.run(out_names, feed)

        return Loaded(run, info={"providers": sess.get_providers()})
