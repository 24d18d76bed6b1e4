"""The ``adb`` transport: an Android device through the ``adb`` client (``adb -s SERIAL push/shell/pull``).

``adb shell`` joins its arguments with spaces and hands the result to the device's shell, so a command is
sent as ONE argument built with ``shlex.quote`` from the argument list (``quote_argv``); ``push``/``pull``
use adb's file-sync protocol, where paths are not interpreted by any shell. The exit status of a remote
command is adb's own (adb >= 1.0.36 with Android 7+ forwards it).

Verified against a test double of ``adb`` only (no phone is attached to the machines hwnat is tested on).
"""

from __future__ import annotations

import re

from hwnat.devices.transports._base import (
    Result,
    Transport,
    _tail,
    quote_argv,
    register_transport,
    run_local,
)
from hwnat.errors import BadInputError, DeviceError

# what adb itself (not the remote command) prints when the device cannot be used
_ADB_FAILURE = re.compile(r"^(adb: )?error: (device .*(not found|offline|unauthorized)|no devices|"
                          r"more than one device|cannot connect|closed|protocol fault)|"
                          r"^\* daemon not running|cannot connect to daemon", re.IGNORECASE | re.MULTILINE)


@register_transport("adb")
class AdbTransport(Transport):
    """An Android device reached with ``adb``.

    Example:
        >>> from hwnat.devices.spec import AdbTransport as Spec
        >>> AdbTransport(Spec(kind="adb", serial="R5CT")).adb_argv("shell", quote_argv(["ls", "a b"]))
        ['adb', '-s', 'R5CT', 'shell', "ls 'a b'"]
    """

    def __init__(self, spec):
        super().__init__(spec)
        if spec.serial is not None and (not spec.serial or spec.serial.startswith("-")
                                        or any(c.isspace() for c in spec.serial)):
            raise BadInputError(f"transport.serial: {spec.serial!r} is not a valid adb serial")

    @property
    def host(self) -> str:
        return f"adb:{self.spec.serial or '(the only attached device)'}"

    def adb_argv(self, *args: str) -> list[str]:
        """The local ``adb`` argument list for ``args`` on this device."""
        serial = ["-s", self.spec.serial] if self.spec.serial else []
        return [self.spec.adb, *serial, *args]

    def _adb(self, args: list[str], what: str, timeout_s=None, stdin_path=None, stdout_path=None) -> Result:
        cmd = self.adb_argv(*args)
        rc, out, err = run_local(cmd, host=self.host, timeout_s=timeout_s, stdin_path=stdin_path,
                                 stdout_path=stdout_path,
                                 missing_hint=" (the adb client; Debian/Ubuntu: apt-get install adb)")
        if rc != 0 and _ADB_FAILURE.search(err + "\n" + out):
            raise DeviceError(f"{self.host}: cannot reach the device ({what}): {_tail(err or out)}")
        return Result(tuple(cmd), rc, out, err)

    def _run(self, argv, timeout_s, stdin_path, stdout_path) -> Result:
        res = self._adb(["shell", quote_argv(argv)], f"running {argv[0]}", timeout_s, stdin_path,
                        stdout_path)
        return Result(tuple(argv), res.rc, res.stdout, res.stderr)

    @staticmethod
    def _check_remote(path: str) -> str:
        if not path or path.startswith("-"):
            raise BadInputError(f"remote path {path!r}: must not be empty or start with '-'")
        return path

    def push(self, local: str, remote: str) -> None:
        res = self._adb(["push", str(local), self._check_remote(remote)], f"pushing {local}")
        if res.rc != 0:
            raise DeviceError(f"{self.host}: adb push {local} -> {remote!r} failed: "
                              f"{_tail(res.stderr or res.stdout)}")

    def pull(self, remote: str, local: str) -> None:
        res = self._adb(["pull", self._check_remote(remote), str(local)], f"pulling {remote!r}")
        if res.rc != 0:
            raise DeviceError(f"{self.host}: adb pull {remote!r} failed: {_tail(res.stderr or res.stdout)}")
