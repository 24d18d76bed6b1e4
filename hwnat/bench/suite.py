"""Benchmark suite: a short YAML recipe (name, device, rounds, protocol overrides, entries) as a typed config.

Example suite file::

    name: default
    device: cpu
    rounds: 12            # interleaved passes over all entries = samples per entry for the statistics
    protocol: {warmup_s: 0.1, min_round_s: 0.15}
    entries:
      - {name: nb201-a, space: nasbench201, arch: "|nor_conv_3x3~0|+|...|"}
      - {name: my-model, model: models/my_model.onnx}     # relative to the suite file

An entry is either a model file (``model``, with ``input_shape`` when the file's input is not static)
or a search-space architecture (``space`` + ``arch`` in the canonical string form).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hwnat.devices.spec import format_validation_error
from hwnat.errors import BadInputError
from hwnat.measure.protocol import Protocol

#: protocol fields a suite may override (``rounds``/``max_remeasure`` are set by the bench runner)
_PASS_FIXED = ("rounds", "max_remeasure")


class SuiteEntry(BaseModel):
    """One thing to time: a model file or a space architecture."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", max_length=100,
                      description="entry name: results are matched by it across runs")
    model: str | None = Field(None, description="ONNX file; a relative path is relative to the suite file")
    input_shape: tuple[int, ...] | None = Field(
        None, description="input shape for `model` when the file's input has symbolic dimensions")
    space: str | None = Field(None, description="search space name (see `hwnat spaces list`)")
    arch: str | None = Field(None, description="architecture in the space's canonical string form")

    @model_validator(mode="after")
    def _one_source(self):
        if self.model is not None and (self.space is not None or self.arch is not None):
            raise ValueError("give either `model` or `space` + `arch`, not both")
        if self.model is None and (self.space is None or self.arch is None):
            raise ValueError("needs `model: PATH.onnx` or both `space` and `arch`")
        if self.input_shape is not None and self.model is None:
            raise ValueError("`input_shape` only applies to `model` entries (a space knows its input)")
        if self.input_shape is not None and any(d < 1 for d in self.input_shape):
            raise ValueError("`input_shape` dimensions must be positive")
        return self

    def source(self) -> dict:
        """What the entry measures, as recorded in results."""
        if self.model is not None:
            return {"model": self.model}
        return {"space": self.space, "arch": self.arch}


