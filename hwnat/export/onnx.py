"""Export a torch module (a subnet or one block) to ONNX and check it numerically in ONNX Runtime.

Exporter choice: torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``), opset 17.
It exports a block in ~0.1 s where the dynamo exporter takes ~3 s, which matters when a profile exports
thousands of blocks; in eval mode it folds BatchNorm into the preceding convolution, as deployment
toolchains do. The dynamo exporter (opset 18) is used as a fallback when the TorchScript one fails and
``onnxscript`` is installed (``pip install hwnat[dynamo]``).
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from hwnat._io import write_atomic
from hwnat._shapes import as_shapes
from hwnat.errors import HwnatError

log = logging.getLogger(__name__)

OPSET = 17


class ExportError(HwnatError):
    """The exporter failed, or the exported model disagrees with torch."""

    exit_code = 3


def export_onnx(module, input_shape: tuple[int, ...], path: str | os.PathLike, opset: int = OPSET) -> Path:
    """Export ``module`` (put in eval mode) for float32 inputs of ``input_shape`` to ``path``.

    ``input_shape`` is one shape, or a tuple of shapes for a module with several inputs (named ``input``,
    ``input1``, ...). A module returning a list or tuple of tensors gets one graph output per tensor.
    The file is written atomically (temp file + rename). Returns the path.
    """
    import torch

    path = Path(path)
    module = module.eval()
    xs = tuple(torch.zeros(s, dtype=torch.float32) for s in as_shapes(input_shape))
    names = ["input"] + [f"input{i}" for i in range(1, len(xs))]
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, xs, buf, dynamo=False, opset_version=opset,
                              input_names=names, output_names=["output"], do_constant_folding=True)
    except Exception as e:  # the exporter raises many untyped errors
        log.info("TorchScript ONNX export failed (%s); trying the dynamo exporter", e)
        buf = io.BytesIO()
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                prog = torch.onnx.export(module, xs, dynamo=True, opset_version=max(opset, 18))
                prog.save(buf)
        except Exception as e2:
            raise ExportError(f"ONNX export failed: {e}; dynamo exporter: {e2}") from None
    write_atomic(path, buf.getvalue())
    return path


def reference_outputs(module, input_shape, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Random float32 inputs of ``input_shape`` (one shape or several) and the module's outputs on them
    (eval mode, no grad), flattened to a list of arrays: what a model file's check compares against."""
    import torch

    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(s).astype(np.float32) for s in as_shapes(input_shape)]
    with torch.no_grad():
        out = module.eval()(*(torch.from_numpy(x) for x in xs))
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    return xs, [o.numpy() for o in outs]


def compare_outputs(path, got: list[np.ndarray], ref: list[np.ndarray], what: str, rtol: float,
                    atol: float) -> float:
    """Max absolute difference of a runtime's outputs from torch's; ``ExportError`` beyond tolerance."""
    if len(got) != len(ref):
        raise ExportError(f"{path}: {what} gives {len(got)} output(s), torch {len(ref)}")
    diff = 0.0
    for g, r in zip(got, ref, strict=True):
        g = np.asarray(g, dtype=np.float32)
        if g.shape != r.shape:
            raise ExportError(f"{path}: output shape {g.shape} differs from torch's {r.shape}")
        d = float(np.max(np.abs(g - r))) if r.size else 0.0
        diff = max(diff, d)
        if not np.allclose(g, r, rtol=rtol, atol=atol):
            raise ExportError(f"{path}: {what} output differs from torch by up to {d:.3g}")
    return diff


def check_onnx(module, path: str | os.PathLike, input_shape: tuple[int, ...], rtol: float = 1e-3,
               atol: float = 1e-4, seed: int = 0) -> float:
    """Run the ONNX file in ONNX Runtime and torch on the same random inputs (one shape or several);
    raise ``ExportError`` when any output differs beyond tolerance. Returns the max absolute difference."""
    import onnxruntime as ort

    xs, ref = reference_outputs(module, input_shape, seed)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inputs = sess.get_inputs()
    if len(inputs) != len(xs):
        raise ExportError(f"{path}: the model takes {len(inputs)} input(s), torch {len(xs)}")
    got = sess.run(None, {i.name: x for i, x in zip(inputs, xs, strict=True)})
    return compare_outputs(path, got, ref, "ONNX Runtime", rtol, atol)


def onnx_macs(path: str | os.PathLike) -> int:
    """Multiply-accumulates of the Conv and Gemm/MatMul nodes of an ONNX file with static shapes (batch
    as exported): what the graph a runtime loads really computes.

    Example:
        >>> onnx_macs("pruned.onnx")  # doctest: +SKIP
        5836800
    """
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    dims = {}
    for vi in [*g.input, *g.value_info, *g.output]:
        dims[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in g.initializer:
        dims[init.name] = list(init.dims)
    total = 0
    for node in g.node:
        if node.op_type == "Conv":
            w, out = dims.get(node.input[1]), dims.get(node.output[0])
            if not w or not out:
                raise ExportError(f"{path}: no static shape for Conv {node.name}")
            total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = dims.get(node.input[0]), dims.get(node.output[0])
            if not a or not out:
                raise ExportError(f"{path}: no static shape for {node.op_type} {node.name}")
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            total += int(np.prod(out)) * int(a[-2] if trans_a else a[-1])
    return total
