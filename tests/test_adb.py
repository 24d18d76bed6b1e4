"""The adb transport against a test double of ``adb`` (no phone is attached here: unverified on hardware).

The fake ``adb`` (first on PATH) records its argument lists and behaves like the real client where it
matters for quoting: ``adb shell ARGS...`` joins ARGS with spaces and hands the line to a POSIX shell
(``/bin/sh -c``), and ``push``/``pull`` copy files without any shell. So a command that was not quoted
correctly really would run the canary ``touch`` here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from hwnat.devices.remote import RemoteDevice
from hwnat.devices.spec import DeviceSpec
from hwnat.devices.transports import get_transport, quote_argv
from hwnat.errors import DeviceError
from hwnat.measure.protocol import Protocol

FAKE_ADB = r'''#!{python}
import json, os, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as f:
    f.write(json.dumps(args) + "\n")
mode = os.environ.get("FAKE_ADB_MODE", "ok")
serial = None
if args[:1] == ["-s"]:
    serial, args = args[1], args[2:]
if mode == "absent":
    sys.stderr.write("error: device '%s' not found\n" % serial)
    sys.exit(1)
if mode == "offline":
    sys.stderr.write("error: device offline\n")
    sys.exit(1)
cmd, rest = args[0], args[1:]
if cmd == "shell":
    # like adb: the arguments are joined with spaces and run by the device's shell
    sys.exit(subprocess.run(["/bin/sh", "-c", " ".join(rest)]).returncode)
if cmd in ("push", "pull"):
    src, dst = rest
    try:
        shutil.copyfile(src, dst)
    except OSError as e:
        sys.stderr.write("adb: error: failed to copy '%s' to '%s': %s\n" % (src, dst, e.strerror))
        sys.exit(1)
    print("%s: 1 file %sed." % (src, cmd))
    sys.exit(0)
sys.stderr.write("adb: unknown command %s\n" % cmd)
sys.exit(1)
'''

# a benchmark_model run in the current documented form ("count= first= curr= min= max= avg= std=", us)
BENCHMARK_MODEL_LOG = """INFO: STARTING!
INFO: Num threads: [4]
INFO: Graph: [{graph}]
INFO: Use xnnpack: [1]
INFO: Loaded model {graph}
INFO: The input model file size (MB): 0.01
INFO: Initialized session in 3.1ms.
INFO: Running benchmark for at least 3 iterations and at least 0.1 seconds but terminate if exceeding 150 seconds.
INFO: count=40 first=2600 curr=2480 min=2410 max=2700 avg=2500.5 std=60

INFO: Running benchmark for at least 15 iterations and at least 0.3 seconds but terminate if exceeding 150 seconds.
INFO: count=120 first=2450 curr=2440 min=2400 max=2650 avg=2450.25 std=40

INFO: Inference timings in us: Init: 3100, First inference: 2600, Warmup (avg): 2500.5, Inference (avg): 2450.25
"""

FAKE_BENCHMARK_MODEL = r'''#!{python}
import json, os, sys
with open(os.environ["FAKE_ADB_LOG"], "a") as f:
    f.write(json.dumps(["<benchmark_model>"] + sys.argv[1:]) + "\n")
graph = [a for a in sys.argv[1:] if a.startswith("--graph=")][0][len("--graph="):]
sys.stdout.write({log!r}.format(graph=graph))
'''


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """A fake ``adb`` first on PATH; returns the log reader (list of argv lists)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    adb = bindir / "adb"
    adb.write_text(FAKE_ADB.replace("{python}", sys.executable))
    adb.chmod(0o755)
    log = tmp_path / "adb.log"
    log.write_text("")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.delenv("FAKE_ADB_MODE", raising=False)

    def calls() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()]

    calls.bindir = bindir
    return calls


