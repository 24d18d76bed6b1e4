"""The ssh transport, the remote agent and ``hwnat devices`` against a real sshd on 127.0.0.1.

Host-key checking stays on (the fixture writes known_hosts). Hostile strings travel through every place a
user-controlled value reaches a remote shell; a canary file proves none of them is executed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from hwnat.cli.main import cli, main
from hwnat.devices.device import LocalDevice, open_device
from hwnat.devices.remote import RemoteDevice
from hwnat.devices.spec import load_device
from hwnat.devices.transports import get_transport
from hwnat.devices.transports import ssh as ssh_mod
from hwnat.errors import DeviceError
from hwnat.measure.protocol import Protocol

pytestmark = pytest.mark.ssh

PROTOCOL = Protocol(warmup_s=0.05, warmup_runs=3, rounds=3, min_round_s=0.05, unstable_tolerance=0.15,
                    max_remeasure=1)


def hostile(canary: Path) -> list[str]:
    """Strings that would run ``touch CANARY`` (or break quoting) if pasted into a shell line."""
    c = str(canary)
    return [f"a b;touch {c}", f"$(touch {c})", f"`touch {c}`", f"x' ; touch {c} ; echo '",
            f'x" ; touch {c} ; echo "', f"x && touch {c}", f"x | touch {c}", f"x\ntouch {c}",
            "back\\slash", "*", "~", "-rf", "%h %p", "a\tb"]


def conv_model(path: Path, channels: int = 16, size: int = 24, layers: int = 3) -> Path:
    """A small ONNX model (a chain of 3x3 convolutions with ReLU) that takes a fraction of a millisecond."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "input"
    for i in range(layers):
        w = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.1
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        out = "output" if i == layers - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [out]))
        prev = out
    shape = [1, channels, size, size]
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


INPUT_SHAPE = (1, 16, 24, 24)


def test_run_quotes_hostile_arguments(sshd_device, tmp_path):
    canary = tmp_path / "pwned"
    values = hostile(canary)
    with get_transport(load_device(str(sshd_device))) as t:
        for v in values:
            res = t.run(["printf", "%s", v], check=True)
            assert res.stdout == v
        # one command, many arguments: each arrives as exactly one argument
        res = t.run([sys.executable, "-c", "import json,sys; print(json.dumps(sys.argv[1:]))", *values],
                    check=True)
        assert json.loads(res.stdout) == values
    assert not canary.exists()


def test_push_pull_remove_with_hostile_paths(sshd_device, tmp_path):
    canary = tmp_path / "pwned"
    local = tmp_path / "payload.bin"
    data = os.urandom(100_000) + b"\x00\n$(x)"
    local.write_bytes(data)
    with get_transport(load_device(str(sshd_device))) as t:
        for i, name in enumerate(v for v in hostile(canary) if "\n" not in v and "/" not in v):
            remote = tmp_path / f"r{i}-{name}"
            t.push(str(local), str(remote))
            assert remote.read_bytes() == data  # the same machine: the remote path is a local one
            back = tmp_path / f"back{i}"
            t.pull(str(remote), str(back))
            assert back.read_bytes() == data
            t.remove(str(remote))
            assert not remote.exists()
    assert not canary.exists()
    assert not list(tmp_path.glob("*.part"))


def test_remote_measure_matches_local(sshd_device, tmp_path):
    model = conv_model(tmp_path / "convs.onnx")
    local = LocalDevice(load_device("cpu"))
    with open_device(str(sshd_device)) as dev:
        assert isinstance(dev, RemoteDevice)
        m_remote = dev.measure(str(model), INPUT_SHAPE, PROTOCOL)
        m_local = local.measure(str(model), INPUT_SHAPE, PROTOCOL)
        fp = dev.fingerprint()
    assert m_remote.n >= 9 and len(m_remote.rounds_ms) == PROTOCOL.rounds
    assert m_remote.extra["attempts"] >= 1
    diff = abs(m_remote.median_ms - m_local.median_ms)
    assert diff <= max(0.3 * m_local.median_ms, 0.2), (m_remote.summary(), m_local.summary())
    lf = local.fingerprint()
    for k in ("cpu_model", "logical_cores", "machine", "runtime", "runtime_version", "threads"):
        assert fp[k] == lf[k], k
    assert fp["device"] == "loopback-ssh" and fp["transport"] == "ssh"


