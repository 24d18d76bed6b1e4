"""Bench result files (JSON with every raw sample, the protocol and the fingerprint) and the baseline
store: a directory of accepted results, one per device fingerprint, suite and git commit.

Baseline layout (plain files; no index to get out of step)::

    DIR/<device>-<fingerprint key>/<suite>/<commit>.json

The fingerprint key is a short digest of the comparable fingerprint fields (``COMPARABLE_FIELDS``), so a
runner whose CPU, runtime version or thread count changes starts a new series instead of comparing
against results it cannot be compared with.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hwnat._io import read_json, write_atomic
from hwnat.devices.spec import format_validation_error
from hwnat.errors import BadInputError
from hwnat.measure.fingerprint import COMPARABLE_FIELDS

FORMAT = "hwnat-bench-result"
SCHEMA_VERSION = 1


class SuiteInfo(BaseModel):
    """Which suite a result measured."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    sha256: str | None = None
    path: str | None = None


CLOCKS = ("wall", "cpu")


def _on_clock(name: str, wall: list, cpu: list, clock: str) -> list[list[float]]:
    if clock not in CLOCKS:
        raise BadInputError(f"--clock: expected one of {', '.join(CLOCKS)}, got {clock!r}")
    if clock == "wall":
        return wall
    if len(cpu) != len(wall):
        raise BadInputError(f"entry {name!r}: the result has no CPU-clock samples (recorded for local "
                            "devices by this hwnat); use --clock wall")
    return cpu


def _check_rounds(v: list[list[float]]) -> list[list[float]]:
    """Every round has samples, every sample is a positive number of ms."""
    for i, r in enumerate(v):
        if not r:
            raise ValueError(f"round {i} has no samples")
        if not all(math.isfinite(x) and x > 0 for x in r):
            raise ValueError(f"round {i} has a sample that is not a positive number of ms")
    return v


class EntryResult(BaseModel):
    """One entry's raw samples: ``rounds_ms[i]`` are the samples (ms) of pass ``i``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    source: dict = Field(default_factory=dict)
    model_sha256: str | None = None
    input_shape: list[int] = Field(default_factory=list)
    rounds_ms: list[list[float]]
    round_info: list[dict] = Field(default_factory=list)
    #: the same calls on this process's CPU clock (local devices; ``bench.run.DualClock``)
    cpu_rounds_ms: list[list[float]] = Field(default_factory=list)

    @field_validator("rounds_ms")
    @classmethod
    def _positive(cls, v: list[list[float]]) -> list[list[float]]:
        return _check_rounds(v)

    def on_clock(self, clock: str) -> list[list[float]]:
        """The rounds on the wall clock (``"wall"``) or the CPU clock (``"cpu"``).

        Raises:
            BadInputError: no CPU-clock samples (a remote device, or a result of an older hwnat).
        """
        return _on_clock(self.name, self.rounds_ms, self.cpu_rounds_ms, clock)

    def contended_rounds(self) -> list[int]:
        """Passes during which other processes preempted the runtime or kept the CPUs busy (``bench.contention``)."""
        return [i for i, info in enumerate(self.round_info) if info.get("contended")]

    def clean_rounds_ms(self, clock: str = "wall") -> list[list[float]]:
        """The rounds that were not contended."""
        bad = set(self.contended_rounds())
        return [r for i, r in enumerate(self.on_clock(clock)) if i not in bad]

    def load_scores(self, include_contended: bool = False) -> list[float]:
        """Per round, the larger of its ``wait_frac`` and ``busy_frac`` readings (rounds without readings
        are skipped); only the rounds ``clean_rounds_ms`` keeps unless ``include_contended``."""
        bad = set() if include_contended else set(self.contended_rounds())
        return [max(info.get("wait_frac", 0.0), info.get("busy_frac", 0.0))
                for i, info in enumerate(self.round_info)
                if i not in bad and ("wait_frac" in info or "busy_frac" in info)]

    def throttled_rounds(self) -> list[int]:
        """Passes during which the thermal guard saw throttling or a frequency drop."""
        return [i for i, info in enumerate(self.round_info) if info.get("throttled")]

    def median_ms(self) -> float:
        import numpy as np

        return float(np.median([np.median(r) for r in self.rounds_ms]))


class _Job(BaseModel):
    """What every bench job records besides its entries: where, how, when, and whether it finished."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: Literal[1]
    device: str
    fingerprint: dict
    protocol: dict
    rounds: int
    complete: bool = True
    git_commit: str | None = None
    created_at: str | None = None
    wall_s: float | None = None
    load_avg: dict | None = None
    #: where the result was read from (not stored)
    source: str = Field("<memory>", exclude=True)