def spec(tmp_path, **transport) -> DeviceSpec:
    t = {"kind": "adb", "serial": "R5CT30XYZ", "workdir": str(tmp_path)}
    t.update(transport)
    return DeviceSpec(name="fake-phone", transport=t)


def hostile(canary: Path) -> list[str]:
    c = str(canary)
    return [f"a b;touch {c}", f"$(touch {c})", f"`touch {c}`", f"x' ; touch {c} ; echo '",
            f'x" ; touch {c} ; echo "', f"x && touch {c}", f"x\ntouch {c}", "back\\slash", "*", "-rf"]


def test_shell_command_is_one_quoted_argument(fake_adb, tmp_path):
    with get_transport(spec(tmp_path)) as t:
        res = t.run(["echo", "a b", "c"], check=True)
    assert res.stdout == "a b c\n" and res.rc == 0
    assert fake_adb()[0] == ["-s", "R5CT30XYZ", "shell", "echo 'a b' c"]


def test_no_serial_means_no_dash_s(fake_adb, tmp_path):
    with get_transport(spec(tmp_path, serial=None)) as t:
        t.run(["true"], check=True)
    assert fake_adb()[0] == ["shell", "true"]


def test_hostile_values_are_not_executed(fake_adb, tmp_path):
    canary = tmp_path / "pwned"
    values = hostile(canary)
    with get_transport(spec(tmp_path)) as t:
        for v in values:
            assert t.run(["printf", "%s", v], check=True).stdout == v
    sent = [c[3] for c in fake_adb()]
    assert sent == [quote_argv(["printf", "%s", v]) for v in values]
    assert not canary.exists()


def test_push_pull_mkdtemp_remove(fake_adb, tmp_path):
    canary = tmp_path / "pwned"
    parent = tmp_path / f"d $(touch {canary.name});`x`'"
    parent.mkdir()
    local = tmp_path / "model.tflite"
    local.write_bytes(b"\x00tflite")
    with get_transport(spec(tmp_path, workdir=str(parent))) as t:
        work = t.mkdtemp()
        assert Path(work).parent == parent and Path(work).is_dir()
        remote = f"{work}/m; rm -rf ~ $(touch {canary.name}).tflite"
        t.push(str(local), remote)
        assert Path(remote).read_bytes() == local.read_bytes()
        t.pull(remote, str(tmp_path / "back"))
        assert (tmp_path / "back").read_bytes() == local.read_bytes()
    assert not Path(work).exists()  # close removed the work directory
    calls = fake_adb()
    assert ["-s", "R5CT30XYZ", "push", str(local), remote] in calls  # sync protocol: no quoting needed
    assert not canary.exists() and not Path(canary.name).exists()


def test_remote_exit_status_is_kept(fake_adb, tmp_path):
    with get_transport(spec(tmp_path)) as t:
        res = t.run(["sh", "-c", "echo oops >&2; exit 5"])
    assert res.rc == 5 and res.stderr == "oops\n"


@pytest.mark.parametrize("mode, words", [("absent", "not found"), ("offline", "offline")])
def test_unreachable_device_is_a_device_error(fake_adb, tmp_path, monkeypatch, mode, words):
    monkeypatch.setenv("FAKE_ADB_MODE", mode)
    t = get_transport(spec(tmp_path))
    with pytest.raises(DeviceError, match=f"adb:R5CT30XYZ.*{words}"):
        t.run(["true"])
    with pytest.raises(DeviceError, match="adb:R5CT30XYZ"):
        t.push(__file__, f"{tmp_path}/x")
    t.close()


def test_missing_adb_client(tmp_path):
    t = get_transport(spec(tmp_path, adb=str(tmp_path / "no-such-adb")))
    with pytest.raises(DeviceError, match=r"not installed \(the adb client"):
        t.run(["true"])


def test_bad_serial_and_remote_path_are_rejected(tmp_path):
    from hwnat.errors import BadInputError

    with pytest.raises(BadInputError, match="serial"):
        get_transport(spec(tmp_path, serial="-e"))
    t = get_transport(spec(tmp_path))
    with pytest.raises(BadInputError, match="must not be empty or start with '-'"):
        t.push(__file__, "-rf")


