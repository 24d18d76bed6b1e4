"""The ``local`` transport: commands run as subprocesses of this machine, files are copied."""

from __future__ import annotations

import os
import shutil
import tempfile

from hwnat.devices.transports._base import Result, Transport, register_transport, run_local
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
        rc, out, err = run_local(argv, host=self.host, timeout_s=timeout_s, stdin_path=stdin_path,
                                 stdout_path=stdout_path, missing_rc=127)
        return Result(tuple(argv), rc, out, err)

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

