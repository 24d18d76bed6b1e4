"""In-process runtimes, registered by name."""

from hwnat.devices.runtimes import onnxruntime  # noqa: F401  (registers)
from hwnat.devices.runtimes._base import Loaded, Runtime, get_runtime, list_runtimes, register_runtime

__all__ = ["Loaded", "Runtime", "get_runtime", "list_runtimes", "register_runtime"]
