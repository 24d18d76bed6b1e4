"""Exporters: architecture or block -> a model file a device runs (ONNX here; TFLite, TensorRT later)."""

from hwnat.export.onnx import ExportError, check_onnx, export_onnx, write_atomic

__all__ = ["ExportError", "check_onnx", "export_onnx", "write_atomic"]
