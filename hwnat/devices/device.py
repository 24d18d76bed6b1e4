"""A device = transport + runtime + conditions, opened from a ``DeviceSpec``.

``open_device(spec).measure(model_file, input_shape)`` is the one call every measuring path uses (LUT
profiling, end-to-end measurement, CI bench). Local devices time in-process; ssh/adb devices run the
remote agent or a native harness (``hwnat.devices.remote``).
"""

from __future__ import annotations

from hwnat.devices.base import Device
from hwnat.devices.spec import DeviceSpec, load_device
from hwnat.measure.stats import Measurement


class LocalDevice(Device):
    """This machine; the runtime runs in-process."""

    def __init__(self, spec: DeviceSpec):
        super().__init__(spec)
        from hwnat.devices.runtimes import get_runtime

        self.runtime = get_runtime(spec.runtime)
        self.runtime.check()
        self._fp: dict | None = None

    @property
    def model_format(self) -> str:
        return self.runtime.model_format

    def measure(self, model_path, input_shape, protocol=None) -> Measurement:
        from hwnat.devices.thermal import guard
        from hwnat.measure.runner import measure_callable

        protocol = protocol or self.spec.measure
        loaded = self.runtime.load(str(model_path), tuple(input_shape))
        try:
            with guard(self.spec.thermal) as g:
                m = measure_callable(loaded.run, protocol, loaded.sync, time_once=loaded.time_once)
        finally:
            loaded.close()
        if g.record:
            m.extra.update(g.record)
        return m

    def fingerprint(self) -> dict:
        if self._fp is None:
            from hwnat.measure.fingerprint import local_fingerprint

            self._fp = local_fingerprint(self.runtime.info(), device=self.spec.name, batch=1)
        return self._fp


def open_device(device: str | DeviceSpec) -> Device:
    """Open a device by name, YAML path or spec."""
    spec = load_device(device) if isinstance(device, str) else device
    if spec.transport.kind == "local":
        return LocalDevice(spec)
    from hwnat.devices.remote import RemoteDevice  # lazy: remote pulls in transports and the agent

    return RemoteDevice(spec)
