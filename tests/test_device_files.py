"""Every shipped device file loads, documents itself, and fits the harness it names; bad files are
errors that name the file and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from _hw import run_cli

from hwnat.devices.parsers import get_parser
from hwnat.devices.spec import DeviceSpec, list_devices, load_device
from hwnat.errors import BadInputError

DEVICES = Path(__file__).resolve().parents[1] / "devices"
FILES = sorted(DEVICES.glob("*.yaml"))
EXPECTED = {"cpu", "cuda", "jetson", "jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx", "pixel-7-cpu",
            "pixel-7-gpu", "rpi-5"}
MODEL = {"onnx": "/tmp/m.onnx", "tflite": "/data/local/tmp/m.tflite"}


def test_the_documented_devices_ship():
    assert EXPECTED <= {p.stem for p in FILES}
    assert EXPECTED <= set(list_devices())


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_device_file_loads_by_path_and_name(path):
    spec = load_device(str(path))
    assert isinstance(spec, DeviceSpec)
    by_name = load_device(path.stem)
    assert by_name == spec
    raw = yaml.safe_load(path.read_text())
    if raw.get("alias_of"):
        assert spec.name == raw["alias_of"]
    else:
        assert spec.name == path.stem, "a device file's name matches its file name"
        assert spec.description


def _header(path: Path) -> str:
    """The comment block a device file opens with."""
    lines = path.read_text().splitlines()
    return "\n".join(lines[: next(i for i, ln in enumerate(lines) if not ln.startswith("#"))])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_device_file_opens_with_a_documenting_comment(path):
    header = _header(path).splitlines()
    assert len(header) >= 2 and all(ln.startswith("#") for ln in header)


@pytest.mark.parametrize("path", [p for p in FILES if not yaml.safe_load(p.read_text()).get("alias_of")],
                         ids=lambda p: p.stem)
def test_remote_devices_say_what_they_need(path):
    spec = load_device(str(path))
    if spec.transport.kind == "local":
        return
    assert spec.requires, "a remote device lists what must be installed on it"
    header = _header(path)
    assert re.search(r"^# What must be on the \w+:", header, re.M), "the opening comment says what must be " \
        "on the device"
    if spec.setup:  # the setup commands are explained in a section the user is pointed to
        assert re.search(rf"^# Setup it expects \(.*`hwnat devices show {re.escape(path.stem)}`", header, re.M)
        shown = run_cli(["devices", "show", path.stem])
        assert shown.exit_code == 0 and all(cmd in shown.stdout for cmd in spec.setup)
    if spec.transport.kind == "ssh":
        assert spec.transport.strict_host_key_checking is True
        assert spec.transport.user and spec.transport.host.endswith(".local")
        assert "~" not in spec.transport.python  # quoted remotely, never expanded
    if spec.runtime.harness != "agent":
        assert spec.runtime.harness_path and spec.runtime.harness_path.startswith("/")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_native_harness_command_builds(path):
    spec = load_device(str(path))
    if spec.runtime.harness == "agent":
        return
    h = get_parser(spec.runtime.harness)
    argv = h.build_command(MODEL[h.model_format], spec.runtime, spec.measure)
    assert argv[0] == spec.runtime.harness_path
    assert all(isinstance(a, str) for a in argv)


def test_jetsons_pin_clocks_and_alias():
    for name in ("jetson-orin-nano", "jetson-agx-orin", "jetson-xavier-nx"):
        spec = load_device(name)
        assert spec.setup == ["sudo nvpmodel -m 0", "sudo jetson_clocks"]
        assert spec.runtime.kind == "tensorrt" and spec.runtime.harness == "trtexec"
        assert spec.transport.kind == "ssh" and spec.transport.user == "nvidia"
    assert load_device("jetson") == load_device("jetson-orin-nano")


def test_pixels_pin_big_cores():
    cpu, gpu = load_device("pixel-7-cpu"), load_device("pixel-7-gpu")
    for spec in (cpu, gpu):
        assert spec.transport.kind == "adb" and spec.transport.taskset == "f0"
        assert spec.runtime.harness == "benchmark_model"
    assert "--use_gpu=true" in get_parser("benchmark_model").build_command("m.tflite", gpu.runtime, gpu.measure)
    assert "--use_xnnpack=true" in get_parser("benchmark_model").build_command("m.tflite", cpu.runtime,
                                                                                cpu.measure)


# ---- bad files name the file and the field --------------------------------------------------------

def _write(tmp_path: Path, name: str, data: dict) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def _jetson_data() -> dict:
    return yaml.safe_load((DEVICES / "jetson-orin-nano.yaml").read_text())


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d["transport"].update(hostname="x"), "transport.ssh.hostname"),
    (lambda d: d["runtime"].update(treads=4), "runtime.treads"),
    (lambda d: d.update(colour="green"), "colour"),
    (lambda d: d["measure"].update(warmup_seconds=1), "measure.warmup_seconds"),
])
def test_unknown_key_names_file_and_field(tmp_path, mutate, field):
    d = _jetson_data()
    mutate(d)
    p = _write(tmp_path, "bad-jetson", d)
    with pytest.raises(BadInputError) as e:
        load_device(str(p))
    msg = str(e.value)
    assert str(p) in msg and field in msg and "unknown field" in msg
    assert e.value.exit_code == 2


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d["transport"].update(port="twenty-two"), "transport.ssh.port"),
    (lambda d: d["runtime"].update(threads="four"), "runtime.threads"),
    (lambda d: d["runtime"].update(precision="fp8"), "runtime.precision"),
    (lambda d: d["runtime"].update(harness="nvprof"), "runtime.harness"),
    (lambda d: d["measure"].update(rounds=0), "measure.rounds"),
    (lambda d: d.update(setup="sudo jetson_clocks"), "setup"),
])
def test_wrong_type_names_file_and_field(tmp_path, mutate, field):
    d = _jetson_data()
    mutate(d)
    p = _write(tmp_path, "bad-jetson", d)
    with pytest.raises(BadInputError) as e:
        load_device(str(p))
    assert str(p) in str(e.value) and field in str(e.value)


def test_not_a_mapping_and_bad_yaml_name_the_file(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(BadInputError, match="list.yaml"):
        load_device(str(p))
    q = tmp_path / "broken.yaml"
    q.write_text("name: [unclosed\n")
    with pytest.raises(BadInputError, match="broken.yaml.*YAML"):
        load_device(str(q))