class BenchResult(_Job):
    """A ``bench run`` result file."""

    format: Literal["hwnat-bench-result"]
    suite: SuiteInfo
    entries: list[EntryResult]

    def summary(self) -> dict:
        """Metadata without samples (shown in reports)."""
        return {"path": self.source, "suite": self.suite.name, "device": self.device,
                "git_commit": self.git_commit, "created_at": self.created_at, "rounds": self.rounds,
                "complete": self.complete, "fingerprint_key": fingerprint_key(self.fingerprint),
                "load_avg": self.load_avg}


def result_from_dict(data, source: str = "<memory>") -> BenchResult:
    """Validate plain data as a bench result.

    Raises:
        BadInputError: not a bench result (foreign JSON), an unsupported schema version, or a bad field.
    """
    return _validated(BenchResult, data, source, FORMAT, "bench result", "hwnat bench run")


def _validated(model, data, source: str, fmt: str, what: str, writer: str):
    """``model(**data)`` after checking the format tag and the schema version; errors name ``source``."""
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise BadInputError(f"{source}: not an hwnat {what} (expected a JSON object with "
                            f"\"format\": \"{fmt}\", as written by `{writer}`)")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise BadInputError(f"{source}: {what} schema_version {data.get('schema_version')!r} is not "
                            f"supported (this hwnat reads {SCHEMA_VERSION})")
    try:
        return model(**{**data, "source": source})
    except ValidationError as e:
        raise BadInputError(f"{source}: {format_validation_error(e)}") from None


def load_result(path: str | Path) -> BenchResult:
    """Read a result file written by ``bench run``.

    Raises:
        BadInputError: missing/unreadable file, truncated or invalid JSON, foreign JSON, bad fields.
    """
    p = Path(path)
    return result_from_dict(read_json(p, "result file"), str(p))


def save_result(data: dict, path: str | Path) -> Path:
    """Write a result (plain data) atomically as indented JSON."""
    text = json.dumps(data, indent=1, allow_nan=False)
    write_atomic(Path(path), text.encode())
    return Path(path)


# ---------------------------------------------------------------------------------------------------
# A/B results (`bench ab`): the baseline's and the candidate's files timed in pairs in one job
# ---------------------------------------------------------------------------------------------------
AB_FORMAT = "hwnat-bench-ab-result"


class ABSuiteSide(BaseModel):
    """Which suite one side of an A/B job came from."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    suite: SuiteInfo


class ABModel(BaseModel):
    """One side's model of an A/B entry."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    source: dict = Field(default_factory=dict)
    model_sha256: str | None = None
    input_shape: list[int] = Field(default_factory=list)


class ABEntry(BaseModel):
    """One entry of an A/B job: ``baseline_rounds_ms[k]`` and ``candidate_rounds_ms[k]`` are the samples
    (ms) of pass ``k``'s pair, timed back to back; ``pair_info[k]`` says in which order and under what load.
    An entry of one suite only has no pairs (and ``None`` for the other side)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    baseline: ABModel | None = None
    candidate: ABModel | None = None
    baseline_rounds_ms: list[list[float]] = Field(default_factory=list)
    candidate_rounds_ms: list[list[float]] = Field(default_factory=list)
    pair_info: list[dict] = Field(default_factory=list)
    baseline_cpu_rounds_ms: list[list[float]] = Field(default_factory=list)
    candidate_cpu_rounds_ms: list[list[float]] = Field(default_factory=list)

    @field_validator("baseline_rounds_ms", "candidate_rounds_ms")
    @classmethod
    def _positive(cls, v: list[list[float]]) -> list[list[float]]:
        return _check_rounds(v)

    def on_clock(self, side: str, clock: str) -> list[list[float]]:
        """One side's rounds on the wall or the CPU clock (see ``EntryResult.on_clock``)."""
        return _on_clock(self.name, getattr(self, f"{side}_rounds_ms"), getattr(self, f"{side}_cpu_rounds_ms"),
                         clock)


class ABResult(_Job):
    """A ``bench ab`` result file."""

    format: Literal["hwnat-bench-ab-result"]
    baseline: ABSuiteSide
    candidate: ABSuiteSide
    entries: list[ABEntry]

    def side_summary(self, side: str) -> dict:
        """Metadata of one side (shown in reports)."""
        suite = getattr(self, side).suite
        return {"path": f"{self.source} ({side})", "suite": suite.name, "suite_path": suite.path,
                "device": self.device, "git_commit": self.git_commit, "created_at": self.created_at,
                "rounds": self.rounds, "complete": self.complete,
                "fingerprint_key": fingerprint_key(self.fingerprint), "load_avg": self.load_avg}


