"""Exporters: a torch module (subnet or block) -> the model file a device's runtime loads.

One front door: ``export_for_format(fmt, module, input_shape, path_stem)``; ``get_exporter(fmt)`` gives the
exporter (its file suffix, ``export`` and numerical ``check`` against torch). Formats: ``onnx`` (ONNX
Runtime, TensorRT), ``torch`` (TorchScript, the ``torch`` runtime), ``tflite`` (LiteRT, via litert-torch).
Nothing heavy is imported until an exporter is used.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from hwnat._registry import Registry
from hwnat.export.onnx import ExportError, check_onnx, export_onnx, onnx_macs


@dataclass(frozen=True)
class Exporter:
    """One model-file format: where its code lives and how it is named."""

    #: format name, as runtimes give it in ``Runtime.model_format``
    name: str
    #: file suffix, with the dot
    suffix: str
    #: ``module:function`` of ``export(module, input_shape, path) -> Path``
    export_ref: str
    #: ``module:function`` of ``check(module, path, input_shape) -> max abs diff`` (raises ExportError)
    check_ref: str
    #: what the check runs the file in (shown by ``hwnat export``)
    checked_by: str

    def _resolve(self, ref: str):
        mod, fn = ref.split(":")
        return getattr(importlib.import_module(mod), fn)

    def export(self, module, input_shape: tuple[int, ...], path: str | os.PathLike) -> Path:
        return Path(self._resolve(self.export_ref)(module, tuple(input_shape), path))

    def check(self, module, path: str | os.PathLike, input_shape: tuple[int, ...]) -> float:
        return float(self._resolve(self.check_ref)(module, path, tuple(input_shape)))


EXPORTERS: Registry[Exporter] = Registry("model format")


def register_exporter(exporter: Exporter) -> Exporter:
    return EXPORTERS.register(exporter.name, exporter)


register_exporter(Exporter("onnx", ".onnx", "hwnat.export.onnx:export_onnx", "hwnat.export.onnx:check_onnx",
                           "ONNX Runtime"))
register_exporter(Exporter("torch", ".pt", "hwnat.export.torchscript:export_torchscript",
                           "hwnat.export.torchscript:check_torchscript", "torch.jit"))
register_exporter(Exporter("tflite", ".tflite", "hwnat.export.tflite:export_tflite",
                           "hwnat.export.tflite:check_tflite", "LiteRT"))


def list_formats() -> list[str]:
    """Names of the registered model-file formats."""
    return EXPORTERS.names()


def get_exporter(fmt: str) -> Exporter:
    """The exporter of format ``fmt``; ``BadInputError`` listing the valid ones when unknown."""
    return EXPORTERS.get(fmt)


def export_for_format(fmt: str, module, input_shape: tuple[int, ...], path_stem: str | os.PathLike) -> Path:
    """Export ``module`` for a float32 input of ``input_shape`` to ``path_stem`` + the format's suffix.

    Returns the path written. Raises ``BadInputError`` for an unknown format, ``DeviceError`` when the
    format's optional package is missing (with the pip command), ``ExportError`` when export fails.

    Example:
        >>> export_for_format("torch", block, (1, 16, 32, 32), tmp / "block")  # doctest: +SKIP
        PosixPath('.../block.pt')
    """
    ex = get_exporter(fmt)
    return ex.export(module, input_shape, Path(f"{os.fspath(path_stem)}{ex.suffix}"))


__all__ = ["ExportError", "Exporter", "check_onnx", "export_for_format", "export_onnx", "get_exporter",
           "list_formats", "onnx_macs", "register_exporter"]
