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
from _hw import one_line_error, run_cli
from onnx import TensorProto, helper, numpy_helper

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
    assert not canary.exists() and not (Path.home() / "pwned").exists()  # remote commands start in ~


def test_devices_check_cli(sshd_device):
    import onnxruntime

    res = run_cli(["devices", "check", sshd_device])
    assert res.exit_code == 0, res.output
    assert f"onnxruntime {onnxruntime.__version__}" in res.output
    assert "nothing: ready" in res.output
    res = run_cli(["devices", "check", sshd_device, "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["reachable"] and rep["python"] and rep["missing"] == []
    assert rep["fingerprint"]["logical_cores"] == os.cpu_count()


def test_check_reports_missing_runtime_with_exit_3(sshd, tmp_path):
    # TensorRT cannot be installed on this machine, so the remote agent must report it missing
    dev_file = sshd.device_yaml(tmp_path / "trt.yaml", runtime={"kind": "tensorrt", "threads": 1})
    res = run_cli(["devices", "check", dev_file])
    assert res.exit_code == 3
    assert "missing" in res.stdout and "tensorrt" in one_line_error(res)


def test_unreachable_port_exits_3(sshd, tmp_path, monkeypatch):
    from conftest import free_port

    dev_file = sshd.device_yaml(tmp_path / "down.yaml", transport={"port": free_port(), "retries": 2})
    delays = []
    monkeypatch.setattr(ssh_mod, "_sleep", delays.append)
    res = run_cli(["devices", "check", dev_file])
    assert res.exit_code == 3
    err = one_line_error(res)
    assert "cannot connect" in err and "127.0.0.1" in err, err
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


# trtexec 8.6+ output in its documented form: 3 warm-up queries, 12 timed ones
TRTEXEC_LOG = """\
&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec --onnx=m.onnx
[06/26/2023-11:30:48] [I] Starting inference
[06/26/2023-11:30:51] [I] Warmup completed 3 queries over 200 ms
[06/26/2023-11:30:51] [I] Timing trace has 12 queries over 0.05 s
[06/26/2023-11:30:51] [I]
[06/26/2023-11:30:51] [I] === Performance summary ===
[06/26/2023-11:30:51] [I] Throughput: 234.19 qps
[06/26/2023-11:30:51] [I] Latency: min = 4.1 ms, max = 4.5 ms, mean = 4.2 ms, median = 4.2 ms, percentile(90%) = 4.4 ms, percentile(95%) = 4.45 ms, percentile(99%) = 4.5 ms
[06/26/2023-11:30:51] [I] GPU Compute Time: min = 4.0 ms, max = 4.4 ms, mean = 4.1 ms, median = 4.1 ms, percentile(90%) = 4.3 ms, percentile(95%) = 4.35 ms, percentile(99%) = 4.4 ms
[06/26/2023-11:30:51] [I] Enqueue Time: min = 1.2 ms, max = 1.9 ms, mean = 1.5 ms, median = 1.5 ms, percentile(90%) = 1.8 ms, percentile(95%) = 1.85 ms, percentile(99%) = 1.9 ms
[06/26/2023-11:30:51] [I] H2D Latency: min = 0.03 ms, max = 0.05 ms, mean = 0.03 ms, median = 0.03 ms, percentile(90%) = 0.04 ms, percentile(95%) = 0.04 ms, percentile(99%) = 0.05 ms
[06/26/2023-11:30:51] [I] D2H Latency: min = 0.02 ms, max = 0.03 ms, mean = 0.02 ms, median = 0.02 ms, percentile(90%) = 0.03 ms, percentile(95%) = 0.03 ms, percentile(99%) = 0.03 ms
[06/26/2023-11:30:51] [I] Total Host Walltime: 0.05 s
[06/26/2023-11:30:51] [I] Total GPU Compute Time: 0.049 s
&&&& PASSED TensorRT.trtexec [TensorRT v8601] # trtexec --onnx=m.onnx
"""

FAKE_TRTEXEC = r'''#!{python}
import json, sys
args = sys.argv[1:]
with open({argv_log!r}, "a") as f:
    f.write(json.dumps(args) + "\n")
export = [a.split("=", 1)[1] for a in args if a.startswith("--exportTimes=")][0]
warm = [{{"computeMs": 9.0, "latencyMs": 9.5}}] * 3  # some versions export warm-up queries too
timed = [{{"computeMs": 4.0 + 0.01 * i, "latencyMs": 4.1 + 0.01 * i}} for i in range(12)]
with open(export, "w") as f:
    json.dump(warm + timed, f)
sys.stdout.write({log!r})
'''


def test_trtexec_harness_over_ssh(sshd, tmp_path):
    """A Jetson-like device without the agent: trtexec runs, its log is parsed, and the per-query times
    from --exportTimes become the raw samples (warm-up queries dropped)."""
    bindir = tmp_path / "tensor rt $(touch pwned)"
    bindir.mkdir()
    exe = bindir / "trtexec"
    argv_log = tmp_path / "trtexec-argv.jsonl"
    exe.write_text(FAKE_TRTEXEC.format(python=sys.executable, argv_log=str(argv_log), log=TRTEXEC_LOG))
    exe.chmod(0o755)
    dev_file = sshd.device_yaml(tmp_path / "jetson.yaml", transport={"python": ""},
                                runtime={"kind": "tensorrt", "precision": "fp16", "harness": "trtexec",
                                         "harness_path": str(exe)})
    model = conv_model(tmp_path / "subnet.onnx", layers=1)
    with open_device(str(dev_file)) as dev:
        m = dev.measure(str(model), INPUT_SHAPE, Protocol(rounds=3, runs=4, max_remeasure=0))
        work = Path(dev.workdir)
        assert list(work.glob("times-*")) == []  # the export file is removed once read
        fp = dev.fingerprint()
        rep = dev.check()
    assert [len(r) for r in m.rounds_ms] == [4, 4, 4]
    assert m.samples_ms.max() < 5 and m.median_ms == pytest.approx(4.055)
    assert m.extra["harness"] == "trtexec" and m.extra["harness_version"] == "8.6.1"
    argv = json.loads(argv_log.read_text().splitlines()[0])
    assert argv[0].startswith("--onnx=") and argv[0].endswith(".onnx") and "--fp16" in argv
    assert "--iterations=12" in argv and any(a.startswith("--exportTimes=") for a in argv)
    assert fp["transport"] == "ssh" and fp["runtime"] == "tensorrt" and fp["logical_cores"] == os.cpu_count()
    assert rep["python"] is None and rep["harness_path"] == str(exe) and rep["ok"], rep["missing"]
    assert not work.exists() and not (Path.home() / "pwned").exists()  # remote commands start in ~


def test_devices_list_show_and_help(sshd, sshd_device, monkeypatch):
    monkeypatch.setenv("HWNAT_DEVICES_PATH", str(Path(sshd_device).parent))
    res = run_cli(["devices", "list"])
    assert res.exit_code == 0, res.output
    row = [ln for ln in res.stdout.splitlines() if ln.startswith("loopback-ssh ")]
    assert row and f"ssh {sshd.user}@127.0.0.1:{sshd.port}" in row[0] and "onnxruntime" in row[0]
    assert any(ln.startswith("cpu ") for ln in res.stdout.splitlines())
    rows = json.loads(run_cli(["devices", "list", "--json"]).stdout)
    assert {"name", "transport", "runtime", "description"} <= set(rows[0])
    res = run_cli(["devices", "show", "loopback-ssh"])
    assert res.exit_code == 0 and "strict_host_key_checking: true" in res.stdout
    assert json.loads(run_cli(["devices", "show", "loopback-ssh", "--json"]).stdout)["transport"]["port"] == sshd.port
    assert run_cli(["devices", "show", "no-such-device"]).exit_code == 2
    for cmd in (["devices"], ["devices", "list"], ["devices", "show"], ["devices", "check"]):
        res = run_cli([*cmd, "--help"])
        assert res.exit_code == 0 and res.stdout.strip().splitlines()[-1].strip().startswith("hwnat devices")


def test_agent_is_self_contained(tmp_path):
    """The pushed agent parses as Python 3.7, has the timing loop once, and runs where hwnat cannot be
    imported (a poisoned ``hwnat`` package first on PYTHONPATH)."""
    import ast
    import subprocess

    from hwnat.devices.agent import agent_source

    src = agent_source()
    ast.parse(src, feature_version=(3, 7))
    assert src.count("def time_runs(") == 1 and src.startswith('"""The timing loop')
    poison = tmp_path / "poison" / "hwnat"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('hwnat must not be imported by the agent')\n")
    agent = tmp_path / "agent.py"
    agent.write_text(src)
    model = conv_model(tmp_path / "m.onnx", layers=1)
    req = {"model": str(model), "input_shape": list(INPUT_SHAPE), "runtime": {"kind": "onnxruntime"},
           "timing": PROTOCOL.merged({"rounds": 2}).timing_kwargs(), "fingerprint": True}
    env = {**os.environ, "PYTHONPATH": str(poison.parent)}
    for args in (["--check"], ["--request", json.dumps(req)]):
        p = subprocess.run([sys.executable, str(agent), *args], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=60)
        out = json.loads(p.stdout)
        assert p.returncode == 0 and out["ok"], p.stderr
    assert len(out["rounds_ms"]) == 2 and out["info"]["runtime"] == "onnxruntime"
    assert out["fingerprint"]["logical_cores"] == os.cpu_count()
    bad = subprocess.run([sys.executable, str(agent), "--request", '{"model": "/nonexistent.onnx", '
                          '"input_shape": [1], "timing": {}}'], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and not json.loads(bad.stdout)["ok"]


def test_lost_workdir_and_connection_are_recovered(sshd, sshd_device, tmp_path):
    """The device forgets our files (reboot, /tmp wiped) and the connection drops between measurements:
    the next measurement pushes again over a new connection."""
    import shutil

    model = conv_model(tmp_path / "m.onnx", layers=1)
    quick = PROTOCOL.merged({"rounds": 2, "max_remeasure": 0})
    with open_device(str(sshd_device)) as dev:
        dev.measure(str(model), INPUT_SHAPE, quick)
        first = dev.workdir
        shutil.rmtree(first)
        sshd.drop_connections()
        m = dev.measure(str(model), INPUT_SHAPE, quick)
        second = dev.workdir
        assert second != first and Path(second).is_dir()
    assert m.n > 0 and not Path(second).exists()