def ab_result_from_dict(data, source: str = "<memory>") -> ABResult:
    """Validate plain data as an A/B result.

    Raises:
        BadInputError: not an A/B result, an unsupported schema version, or a bad field.
    """
    return _validated(ABResult, data, source, AB_FORMAT, "A/B bench result", "hwnat bench ab")


def load_ab_result(path: str | Path) -> ABResult:
    """Read a result file written by ``bench ab``.

    Raises:
        BadInputError: missing/unreadable file, truncated or invalid JSON, foreign JSON, bad fields.
    """
    p = Path(path)
    return ab_result_from_dict(read_json(p, "result file"), str(p))


# ---------------------------------------------------------------------------------------------------
# baselines
# ---------------------------------------------------------------------------------------------------
def fingerprint_key(fp: dict) -> str:
    """Short digest of the comparable fingerprint fields (equal keys = comparable environments)."""
    sub = {k: fp.get(k) for k in COMPARABLE_FIELDS}
    return hashlib.sha256(json.dumps(sub, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-.")[:60] or "x"


class Baseline(BaseModel):
    """One stored baseline."""

    model_config = ConfigDict(frozen=True)

    path: Path
    suite: str
    device: str
    fingerprint_key: str
    commit: str
    saved_at: str
    created_at: str | None
    entries: int

    def row(self) -> dict:
        return {**self.model_dump(), "path": str(self.path)}


def baseline_path(store: Path, result: BenchResult, commit: str) -> Path:
    return (Path(store) / f"{_slug(result.device)}-{fingerprint_key(result.fingerprint)}"
            / _slug(result.suite.name) / f"{_slug(commit)}.json")


def save_baseline(result_path: str | Path, store: str | Path, commit: str | None = None,
                  force: bool = False) -> Baseline:
    """Copy a result into the baseline store under its device fingerprint, suite and commit.

    ``commit`` defaults to the one the result recorded. An incomplete run is refused.

    Raises:
        BadInputError: bad result, no commit known, incomplete run, or the baseline exists (``force``
            replaces it).
    """
    result = load_result(result_path)
    commit = commit or result.git_commit
    if not commit:
        raise BadInputError(f"{result_path}: the result records no git commit; pass --commit SHA")
    if not result.complete:
        raise BadInputError(f"{result_path}: the run did not finish; an incomplete result cannot be a "
                            "baseline")
    dest = baseline_path(Path(store), result, commit)
    if dest.exists() and not force:
        raise BadInputError(f"{dest}: a baseline for commit {commit} already exists (use --force)")
    data = json.loads(Path(result_path).read_text())
    data["baseline"] = {"commit": commit, "saved_at": datetime.now(timezone.utc).isoformat(
        timespec="seconds")}
    save_result(data, dest)
    return _describe(dest, data)


def _describe(path: Path, data: dict) -> Baseline:
    b = data.get("baseline") or {}
    return Baseline(path=path, suite=data["suite"]["name"], device=data["device"],
                    fingerprint_key=fingerprint_key(data["fingerprint"]), commit=str(b.get("commit", "?")),
                    saved_at=str(b.get("saved_at", "")), created_at=data.get("created_at"),
                    entries=len(data.get("entries", [])))


def list_baselines(store: str | Path, suite: str | None = None, device: str | None = None,
                   fp_key: str | None = None, commit: str | None = None) -> list[Baseline]:
    """Baselines in a store, newest first, optionally filtered. Unreadable files are skipped.

    Raises:
        BadInputError: the store directory does not exist.
    """
    store = Path(store)
    if not store.is_dir():
        raise BadInputError(f"{store}: baseline directory not found")
    out = []
    for p in store.glob("*/*/*.json"):
        try:
            data = json.loads(p.read_text())
            if data.get("format") != FORMAT:
                continue
            b = _describe(p, data)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if ((suite and b.suite != suite) or (device and b.device != device)
                or (fp_key and b.fingerprint_key != fp_key)
                or (commit and not b.commit.startswith(commit))):
            continue
        out.append(b)
    out.sort(key=lambda b: (b.saved_at, b.created_at or ""), reverse=True)
    return out


def latest_baseline_for(store: str | Path, candidate: BenchResult) -> Baseline:
    """The newest baseline of the candidate's suite measured in a comparable environment.

    Raises:
        BadInputError: none found (the message says what exists for the suite).
    """
    key = fingerprint_key(candidate.fingerprint)
    found = list_baselines(store, suite=candidate.suite.name, fp_key=key)
    if found:
        return found[0]
    others = list_baselines(store, suite=candidate.suite.name)
    extra = (f"; baselines of this suite exist for other environments: "
             f"{', '.join(sorted({f'{b.device}-{b.fingerprint_key}' for b in others}))}") if others else ""
    raise BadInputError(f"{store}: no baseline for suite {candidate.suite.name!r} on "
                        f"{candidate.device}-{key}{extra}")
