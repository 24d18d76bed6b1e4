"""Shared fixtures: a real OpenSSH server on 127.0.0.1 for the ssh transport tests.

``sshd`` (session) starts ``/usr/sbin/sshd -D`` on a free loopback port with host and user keys generated
for the session, and a known_hosts file holding the host key, so host-key checking stays ON.
``sshd_device`` (session) is the path of an ssh device YAML for it whose ``python`` is this interpreter
(so the agent finds onnxruntime). Tests skip with a reason when sshd or ssh-keygen is absent
(``.ci/run`` installs Debian's openssh-server).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    """A running test sshd: where it listens and the files a client needs."""

    port: int
    dir: Path
    user: str
    user_key: Path
    known_hosts: Path
    log: Path
    proc: subprocess.Popen

    def device_yaml(self, path: Path, name: str = "loopback-ssh", transport: dict | None = None,
                    **fields) -> Path:
        """Write an ssh device file for this server (``transport`` entries override the defaults)."""
        t = {"kind": "ssh", "host": "127.0.0.1", "port": self.port, "user": self.user,
             "identity_file": str(self.user_key), "known_hosts_file": str(self.known_hosts),
             "strict_host_key_checking": True, "python": sys.executable, "retries": 1,
             "connect_timeout_s": 5}
        t.update(transport or {})
        data = {"name": name, "description": "sshd on 127.0.0.1 started by the tests", "transport": t,
                "runtime": {"kind": "onnxruntime", "threads": 1, "provider": "CPUExecutionProvider"},
                "measure": {"warmup_s": 0.05, "warmup_runs": 3, "rounds": 3, "min_round_s": 0.05,
                            "unstable_tolerance": 0.15, "max_remeasure": 1}}
        data.update(fields)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def session_pids(self) -> list[int]:
        """Per-connection sshd processes (children of the listener)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                pids.append(int(stat.parent.name))
        return pids

    def drop_connections(self) -> int:
        """Kill every open ssh connection to this server (the listener keeps running); returns how many."""
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def accepted_logins(self) -> int:
        """How many connections were authenticated so far (from sshd's log)."""
        return self.log.read_text().count("Accepted publickey")


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hwnat-test", "-f", str(path)],
                   check=True, capture_output=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> Sshd:
    """A real sshd on 127.0.0.1 for the session (skips when OpenSSH is not installed)."""
    for exe in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen")):
        if not exe or not os.access(exe, os.X_OK):
            pytest.skip("OpenSSH server/client not installed (apt-get install openssh-server openssh-client)")
    if not Path("/run/sshd").is_dir():  # sshd's privilege-separation directory (made by its service)
        try:
            os.makedirs("/run/sshd", mode=0o755)
        except OSError as e:
            pytest.skip(f"sshd needs /run/sshd and it cannot be created: {e}")
    d = tmp_path_factory.mktemp("sshd")
    host_key, user_key = d / "host_key", d / "user_key"
    _keygen(host_key)
    _keygen(user_key)
    (d / "authorized_keys").write_text(Path(f"{user_key}.pub").read_text())
    port = free_port()
    cfg = d / "sshd_config"
    cfg.write_text("\n".join([
        "ListenAddress 127.0.0.1", f"Port {port}", f"HostKey {host_key}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", f"PidFile {d / 'sshd.pid'}",
        "UsePAM no", "StrictModes no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", "PermitRootLogin prohibit-password", "MaxStartups 50",
        "MaxSessions 50", "LogLevel INFO",
        # bash sources ~/.bashrc for commands arriving over ssh unless SHLVL says it is nested; a slow
        # .bashrc (pyenv init here) would cost ~0.3 s per remote command and nothing else
        "SetEnv SHLVL=1", ""]))
    known = d / "known_hosts"
    key_type, key = Path(f"{host_key}.pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{port} {key_type} {key}\n")
    log = d / "sshd.log"
    with open(log, "wb") as lf:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdin=subprocess.DEVNULL, stdout=lf,
                                stderr=lf)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.skip(f"sshd did not start: {log.read_text().strip()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.skip("sshd did not listen within 10 s")
                time.sleep(0.05)
        yield Sshd(port, d, getpass.getuser(), user_key, known, log, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def sshd_device(sshd, tmp_path_factory) -> Path:
    """Path of an ssh device YAML (``loopback-ssh``) that reaches the test sshd with host-key checking on."""
    return sshd.device_yaml(tmp_path_factory.mktemp("sshd-device") / "loopback-ssh.yaml")


@pytest.fixture(scope="session", autouse=True)
def _hwnat_cache(tmp_path_factory):
    """Fitted predictor libraries go to a per-session folder (shared by the session's tests, including
    the CLI subprocesses they start), never to the user's ~/.cache."""
    old = os.environ.get("HWNAT_CACHE")
    os.environ["HWNAT_CACHE"] = str(tmp_path_factory.mktemp("hwnat-cache"))
    yield
    if old is None:
        os.environ.pop("HWNAT_CACHE", None)
    else:
        os.environ["HWNAT_CACHE"] = old