def test_models_are_pushed_once_and_workdir_is_removed(sshd, sshd_device, tmp_path):
    model = conv_model(tmp_path / "a.onnx")
    copy = tmp_path / "same bytes, other name.onnx"
    copy.write_bytes(model.read_bytes())
    other = conv_model(tmp_path / "b.onnx", layers=2)
    before = sshd.accepted_logins()
    dev = RemoteDevice(load_device(str(sshd_device)))
    try:
        r1 = dev.push_model(str(model))
        assert dev.push_model(str(copy)) == r1
        r2 = dev.push_model(str(other))
        assert r2 != r1
        workdir = dev.workdir
        assert Path(workdir).is_dir() and Path(r1).is_file()
        assert sorted(p.name for p in Path(workdir).iterdir()) == sorted([Path(r1).name, Path(r2).name])
        ctl = dev.transport._ctl_dir
        assert ctl and Path(ctl, "master").exists()  # the shared connection
    finally:
        dev.close()
    assert not Path(workdir).exists()
    assert not Path(ctl).exists()
    # mkdtemp, 3 pushes and rm shared one authenticated connection
    assert sshd.accepted_logins() - before == 1


def test_hostile_workdir_and_model_name(sshd, tmp_path):
    canary = tmp_path / "pwned"
    parent = tmp_path / f"w o;$(touch {canary})`touch {canary}`'q\"&x"
    parent.mkdir(parents=True)
    dev_file = sshd.device_yaml(tmp_path / "hostile.yaml", transport={"workdir": str(parent)})
    model = conv_model(tmp_path / "m $(touch pwned);'`\"x.onnx", layers=1)
    with open_device(str(dev_file)) as dev:
        m = dev.measure(str(model), INPUT_SHAPE, PROTOCOL.merged({"rounds": 2, "max_remeasure": 0}))
        workdir = Path(dev.workdir)
        assert workdir.parent == parent and workdir.is_dir()
    assert m.n > 0
    assert not workdir.exists() and list(parent.iterdir()) == []
    assert not canary.exists()


def test_devices_check_cli(sshd_device):
    res = CliRunner().invoke(cli, ["devices", "check", str(sshd_device)])
    assert res.exit_code == 0, res.output
    import onnxruntime

    assert f"onnxruntime {onnxruntime.__version__}" in res.output
    assert "nothing: ready" in res.output
    res = CliRunner().invoke(cli, ["devices", "check", str(sshd_device), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["reachable"] and rep["python"] and rep["missing"] == []
    assert rep["fingerprint"]["logical_cores"] == os.cpu_count()


def test_check_reports_missing_runtime_with_exit_3(sshd, tmp_path, capsys):
    dev_file = sshd.device_yaml(tmp_path / "litert.yaml", runtime={"kind": "litert", "threads": 1})
    with pytest.raises(SystemExit) as e:
        main(["devices", "check", str(dev_file)])
    assert e.value.code == 3
    out, err = capsys.readouterr()
    assert "missing" in out and "ai-edge-litert" in err


def test_unreachable_port_exits_3(sshd, tmp_path, capsys, monkeypatch):
    from conftest import free_port

    dev_file = sshd.device_yaml(tmp_path / "down.yaml", transport={"port": free_port(), "retries": 2})
    delays = []
    monkeypatch.setattr(ssh_mod, "_sleep", delays.append)
    with pytest.raises(SystemExit) as e:
        main(["devices", "check", str(dev_file)])
    assert e.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot connect" in err[0] and "127.0.0.1" in err[0], err
    assert delays == [0.5, 1.0]  # bounded retries with exponential backoff


def test_unknown_host_key_is_refused_without_retry(sshd, tmp_path, monkeypatch):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    dev_file = sshd.device_yaml(tmp_path / "nokey.yaml", transport={"known_hosts_file": str(empty),
                                                                    "retries": 3})
    monkeypatch.setattr(ssh_mod, "_sleep", lambda s: pytest.fail("retried a host-key failure"))
    with pytest.raises(DeviceError, match="Host key verification failed"):
        with open_device(str(dev_file)) as dev:
            dev.check()
    # the explicit opt-out connects without a known host key
    optout = sshd.device_yaml(tmp_path / "lab.yaml", transport={"known_hosts_file": str(empty),
                                                                "strict_host_key_checking": False})
    with get_transport(load_device(str(optout))) as t:
        assert t.run(["echo", "ok"], check=True).stdout == "ok\n"
        assert "StrictHostKeyChecking=no" in t.ssh_options()


def test_dropped_connection_is_retried(sshd, sshd_device):
    with get_transport(load_device(str(sshd_device))) as t:
        assert t.run(["true"]).rc == 0
        assert sshd.drop_connections() >= 1
        res = t.run(["echo", "again"], check=True)  # reconnects (new master) transparently
        assert res.stdout == "again\n"
        assert t.run(["sh", "-c", "exit 7"]).rc == 7  # remote exit codes come through
