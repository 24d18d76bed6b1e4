"""Runtime interface and registry: a runtime loads a model file and returns a run-once callable."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from hwnat._registry import Registry
from hwnat.devices.spec import RuntimeSpec

RUNTIMES: Registry[type[Runtime]] = Registry("in-process runtime", attr="name")


def register_runtime(name: str):
    """Class decorator registering a ``Runtime`` subclass under ``name``."""
    return RUNTIMES.register(name)


def list_runtimes() -> list[str]:
    return RUNTIMES.names()


def get_runtime(spec: RuntimeSpec) -> Runtime:
    """Instantiate the runtime a spec names (``DeviceError`` from the runtime when it is missing)."""
    return RUNTIMES.get(spec.kind)(spec)


class Loaded:
    """A loaded model: ``run()`` does one inference on bound random inputs; ``sync`` (or None) waits for
    asynchronous work (GPU); ``time_once`` (or None) does one inference and returns its duration in
    milliseconds as the device measured it (CUDA events), used instead of the host clock when given;
    ``close()`` frees it."""

    def __init__(self, run: Callable[[], object], sync: Callable[[], object] | None = None,
                 close: Callable[[], object] | None = None, info: dict | None = None,
                 time_once: Callable[[], float] | None = None):
        self.run = run
        self.sync = sync
        self.time_once = time_once
        self._close = close
        self.info = info or {}

    def close(self) -> None:
        if self._close is not None:
            self._close()


class Runtime(ABC):
    """One inference runtime (in-process)."""

    name: str = ""
    #: file format the runtime loads: "onnx", "tflite", "engine", "torch"
    model_format: str = "onnx"

    def __init__(self, spec: RuntimeSpec):
        self.spec = spec

    @abstractmethod
    def version(self) -> str:
        """Version string; raise ``DeviceError`` when the runtime is not installed."""

    @abstractmethod
    def load(self, model_path: str, input_shape: tuple[int, ...]) -> Loaded:
        """Load a model and bind an input of ``input_shape`` (float32 random)."""

    def check(self) -> None:
        """Raise ``DeviceError`` now when the runtime cannot work (missing package or provider), so a
        long job fails before it starts rather than at its first model."""
        self.version()

    def info(self) -> dict:
        """What the fingerprint records about this runtime."""
        return {"runtime": self.name, "runtime_version": self.version(), "threads": self.spec.threads,
                "precision": self.spec.precision, "provider": self.spec.provider}
