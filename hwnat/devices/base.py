"""The ``Device`` interface: what every opened device (local or remote) offers the measuring paths."""

from __future__ import annotations

from abc import ABC, abstractmethod

from hwnat.devices.spec import DeviceSpec
from hwnat.measure.protocol import Protocol
from hwnat.measure.stats import Measurement


class Device(ABC):
    """An opened device. Use as a context manager so remote work directories are cleaned up."""

    def __init__(self, spec: DeviceSpec):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    @abstractmethod
    def model_format(self) -> str:
        """File format this device's runtime loads ("onnx", "tflite", ...)."""

    @abstractmethod
    def measure(self, model_path: str, input_shape: tuple[int, ...],
                protocol: Protocol | None = None) -> Measurement:
        """Time one model file with the protocol (default: the device's own)."""

    @abstractmethod
    def fingerprint(self) -> dict:
        """Environment fingerprint of the device and its runtime (see ``hwnat.measure.fingerprint``)."""

    def close(self) -> None:  # noqa: B027  (optional hook; local devices hold nothing)
        """Release connections and remote files."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
