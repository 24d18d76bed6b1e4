"""Device spec: a YAML file (where + how + conditions) validated into a typed, frozen config.

An unknown key or a wrong type is a ``BadInputError`` naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwnat.errors import BadInputError
from hwnat.measure.protocol import Protocol


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalTransport(_Strict):
    """This machine, in-process."""

    kind: Literal["local"] = "local"


class SshTransport(_Strict):
    """A host reached with the system OpenSSH client."""

    kind: Literal["ssh"]
    host: str = Field(description="host name or address")
    port: int = Field(22, ge=1, le=65535)
    user: str | None = Field(None, description="login user; default: ssh's own default")
    identity_file: str | None = Field(None, description="private key file (~ expanded)")
    strict_host_key_checking: bool = Field(
        True, description="verify the host key (default). false is an explicit opt-out for lab boards")
    known_hosts_file: str | None = Field(None, description="known_hosts file; default: ssh's own")
    connect_timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(3, ge=0, description="reconnect attempts on a dropped connection")
    python: str = Field("python3", description="remote Python for the agent; '' = no Python, use harness")
    workdir: str = Field("/tmp", description="parent of the per-run remote work directory")


class AdbTransport(_Strict):
    """An Android device reached with the ``adb`` client."""

    kind: Literal["adb"]
    serial: str | None = Field(None, description="adb -s SERIAL; default: the only attached device")
    adb: str = Field("adb", description="adb executable")
    workdir: str = Field("/data/local/tmp", description="parent of the per-run remote work directory")
    taskset: str | None = Field(None, description="CPU mask for taskset, e.g. 'f0' for the big cores")


Transport = Annotated[LocalTransport | SshTransport | AdbTransport, Field(discriminator="kind")]


class RuntimeSpec(_Strict):
    """How a model is run and timed."""

    kind: Literal["onnxruntime", "torch", "tensorrt", "litert", "openvino"] = "onnxruntime"
    threads: int = Field(1, ge=0, description="intra-op threads; 0 = the runtime's default")
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    provider: str | None = Field(None, description="e.g. CPUExecutionProvider, CUDAExecutionProvider")
    harness: Literal["agent", "trtexec", "benchmark_model", "onnxruntime_perf_test"] = Field(
        "agent", description="remote timing: the Python agent, or a native harness whose output is parsed")
    harness_path: str | None = Field(None, description="path of the native harness on the device")
    options: dict[str, str | int | float | bool] = Field(default_factory=dict,
                                                        description="runtime-specific extras")


class ThermalSpec(_Strict):
    """Thermal and frequency guard."""

    max_temp_c: float | None = Field(None, description="cool down before measuring above this")
    cooldown_wait_s: float = Field(30.0, ge=0, description="longest wait for cooling")


class DeviceSpec(_Strict):
    """One device file."""

    name: str
    description: str = ""
    transport: Transport = Field(default_factory=LocalTransport)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    measure: Protocol = Field(default_factory=Protocol)
    thermal: ThermalSpec = Field(default_factory=ThermalSpec)
    setup: list[str] = Field(default_factory=list,
                             description="commands that prepare the device; shown, run only when asked")
    requires: list[str] = Field(default_factory=list, description="what must be installed on the device")
    alias_of: str | None = Field(None, description="this name is an alias of another device file")

    @property
    def batch(self) -> int:
        return 1


def devices_dirs() -> list[Path]:
    """Directories searched for device files: ``$HWNAT_DEVICES_PATH`` (os.pathsep-separated), the
    repository's ``devices/`` (editable install), and the copy inside the wheel."""
    import os

    import hwnat

    dirs = [Path(p) for p in os.environ.get("HWNAT_DEVICES_PATH", "").split(os.pathsep) if p]
    pkg = Path(hwnat.__file__).resolve().parent
    dirs += [pkg.parent / "devices", pkg / "_data" / "devices"]
    return [d for d in dirs if d.is_dir()]


def list_devices() -> list[str]:
    """Names of the device files found, sorted."""
    names = set()
    for d in devices_dirs():
        names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def load_device(name_or_path: str) -> DeviceSpec:
    """Load a device by name (from ``devices_dirs()``) or by path to a YAML file.

    Raises:
        BadInputError: unknown name (lists the valid ones), unreadable file, bad YAML, unknown key or
            wrong type (names the file and the field).
    """
    p = Path(name_or_path).expanduser()
    if not (p.suffix in (".yaml", ".yml") or p.exists() or "/" in name_or_path):
        for d in devices_dirs():
            cand = d / f"{name_or_path}.yaml"
            if cand.is_file():
                p = cand
                break
        else:
            raise BadInputError(
                f"unknown device {name_or_path!r}; expected one of: {', '.join(list_devices())} "
                "or a path to a device YAML file")
    spec = _load_file(p)
    if spec.alias_of:
        return load_device(spec.alias_of)
    return spec


def _load_file(p: Path) -> DeviceSpec:
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise BadInputError(f"{p}: device file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{p}: cannot read device file: {e}") from None
    except yaml.YAMLError as e:
        raise BadInputError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{p}: expected a mapping of device fields at the top level")
    data.setdefault("name", p.stem)
    try:
        return DeviceSpec(**data)
    except ValidationError as e:
        raise BadInputError(f"{p}: {format_validation_error(e)}") from None


def format_validation_error(e: ValidationError) -> str:
    """One line per problem: ``field.path: what was expected (got VALUE)``."""
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        got = err.get("input")
        lines.append(f"field {loc}: {msg}" + (f" (got {got!r})" if err["type"] != "missing" and
                                               not isinstance(got, dict) else ""))
    return "; ".join(lines)
