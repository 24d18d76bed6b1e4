"""The error hierarchy: the library raises these, the CLI maps them to messages and exit codes.

Exit codes (DESIGN.md): 1 a check failed, 2 bad input or usage, 3 a device or runtime failed.
"""

from __future__ import annotations


class HwnatError(Exception):
    """Base class of every error hwnat raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code = 2


class BadInputError(HwnatError):
    """Bad input or usage: the message names the file, field or value and what was expected."""

    exit_code = 2


class DeviceError(HwnatError):
    """A device, transport or runtime failed (unreachable host, runtime missing, crash)."""

    exit_code = 3


class CheckFailedError(HwnatError):
    """A check the user asked for failed (a regression found, a budget not met)."""

    exit_code = 1