class Suite(BaseModel):
    """A benchmark suite. ``rounds`` interleaved passes are made over all entries (in a shuffled order
    per pass); each pass times every entry once with a fresh runtime session (warm-up, one timed round)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$", max_length=100)
    description: str = ""
    device: str = Field("cpu", description="device name or YAML path; `bench run --device` overrides it")
    rounds: int = Field(20, ge=3, le=1000, description="interleaved passes (= samples per entry)")
    shuffle: bool = Field(True, description="shuffle the entry order in every pass")
    seed: int = Field(0, description="seed of the shuffles")
    cooldown_s: float = Field(0.0, ge=0, le=600, description="sleep between two timed entries")
    max_wait_frac: float = Field(
        0.10, gt=0, le=1, description="local devices: a pass whose threads waited for a CPU (run queue) "
        "longer than this fraction of its wall time is contended (another process took the CPU)")
    max_busy_frac: float = Field(
        0.25, gt=0, le=1, description="local devices: a pass during which other processes used more than "
        "this fraction of the CPU capacity this process left free is contended (a busy neighbour slows "
        "the runtime through shared cores, caches and memory without preempting it)")
    contention_retries: int = Field(2, ge=0, le=20, description="re-time a contended pass this many times")
    contention_backoff_s: float = Field(0.25, ge=0, le=60, description="sleep before re-timing a contended pass")
    protocol: dict = Field(default_factory=dict, description="overrides of the device's timing protocol")
    ab_rounds: int = Field(
        60, ge=3, le=1000, description="pairs per entry in an A/B job (`bench ab`; `--rounds` overrides it): "
        "beside a CPU hog about 60 let the paired test tell a 10% slowdown from the 5% threshold")
    ab_runs: int = Field(
        20, ge=0, le=100000, description="calls per timing in an A/B job: a fixed count, so both halves of a "
        "pair do the same work whatever the load (0: the protocol's rule, e.g. as many as fit in min_round_s)")
    entries: list[SuiteEntry] = Field(min_length=1)

    @field_validator("protocol")
    @classmethod
    def _check_protocol(cls, v: dict) -> dict:
        fixed = [k for k in v if k in _PASS_FIXED]
        if fixed:
            raise ValueError(f"protocol.{fixed[0]} is set by the bench runner (one round per pass); "
                             "set the suite's top-level `rounds` instead")
        try:
            Protocol().merged(v)
        except ValidationError as e:
            raise ValueError(f"bad protocol override: {format_validation_error(e)}") from None
        return v

    @field_validator("entries")
    @classmethod
    def _unique_names(cls, v: list[SuiteEntry]) -> list[SuiteEntry]:
        seen: set[str] = set()
        for e in v:
            if e.name in seen:
                raise ValueError(f"duplicate entry name {e.name!r}")
            seen.add(e.name)
        return v

    def pass_protocol(self, device_protocol: Protocol) -> Protocol:
        """The protocol of one pass: the device's, with the suite's overrides, one round, no re-measure."""
        return device_protocol.merged({**self.protocol, "rounds": 1, "max_remeasure": 0})

    def ab_protocol(self, device_protocol: Protocol) -> Protocol:
        """The protocol of one half of an A/B pair: ``pass_protocol`` with ``ab_runs`` calls, unless the
        suite's protocol sets ``runs`` itself or ``ab_runs`` is 0."""
        p = self.pass_protocol(device_protocol)
        if self.ab_runs and "runs" not in self.protocol:
            p = p.merged({"runs": self.ab_runs})
        return p

    def sha256(self) -> str:
        """Digest of the suite's content (what is measured and how), independent of YAML formatting."""
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()


class LoadedSuite(BaseModel):
    """A suite and the file it came from (relative model paths resolve against ``base_dir``)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    suite: Suite
    path: Path | None = None

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path is not None else Path.cwd()

    def model_path(self, entry: SuiteEntry) -> Path:
        p = Path(entry.model).expanduser()
        return p if p.is_absolute() else self.base_dir / p


def suites_dir() -> Path:
    """``benchmarks/suites`` of the repository (suites shipped with hwnat)."""
    import hwnat

    return Path(hwnat.__file__).resolve().parent.parent / "benchmarks" / "suites"


def load_suite(name_or_path: str | Path) -> LoadedSuite:
    """Load a suite from a YAML path, or by name from ``benchmarks/suites`` (e.g. ``default``).

    Raises:
        BadInputError: missing file, bad YAML, unknown field or wrong type (names the file and field).
    """
    p = Path(name_or_path).expanduser()
    if not p.exists() and p.suffix not in (".yaml", ".yml") and "/" not in str(name_or_path):
        cand = suites_dir() / f"{name_or_path}.yaml"
        if cand.is_file():
            p = cand
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        shipped = sorted(q.stem for q in suites_dir().glob("*.yaml")) if suites_dir().is_dir() else []
        raise BadInputError(f"{p}: suite file not found" +
                            (f" (shipped suites: {', '.join(shipped)})" if shipped else "")) from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{p}: cannot read suite file: {e}") from None
    except yaml.YAMLError as e:
        raise BadInputError(f"{p}: not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{p}: expected a mapping with `name` and `entries` at the top level")
    try:
        suite = Suite(**data)
    except ValidationError as e:
        raise BadInputError(f"{p}: {format_validation_error(e)}") from None
    except TypeError as e:
        raise BadInputError(f"{p}: {e}") from None
    return LoadedSuite(suite=suite, path=p.resolve())
