"""Transports: how commands and files reach a device (``local``, ``ssh``, ``adb``), one file each.

This package is the front door: importing it registers the built-in transports (each module imports only
``_base``, so the registry has no import cycle).
"""

from hwnat.devices.transports import adb, local, ssh  # noqa: F401  (registers the built-in kinds)
from hwnat.devices.transports._base import TRANSPORTS, Result, Transport, quote_argv, register_transport


def list_transports() -> list[str]:
    """Registered transport kinds, sorted."""
    return TRANSPORTS.names()


def get_transport(spec) -> Transport:
    """Open the transport a spec describes (the ``transport`` part of a device file, or a whole
    ``DeviceSpec``). Nothing is contacted until the first command.

    Example:
        >>> from hwnat.devices.spec import LocalTransport
        >>> t = get_transport(LocalTransport())
        >>> t.run(["echo", "a b"]).stdout
        'a b\\n'
        >>> t.close()
    """
    tspec = getattr(spec, "transport", spec)
    return TRANSPORTS.get(getattr(tspec, "kind", None))(tspec)


__all__ = ["Result", "Transport", "get_transport", "list_transports", "quote_argv", "register_transport"]
