"""Export a torch module to a TFLite flatbuffer (format ``tflite``) with litert-torch, and check it in LiteRT.

litert-torch (formerly ai-edge-torch; ``pip install litert-torch`` or ``pip install 'hwnat[tflite-export]'``)
converts through ``torch.export`` and the LiteRT converter: ``litert_torch.convert(module, (sample,))``
returns a model whose ``model_content()`` is the flatbuffer. The converted model keeps the torch
interface: the input stays NCHW float32 (layout transposes are inside the graph), so the ``litert``
runtime binds the same ``input_shape`` as every other runtime. It is an optional extra because it is large
(it brings jax, transformers and the LiteRT converter, ~900 MB) and pins ``typing-extensions``; litert-torch
0.10 is the first release that accepts torch 2.13.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from hwnat._io import write_atomic
from hwnat._shapes import as_shapes
from hwnat.errors import DeviceError
from hwnat.export.onnx import ExportError

SUFFIX = ".tflite"
INSTALL_HINT = "pip install litert-torch  (or: pip install 'hwnat[tflite-export]')"


def _litert_torch():
    try:
        import litert_torch
    except ImportError as e:
        raise DeviceError(f"TFLite export needs litert-torch, which is not installed ({e}); "
                          f"install it with: {INSTALL_HINT}") from None
    return litert_torch


@contextlib.contextmanager
def _quiet_progress():
    """litert-torch prints a progress tree on stdout (where hwnat writes results): turn it off unless the
    user set ``LITERT_TORCH_SHOW_PROGRESS``, and send anything else it prints to stderr."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    had = key in os.environ
    if not had:
        os.environ[key] = "n"
    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if not had:
            os.environ.pop(key, None)


def export_tflite(module, input_shape: tuple[int, ...], path: str | os.PathLike) -> Path:
    """Convert ``module`` (put in eval mode) for float32 inputs of ``input_shape`` (one shape or several) to a
    ``.tflite`` file.

    The file is written atomically. Returns the path.

    Raises:
        DeviceError: litert-torch is not installed (the message has the pip command).
        ExportError: the conversion failed.

    Example:
        >>> export_tflite(torch.nn.Conv2d(3, 8, 3), (1, 3, 32, 32), "conv.tflite")  # doctest: +SKIP
    """
    litert_torch = _litert_torch()
    import torch

    path = Path(path)
    xs = tuple(torch.zeros(s, dtype=torch.float32) for s in as_shapes(input_shape))
    try:
        with _quiet_progress(), torch.no_grad():
            data = litert_torch.convert(module.eval(), xs).model_content()
    except Exception as e:  # the converter raises many untyped errors
        raise ExportError(f"TFLite conversion (litert-torch) failed: {e}") from None
    write_atomic(path, bytes(data))
    return path


def check_tflite(module, path: str | os.PathLike, input_shape: tuple[int, ...], rtol: float = 1e-3,
                 atol: float = 1e-4, seed: int = 0) -> float:
    """Run the ``.tflite`` file in the LiteRT interpreter and the module on the same random input; raise
    ``ExportError`` when they differ beyond tolerance. Returns the max absolute difference.

    Raises:
        DeviceError: ai-edge-litert is not installed.
    """
    import torch

    from hwnat.devices.runtimes.litert import interpreter_class

    Interpreter = interpreter_class()
    x = np.random.default_rng(seed).standard_normal(input_shape).astype(np.float32)
    with torch.no_grad():
        ref = module.eval()(torch.from_numpy(x)).numpy()
    try:
        interp = Interpreter(model_path=str(path), num_threads=1)
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        interp.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interp.invoke()
        got = np.asarray(interp.get_tensor(out["index"]), dtype=np.float32)
    except (ValueError, RuntimeError) as e:
        raise ExportError(f"{path}: LiteRT could not run the model: {e}") from None
    if got.shape != ref.shape:
        raise ExportError(f"{path}: output shape {got.shape} differs from torch's {ref.shape}")
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    if not np.allclose(got, ref, rtol=rtol, atol=atol):
        raise ExportError(f"{path}: LiteRT output differs from torch by up to {diff:.3g}")
    return diff
