"""The ``ssh`` transport: the system OpenSSH client, with one shared connection per device.

Security and robustness choices:

- Host-key checking is ON (``StrictHostKeyChecking=yes``): an unknown or changed host key is an error.
  ``strict_host_key_checking: false`` in the device file is the explicit opt-out for lab boards that are
  re-flashed often; only then ``StrictHostKeyChecking=no`` and ``UserKnownHostsFile=/dev/null``.
- ``BatchMode=yes``: never prompt for a password or passphrase (a prompt would hang a profile).
- Connection sharing: ``ControlMaster=auto`` with a ``ControlPath`` inside a private (0700) temporary
  directory and ``ControlPersist``, so thousands of commands pay one handshake. ``close()`` stops the
  master (``ssh -O exit``) and deletes the directory.
- ``ConnectTimeout`` and ``ServerAliveInterval`` bound how long a dead host can stall a command.
- ssh exits with 255 when the connection fails; such commands are retried a bounded number of times
  (``retries`` in the device file) with exponential backoff, then a ``DeviceError`` names the host.
  Authentication and host-key failures are not retried. (A remote command that itself exits 255 is
  indistinguishable from a dropped connection, so every command hwnat sends is safe to repeat.)
- Remote command lines are built from argument lists with ``shlex.quote`` (POSIX quoting: the login
  shell of the remote user must be a POSIX shell: sh, dash, bash, zsh, ash), and the destination follows
  ``--`` so a host name can never be read as an option.
- Files are copied by streaming through ``cat`` on the shared connection, not with ``scp``: before
  OpenSSH 9.0, ``scp`` handed remote paths to the remote shell unquoted, so a path with ``$(...)`` in it
  would run; streaming uses the same quoting as every other command and works with any OpenSSH version.
  Uploads are written to ``PATH.part`` and renamed, so a dropped connection never leaves a truncated file
  under the final name.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import time

from hwnat.devices.transports._base import (
    Result,
    Transport,
    _tail,
    quote_argv,
    register_transport,
    run_local,
)
from hwnat.errors import BadInputError, DeviceError

log = logging.getLogger(__name__)

#: ssh's exit status when the connection (not the remote command) failed
SSH_CONNECTION_FAILED = 255
#: seconds an idle shared master connection stays up after the last command
CONTROL_PERSIST_S = 120
#: first backoff delay (s); doubled after each failed attempt, capped at ``BACKOFF_MAX_S``
BACKOFF_S = 0.5
BACKOFF_MAX_S = 8.0

# failures that a retry cannot fix
_PERMANENT = re.compile(r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|"
                        r"Permission denied|Could not resolve hostname|"
                        r"Bad configuration option|no argument after keyword|Too many authentication",
                        re.IGNORECASE)
_sleep = time.sleep  # module-level so tests can replace it

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.:%-]+$")


def _config_path(path: str) -> str:
    """A file path as an ssh ``-o Key=VALUE`` value: ``~`` expanded, double-quoted when it has spaces
    (ssh splits option values on whitespace), ``%`` escaped (ssh expands ``%`` tokens)."""
    path = os.path.expanduser(path)
    if '"' in path or "\n" in path:
        raise BadInputError(f"ssh file path {path!r}: double quotes and newlines are not supported")
    path = path.replace("%", "%%")
    return f'"{path}"' if any(c.isspace() for c in path) else path


@register_transport("ssh")
class SshTransport(Transport):
    """A host reached with ``ssh`` (see the module docstring for the options used).

    Example:
        >>> from hwnat.devices.spec import SshTransport as Spec
        >>> t = SshTransport(Spec(kind="ssh", host="jetson.local", user="nvidia"))
        >>> t.ssh_argv(["ls", "a b"])[-2:]
        ['jetson.local', "ls 'a b'"]
        >>> t.close()
    """

    def __init__(self, spec):
        super().__init__(spec)
        for field, value in (("host", spec.host), ("user", spec.user)):
            if value is not None and (not _SAFE_NAME.match(value) or value.startswith("-")):
                raise BadInputError(f"transport.{field}: {value!r} is not a valid ssh {field} name")
        self._ctl_dir: str | None = None
        self._closing = False

    @property
    def host(self) -> str:
        user = f"{self.spec.user}@" if self.spec.user else ""
        return f"{user}{self.spec.host}:{self.spec.port}"

    # -- command lines -------------------------------------------------------------------------------

    def _control_path(self) -> str:
        if self._ctl_dir is None:
            # short, private directory: unix socket paths are limited to ~104 bytes
            self._ctl_dir = tempfile.mkdtemp(prefix="hwnat-ssh-")
            os.chmod(self._ctl_dir, 0o700)
        return os.path.join(self._ctl_dir, "master")

    def ssh_options(self) -> list[str]:
        """The ``ssh`` options every command uses (connection sharing, timeouts, host-key policy)."""
        s = self.spec
        opts = ["-o", "BatchMode=yes",
                "-o", f"ConnectTimeout={max(1, math.ceil(s.connect_timeout_s))}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={_config_path(self._control_path())}",
                "-o", f"ControlPersist={CONTROL_PERSIST_S}",
                "-o", "LogLevel=ERROR",
                "-p", str(s.port)]
        if s.user:
            opts += ["-l", s.user]
        if s.identity_file:
            opts += ["-o", f"IdentityFile={_config_path(s.identity_file)}", "-o", "IdentitiesOnly=yes"]
        if s.strict_host_key_checking:
            opts += ["-o", "StrictHostKeyChecking=yes"]
            if s.known_hosts_file:
                opts += ["-o", f"UserKnownHostsFile={_config_path(s.known_hosts_file)}"]
        else:
            opts += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        return opts

    def ssh_argv(self, argv: list[str]) -> list[str]:
        """The local ``ssh`` argument list that runs ``argv`` on the host, quoted for the remote shell."""
        return ["ssh", *self.ssh_options(), "--", self.spec.host, quote_argv(argv)]

    # -- running -------------------------------------------------------------------------------------

    def _run(self, argv, timeout_s, stdin_path, stdout_path) -> Result:
        cmd = self.ssh_argv(argv)
        attempts = 1 if self._closing else self.spec.retries + 1
        delay = BACKOFF_S
        for attempt in range(1, attempts + 1):
            res = self._once(cmd, argv, timeout_s, stdin_path, stdout_path)
            if res.rc != SSH_CONNECTION_FAILED:
                return res
            msg = _tail(res.stderr)
            if _PERMANENT.search(res.stderr or ""):
                raise DeviceError(f"{self.host}: cannot connect: {msg}")
            if attempt < attempts:
                log.info("%s: connection failed (%s); retry %d/%d in %.1f s", self.host, msg, attempt,
                            attempts - 1, delay)
                _sleep(delay)
                delay = min(2 * delay, BACKOFF_MAX_S)
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        raise DeviceError(f"{self.host}: cannot connect{tries}: {msg}")

    def _once(self, cmd, argv, timeout_s, stdin_path, stdout_path) -> Result:
        rc, out, err = run_local(cmd, host=self.host, timeout_s=timeout_s, stdin_path=stdin_path,
                                 stdout_path=stdout_path,
                                 missing_hint=" (the OpenSSH client; Debian/Ubuntu: apt-get install openssh-client)")
        return Result(tuple(argv), rc, out, err)

    # -- files ---------------------------------------------------------------------------------------

    def push(self, local: str, remote: str) -> None:
        # the script is a constant; the path arrives as a positional parameter, quoted
        self.run(["sh", "-c", 'cat > "$1.part" && mv -f -- "$1.part" "$1"', "sh", remote],
                 stdin_path=str(local), check=True, what=f"uploading {local} to {remote!r}")

    def pull(self, remote: str, local: str) -> None:
        tmp = f"{local}.part"
        try:
            self.run(["cat", "--", remote], stdout_path=tmp, check=True, what=f"downloading {remote!r}")
            os.replace(tmp, local)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    # -- teardown ------------------------------------------------------------------------------------

    def close(self) -> None:
        self._closing = True  # cleanup is best effort: no retries against a dead host
        super().close()

    def _release(self) -> None:
        if self._ctl_dir is None:
            return
        sock = os.path.join(self._ctl_dir, "master")
        if os.path.exists(sock):
            try:
                subprocess.run(["ssh", *self.ssh_options(), "-O", "exit", "--", self.spec.host],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired) as e:
                log.warning("%s: could not stop the shared ssh connection: %s", self.host, e)
        shutil.rmtree(self._ctl_dir, ignore_errors=True)
        self._ctl_dir = None
