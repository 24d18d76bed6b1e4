"""Transport interface and registry: a transport runs argv lists on a device and moves files to and from it.

A transport moves bytes and runs commands; it knows nothing about models or timing (that is
``hwnat.devices.remote``). Commands are always argument lists; a transport that must hand a remote shell
one command line builds it with ``shlex.quote`` (``quote_argv``), never by pasting strings.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass

from hwnat._registry import Registry
from hwnat.errors import DeviceError

log = logging.getLogger(__name__)

TRANSPORTS: Registry[type[Transport]] = Registry("transport kind", attr="kind")


def register_transport(kind: str):
    """Class decorator registering a ``Transport`` subclass for a ``transport.kind`` of a device file."""
    return TRANSPORTS.register(kind)


def quote_argv(argv: list[str]) -> str:
    """One POSIX shell command line that runs exactly ``argv`` (each element ``shlex.quote``d).

    Example:
        >>> quote_argv(["ls", "a b", "$(x)"])
        "ls 'a b' '$(x)'"
    """
    if not argv:
        raise ValueError("empty command")
    return " ".join(shlex.quote(str(a)) for a in argv)


@dataclass(frozen=True)
class Result:
    """What a command returned (like ``subprocess.CompletedProcess``): exit status and decoded output."""

    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str

    @property
    def returncode(self) -> int:
        return self.rc


class Transport(ABC):
    """Runs commands on one device and moves files. Use as a context manager, or call ``close()``:
    closing removes every directory ``mkdtemp`` made and drops shared connections."""

    kind: str = ""

    def __init__(self, spec):
        self.spec = spec
        self._tempdirs: list[str] = []
        self._closed = False

    @property
    @abstractmethod
    def host(self) -> str:
        """Who the device is, for messages (``user@host:port``, ``adb:SERIAL``, ``local``)."""

    @abstractmethod
    def _run(self, argv: list[str], timeout_s: float | None, stdin_path: str | None,
             stdout_path: str | None) -> Result:
        """Run argv; raise ``DeviceError`` when the device cannot be reached. With ``stdout_path`` the
        command's standard output goes (as bytes) to that local file and ``Result.stdout`` is empty."""

    @abstractmethod
    def push(self, local: str, remote: str) -> None:
        """Copy the local file ``local`` to the path ``remote`` on the device."""

    @abstractmethod
    def pull(self, remote: str, local: str) -> None:
        """Copy the device's file ``remote`` to the local path ``local``."""

    @property
    def workdir_parent(self) -> str:
        """Directory on the device under which ``mkdtemp`` creates work directories."""
        return getattr(self.spec, "workdir", "/tmp")

    def run(self, argv: list[str], *, check: bool = False, timeout_s: float | None = None,
            stdin_path: str | None = None, stdout_path: str | None = None,
            what: str | None = None) -> Result:
        """Run the argument list ``argv`` on the device.

        Args:
            argv: the command and its arguments; never a shell line.
            check: raise ``DeviceError`` (naming the host and ``what``) when the exit status is not 0.
            timeout_s: give up after this many seconds (``DeviceError``).
            stdin_path: a local file fed to the command's standard input.
            stdout_path: a local file that receives the command's standard output (bytes).
            what: a few words for the error message (default: the command name).

        Returns:
            the exit status with decoded stdout and stderr.
        """
        if self._closed:
            raise DeviceError(f"{self.host}: transport already closed")
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("empty command")
        res = self._run(argv, timeout_s, stdin_path, stdout_path)
        if check and res.rc != 0:
            raise DeviceError(f"{self.host}: {what or argv[0]} failed (exit {res.rc}): "
                              f"{_tail(res.stderr or res.stdout)}")
        return res

    def mkdtemp(self) -> str:
        """Create a fresh private directory on the device (``mktemp -d``); ``close()`` removes it."""
        template = self.workdir_parent.rstrip("/") + "/hwnat.XXXXXXXX"
        res = self.run(["mktemp", "-d", template], check=True, what=f"creating a work directory in "
                                                                     f"{self.workdir_parent!r}")
        path = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
        if not path.startswith(self.workdir_parent.rstrip("/") + "/"):
            raise DeviceError(f"{self.host}: mktemp returned an unexpected path {path!r}")
        self._tempdirs.append(path)
        return path

    def remove(self, path: str) -> None:
        """Remove a file or directory tree on the device (``rm -rf -- PATH``)."""
        if path.strip() in ("", "/", ".", ".."):
            raise ValueError(f"refusing to remove {path!r}")
        self.run(["rm", "-rf", "--", path], check=True, what=f"removing {path!r}")

    def close(self) -> None:
        """Remove the work directories this transport created, then release connections. Idempotent;
        a failure to clean up is logged, not raised (close runs in ``finally`` blocks)."""
        if self._closed:
            return
        try:
            while self._tempdirs:
                d = self._tempdirs.pop()
                try:
                    self.remove(d)
                except DeviceError as e:
                    log.warning("could not remove the work directory %s: %s", d, e)
        finally:
            self._closed = True
            self._release()

    def _release(self) -> None:  # noqa: B027 - an optional hook: most transports hold no connection
        """Drop connections (after the work directories are gone)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_local(cmd: list[str], *, host: str, timeout_s: float | None = None, stdin_path: str | None = None,
              stdout_path: str | None = None, missing_hint: str = "",
              missing_rc: int | None = None) -> tuple[int, str, str]:
    """Run a local client program (``ssh``, ``adb``, or the command itself for ``local``).

    Returns:
        ``(exit status, stdout, stderr)`` decoded; stdout is empty when it went to ``stdout_path``;
        ``missing_rc`` (e.g. 127) with no output when given and the program does not exist.

    Raises:
        DeviceError: the program is not installed (``missing_hint`` says how to get it), a file cannot be
            opened, or ``timeout_s`` passed (naming ``host``).
    """
    try:
        with open(stdin_path or os.devnull, "rb") as stdin, \
                open(stdout_path or os.devnull, "wb") as sink:
            p = subprocess.run(cmd, stdin=stdin, stdout=sink if stdout_path else subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=timeout_s)
    except FileNotFoundError as e:
        if e.filename in (stdin_path, stdout_path):
            raise DeviceError(f"{host}: cannot open {e.filename}: {e.strerror}") from None
        if missing_rc is not None:  # like a shell: "command not found"
            return missing_rc, "", f"{cmd[0]}: command not found"
        raise DeviceError(f"{host}: {cmd[0]!r} is not installed{missing_hint}") from None
    except PermissionError as e:
        raise DeviceError(f"{host}: cannot run or open {e.filename}: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{host}: {cmd[0]} did not finish within {timeout_s} s") from None
    return (p.returncode, (p.stdout or b"").decode(errors="replace"),
            (p.stderr or b"").decode(errors="replace"))


def _tail(text: str, n: int = 400) -> str:
    """The last line(s) of a tool's output, for one-line error messages."""
    text = (text or "").strip()
    if not text:
        return "(no output)"
    lines = [ln for ln in text.splitlines() if ln.strip()]
    out = " | ".join(lines[-3:])
    return out if len(out) <= n else "..." + out[-n:]
