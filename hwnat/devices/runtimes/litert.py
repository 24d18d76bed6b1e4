"""LiteRT (formerly TensorFlow Lite) runtime: the ``ai-edge-litert`` interpreter on this machine's CPU.

Runs ``.tflite`` files (``hwnat.export.tflite`` writes them from torch with litert-torch). One run is one
``Interpreter.invoke()`` on a bound random input, timed by the host clock.

Device file fields used: ``runtime.threads`` (the interpreter's ``num_threads``; 0 = LiteRT's default),
``runtime.options.xnnpack`` (default true: LiteRT applies its default XNNPACK delegate; false builds the
interpreter with ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``, i.e. LiteRT's own optimized
kernels without XNNPACK). ``runtime.precision`` is recorded, not applied: a TFLite model's precision is
fixed when the file is made (fp32, fp16 weights, int8 quantized); the input is bound in whatever type
the model declares (float32, float16, or random integers for an integer input).
"""

from __future__ import annotations

import numpy as np

from hwnat._shapes import as_shapes
from hwnat.devices.runtimes._base import Loaded, Runtime, register_runtime
from hwnat.errors import BadInputError, DeviceError

INSTALL_HINT = "pip install ai-edge-litert  (or: pip install 'hwnat[tflite]')"

#: runtime.options keys this runtime reads
OPTIONS = ("xnnpack",)


def _litert():
    try:
        import ai_edge_litert
        from ai_edge_litert import interpreter
    except ImportError as e:
        raise DeviceError(f"the litert runtime needs ai-edge-litert, which is not installed ({e}); install it "
                          f"with: {INSTALL_HINT}") from None
    return ai_edge_litert, interpreter


def interpreter_class():
    """``ai_edge_litert.interpreter.Interpreter`` (``DeviceError`` with the pip command when missing)."""
    return _litert()[1].Interpreter


def use_xnnpack(spec) -> bool:
    """``runtime.options.xnnpack`` of ``spec`` (default true); ``BadInputError`` on unknown options."""
    unknown = sorted(set(spec.options) - set(OPTIONS))
    if unknown:
        raise BadInputError(f"runtime.options: unknown option(s) {', '.join(unknown)} for the litert runtime; "
                            "expected: xnnpack")
    v = spec.options.get("xnnpack", True)
    if not isinstance(v, bool):
        raise BadInputError(f"runtime.options.xnnpack: expected true or false (got {v!r})")
    return v


def random_input(shape, dtype, seed: int = 0) -> np.ndarray:
    """A random input of ``shape`` in ``dtype``: standard normal for floats, the full range for integers."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(tuple(shape)).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=tuple(shape)).astype(np.bool_)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=tuple(shape), endpoint=True, dtype=dtype)


@register_runtime("litert")
class LiteRtRuntime(Runtime):
    model_format = "tflite"

    def version(self) -> str:
        mod, _ = _litert()
        return str(getattr(mod, "__version__", "unknown"))

    def check(self) -> None:
        _litert()
        use_xnnpack(self.spec)

    def info(self) -> dict:
        return {**super().info(), "xnnpack": use_xnnpack(self.spec)}

    def load(self, model_path: str, input_shape: tuple[int, ...]) -> Loaded:
        _, lite = _litert()
        xnnpack = use_xnnpack(self.spec)
        resolver = lite.OpResolverType.AUTO if xnnpack else lite.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        threads = int(self.spec.threads)
        shapes = as_shapes(input_shape)
        try:
            interp = lite.Interpreter(model_path=str(model_path), num_threads=threads if threads > 0 else None,
                                      experimental_op_resolver_type=resolver)
            details = interp.get_input_details()
            if len(details) != len(shapes):
                raise ValueError(f"the model takes {len(details)} input(s), {len(shapes)} shape(s) were given")
            for inp, shape in zip(details, shapes, strict=True):
                if list(inp["shape"]) != list(shape):
                    interp.resize_tensor_input(inp["index"], list(shape))
            interp.allocate_tensors()
            details = interp.get_input_details()
            for n, (inp, shape) in enumerate(zip(details, shapes, strict=True)):
                interp.set_tensor(inp["index"], random_input(shape, inp["dtype"], seed=n))
            inp = details[0]
        except (ValueError, RuntimeError) as e:  # what the interpreter raises for a bad file or shape
            raise DeviceError(f"LiteRT could not load {model_path} for input {list(input_shape)}: {e}") from None

        return Loaded(interp.invoke, info={"xnnpack": xnnpack, "input_dtype": np.dtype(inp["dtype"]).name})
