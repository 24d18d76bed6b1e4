"""The ``local`` transport: commands run as subprocesses of this machine, files are copied."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from hwnat.devices.transports._base import Result, Transport, register_transport
from hwnat.errors import DeviceError


@register_transport("local")
class LocalTransport(Transport):
    """This machine. Useful to run the remote agent in a separate process, and as the reference the
    ssh and adb transports are tested against."""

    @property
    def host(self) -> str:
        return "local"

    @property
    def workdir_parent(self) -> str:
        return tempfile.gettempdir()

    def _run(self, argv, timeout_s, stdin_path, stdout_path) -> Result:
        try:
            with open(stdin_path or os.devnull, "rb") as stdin, \
                    open(stdout_path, "wb") if stdout_path else _Pipe() as stdout:
                p = subprocess.run(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                   timeout=timeout_s)
        except FileNotFoundError:
            return Result(tuple(argv), 127, "", f"{argv[0]}: command not found")
        except subprocess.TimeoutExpired:
            raise DeviceError(f"local: {argv[0]} timed out after {timeout_s} s") from None
        return Result(tuple(argv), p.returncode, (p.stdout or b"").decode(errors="replace"),
                      p.stderr.decode(errors="replace"))

    def push(self, local: str, remote: str) -> None:
        try:
            shutil.copyfile(local, remote)
        except OSError as e:
            raise DeviceError(f"local: copying {local} to {remote} failed: {e.strerror or e}") from None

    def pull(self, remote: str, local: str) -> None:
        self.push(remote, local)

    def mkdtemp(self) -> str:
        path = tempfile.mkdtemp(prefix="hwnat.")
        self._tempdirs.append(path)
        return path

    def remove(self, path: str) -> None:
        if path.strip() in ("", "/", ".", ".."):
            raise ValueError(f"refusing to remove {path!r}")
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)


class _Pipe:
    """``subprocess.PIPE`` as a context manager (so a file and a pipe share one ``with``)."""

    def __enter__(self):
        return subprocess.PIPE

    def __exit__(self, *exc):
        return False
