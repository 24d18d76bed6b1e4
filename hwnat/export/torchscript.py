"""Export a torch module to a TorchScript file (format ``torch``) for the ``torch`` runtime, and check it.

Why TorchScript: the file holds the traced graph and the weights, and ``torch.jit.load`` rebuilds it
without unpickling any user-defined Python object, so a model file is data, not code (DESIGN.md: nothing
is loaded with pickle). It runs in TorchScript's C++ interpreter, which is how PyTorch models were
deployed without Python overhead. Caveat: torch 2.13 marks ``torch.jit.trace/save/load`` deprecated in
favour of ``torch.export``; the deprecation warnings are silenced here and in the runtime. The
``torch.export`` route (``.pt2``) was measured and rejected for now: its ``ExportedProgram.module()`` is
an FX graph run op by op from Python, ~10x slower than eager on a small block on this machine.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from hwnat._io import write_atomic
from hwnat._shapes import as_shapes
from hwnat.export.onnx import ExportError, compare_outputs, reference_outputs

SUFFIX = ".pt"


def export_torchscript(module, input_shape: tuple[int, ...], path: str | os.PathLike) -> Path:
    """Trace ``module`` (put in eval mode) on float32 inputs of ``input_shape`` (one shape or several) and save
    it to ``path``.

    The file is written atomically. Returns the path.

    Example:
        >>> export_torchscript(torch.nn.Conv2d(3, 8, 3), (1, 3, 32, 32), "conv.pt")  # doctest: +SKIP
    """
    import torch

    path = Path(path)
    module = module.eval()
    xs = tuple(torch.zeros(s, dtype=torch.float32) for s in as_shapes(input_shape))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            # check_trace re-runs the module and compares: a 2-3x cost per block, and blocks are traced
            # by the thousand while profiling; export checks numerics separately (check_torchscript)
            traced = torch.jit.trace(module, xs, check_trace=False)
            torch.jit.save(traced, buf)
    except Exception as e:  # tracing raises many untyped errors
        raise ExportError(f"TorchScript export failed: {e}") from None
    write_atomic(path, buf.getvalue())
    return path


def load_torchscript(path: str | os.PathLike, map_location="cpu"):
    """``torch.jit.load`` with its deprecation warning silenced (raises what torch raises)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location=map_location)


def check_torchscript(module, path: str | os.PathLike, input_shape: tuple[int, ...], rtol: float = 1e-4,
                      atol: float = 1e-5, seed: int = 0) -> float:
    """Run the TorchScript file and the module on the same random inputs (one shape or several); raise
    ``ExportError`` when they differ beyond tolerance. Returns the max absolute difference."""
    import torch

    xs, ref = reference_outputs(module, input_shape, seed)
    try:
        loaded = load_torchscript(path).eval()
    except Exception as e:
        raise ExportError(f"{path}: torch.jit.load failed: {e}") from None
    with torch.no_grad():
        out = loaded(*(torch.from_numpy(x) for x in xs))
    got = [o.numpy() for o in (out if isinstance(out, (list, tuple)) else [out])]
    return compare_outputs(path, got, ref, "TorchScript", rtol, atol)