def test_benchmark_model_over_adb_with_taskset(fake_adb, tmp_path):
    """The full harness path: push, taskset-pinned benchmark_model, parsed summary."""
    exe = fake_adb.bindir / "benchmark_model"
    exe.write_text(FAKE_BENCHMARK_MODEL.replace("{python}", sys.executable)
                   .replace("{log!r}", repr(BENCHMARK_MODEL_LOG)))
    exe.chmod(0o755)
    model = tmp_path / "sub net $(x).tflite"
    model.write_bytes(b"TFL3 not a real model")
    dev_spec = DeviceSpec(name="fake-phone",
                          transport={"kind": "adb", "serial": "R5CT30XYZ", "workdir": str(tmp_path),
                                     "taskset": "1"},
                          runtime={"kind": "litert", "threads": 4, "harness": "benchmark_model"})
    with RemoteDevice(dev_spec) as dev:
        assert dev.model_format == "tflite"
        m = dev.measure(str(model), (1, 3, 8, 8), Protocol(rounds=3, runs=5, max_remeasure=0))
        fp = dev.fingerprint()
    assert m.median_ms == pytest.approx(2.45025) and m.n == 120
    assert m.extra["harness"] == "benchmark_model" and m.extra["summary_only"]
    shell = [c[3] for c in fake_adb() if c[2:3] == ["shell"]]
    timed = [s for s in shell if "--graph=" in s]
    assert len(timed) == 1 and timed[0].startswith("taskset 1 ")
    assert "--num_threads=4" in timed[0] and "--num_runs=15" in timed[0]
    graph = [a for a in [c for c in fake_adb() if c[0] == "<benchmark_model>"][0] if a.startswith("--graph")]
    assert graph[0].endswith(".tflite") and "$(" not in graph[0]  # remote name is the content hash
    assert fp["device"] == "fake-phone" and fp["transport"] == "adb" and fp["harness"] == "benchmark_model"


def test_agent_over_adb(fake_adb, tmp_path):
    """A device with Python (runtime.options.python): the agent runs through adb shell."""
    from test_ssh import INPUT_SHAPE, conv_model

    model = conv_model(tmp_path / "m.onnx", layers=1)
    dev_spec = DeviceSpec(name="fake-phone", transport={"kind": "adb", "serial": "S1", "workdir": str(tmp_path)},
                          runtime={"kind": "onnxruntime", "threads": 1, "options": {"python": sys.executable}})
    with RemoteDevice(dev_spec) as dev:
        rep = dev.check()
        m = dev.measure(str(model), INPUT_SHAPE, Protocol(rounds=2, min_round_s=0.02, max_remeasure=0))
        work = dev.workdir
    assert rep["ok"] and rep["python"] and rep["runtime_version"]
    assert m.n >= 6 and m.median_ms > 0
    assert not Path(work).exists()


def test_local_transport_is_the_reference(tmp_path):
    """The same contract on this machine: argv passes through untouched, files copy, work dirs go."""
    from hwnat.devices.spec import LocalTransport

    canary = tmp_path / "pwned"
    with get_transport(LocalTransport()) as t:
        for v in hostile(canary):
            assert t.run(["printf", "%s", v], check=True).stdout == v
        work = t.mkdtemp()
        src = tmp_path / "a"
        src.write_bytes(b"x" * 10)
        t.push(str(src), f"{work}/b $(x)")
        assert Path(work, "b $(x)").read_bytes() == b"x" * 10
        assert t.run(["no-such-program-hwnat"]).rc == 127
        with pytest.raises(DeviceError, match="exit 3"):
            t.run(["sh", "-c", "exit 3"], check=True)
    assert not Path(work).exists() and not canary.exists()
