"""`hwnat profile` and `hwnat measure` through a real sshd on loopback and the remote agent: results
agree with the same measurements taken locally, a killed connection mid-profile loses nothing, and an
unreachable host exits 3."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from _hw import one_line_error, run_cli

from hwnat.latency.table import LatencyTable
from hwnat.spaces import get_space

pytestmark = pytest.mark.ssh
NB = get_space("nasbench201")
N_BLOCKS = len(NB.all_blocks())  # what a complete nasbench201 table holds
PROTO = {"warmup_s": 0.02, "warmup_runs": 3, "rounds": 3, "min_round_s": 0.03, "max_runs_per_round": 60,
         "unstable_tolerance": 0.5, "max_remeasure": 0}
LOCAL = """name: {name}
transport: {{kind: local}}
runtime: {{kind: onnxruntime, threads: 1, provider: CPUExecutionProvider}}
measure: {proto}
"""


@pytest.fixture(scope="module")
def remote_yaml(sshd, tmp_path_factory):
    d = tmp_path_factory.mktemp("sshprof")
    return sshd.device_yaml(d / "remote.yaml", name="remote", measure=PROTO)


@pytest.fixture(scope="module")
def profiles(remote_yaml, tmp_path_factory):
    d = tmp_path_factory.mktemp("sshprof-out")
    local_yaml = d / "local.yaml"
    local_yaml.write_text(LOCAL.format(name="local", proto=json.dumps(PROTO)))
    out = {}
    for name, dev in (("remote", remote_yaml), ("local", local_yaml)):
        r = run_cli(["-q", "profile", "--device", dev, "--space", "nasbench201", "--out", d / f"{name}.json"])
        assert r.exit_code == 0, r.output
        out[name] = LatencyTable.load(d / f"{name}.json", space="nasbench201", device=name)
    return out


def test_profile_over_ssh_matches_local(profiles):
    remote, local = profiles["remote"], profiles["local"]
    assert set(remote.entries) == set(local.entries) == {b.key for b in NB.all_blocks()}
    assert remote.fingerprint["runtime"] == "onnxruntime" and remote.fingerprint.get("host")
    # same machine, same runtime: the two tables agree in scale (no unit or model mix-up: a factor of 3
    # either way; the blocks take ~0.02 ms under a two-round protocol, so the machine's state between the
    # two profiles moved the median ratio to 0.65 once on an idle CI run) and rank the archs alike
    from scipy.stats import spearmanr

    g = NB.encode_many(NB.sample(np.random.default_rng(0), 50))
    rem, loc = remote.sum_many(NB, g), local.sum_many(NB, g)
    ratio = rem / loc
    assert 1 / 3 < float(np.median(ratio)) < 3, ratio
    assert spearmanr(rem, loc).statistic > 0.5, (rem, loc)


def test_measure_over_ssh_matches_local(remote_yaml, tmp_path):
    archs = [NB.format(a) for a in NB.sample(np.random.default_rng(1), 3)]
    src = tmp_path / "archs.csv"
    src.write_text("arch\n" + "".join(f"{a}\n" for a in archs))
    local_yaml = tmp_path / "local.yaml"
    local_yaml.write_text(LOCAL.format(name="local", proto=json.dumps(PROTO)))
    res = {}
    for name, dev in (("remote", remote_yaml), ("local", local_yaml)):
        r = run_cli(["-q", "measure", "--device", dev, "--space", "nasbench201", "--archs", src,
                     "--out", tmp_path / f"{name}.csv"])
        assert r.exit_code == 0, r.output
        with open(tmp_path / f"{name}.csv") as f:
            res[name] = {row["arch"]: float(row["latency_ms"]) for row in csv.DictReader(f)}
    ratios = [res["remote"][a] / res["local"][a] for a in archs]
    # same machine and runtime: the same scale (a unit or model mix-up is a factor of 1000). Not tighter
    # than a factor of 3: the two runs are seconds apart on a shared machine, and a neighbour's load
    # between them moved the median ratio past 1.6 once in a full-suite run
    assert 1 / 3 < float(np.median(ratios)) < 3, ratios


class _Proxy:
    """A TCP forwarder on loopback in front of the test sshd, so a test can cut the network mid-run."""

    def __init__(self, target_port: int, port: int = 0):
        import socket
        import threading

        self.target = target_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.conns: list = []
        self.open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while self.open:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        """Stop listening and drop every forwarded connection (the host becomes unreachable)."""
        import socket

        self.open = False
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress; close alone would not
        except OSError:
            pass
        self.lsock.close()
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


def test_killed_connection_mid_profile_then_resume(sshd, tmp_path):
    proxy = _Proxy(sshd.port)
    key = sshd.known_hosts.read_text().split(" ", 1)[1]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{proxy.port} {key}")
    dev = sshd.device_yaml(tmp_path / "flaky.yaml", name="flaky",
                           transport={"port": proxy.port, "known_hosts_file": str(known), "retries": 1,
                                      "connect_timeout_s": 2},
                           measure={**PROTO, "rounds": 4, "min_round_s": 0.05})
    out = tmp_path / "t.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "hwnat.cli.main", "-q", "profile", "--device", str(dev),
                          "--space", "nasbench201", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    t0 = time.time()
    while time.time() - t0 < 120:
        if out.exists() and len(json.loads(out.read_text())["entries"]) >= 3:
            break
        assert p.poll() is None, p.stderr.read().decode()
        time.sleep(0.02)
    n_at_cut = len(json.loads(out.read_text())["entries"])
    proxy.cut()
    _, err = p.communicate(timeout=120)
    kept = json.loads(out.read_text())["entries"]
    assert p.returncode == 3, (n_at_cut, len(kept), len(proxy.conns), err.decode())
    assert b"Traceback" not in err and 3 <= len(kept) < N_BLOCKS
    proxy = _Proxy(sshd.port, proxy.port)  # the network is back
    try:
        r = run_cli(["-q", "profile", "--device", dev, "--space", "nasbench201", "--out", out])
        assert r.exit_code == 0, r.output
    finally:
        proxy.cut()
    now = json.loads(out.read_text())["entries"]
    assert len(now) == N_BLOCKS
    assert all(now[k] == v for k, v in kept.items()), "entries measured before the drop are kept as they were"


def test_unreachable_host_is_exit_3(sshd, tmp_path):
    from conftest import free_port

    dev = sshd.device_yaml(tmp_path / "gone.yaml", name="gone",
                           transport={"port": free_port(), "retries": 0, "connect_timeout_s": 2})
    out = tmp_path / "t.json"
    r = run_cli(["profile", "--device", dev, "--space", "nasbench201", "--out", out])
    assert r.exit_code == 3
    assert "127.0.0.1" in one_line_error(r)
