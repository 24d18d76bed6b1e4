"""Transports: how commands and files reach a device (``local``, ``ssh``, ``adb``), one file each."""

from hwnat.devices.transports._base import (
    Result,
    Transport,
    get_transport,
    list_transports,
    quote_argv,
    register_transport,
)

__all__ = ["Result", "Transport", "get_transport", "list_transports", "quote_argv", "register_transport"]
