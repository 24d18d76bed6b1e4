"""In-process runtimes, registered by name: onnxruntime, torch, tensorrt, litert.

Importing this package imports no inference library: each runtime imports its backend (torch, tensorrt,
ai_edge_litert) inside its methods, and ``check()`` raises ``DeviceError`` naming what is missing.
"""

from hwnat.devices.runtimes import litert, onnxruntime, tensorrt, torch  # noqa: F401  (register)
from hwnat.devices.runtimes._base import Loaded, Runtime, get_runtime, list_runtimes, register_runtime

__all__ = ["Loaded", "Runtime", "get_runtime", "list_runtimes", "register_runtime"]
