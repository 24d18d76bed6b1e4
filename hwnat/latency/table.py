"""Latency lookup tables (LUTs): per-device, per-space block latencies, stored as JSON.

File format (DESIGN.md): ``{"schema_version", "space", "device", "fingerprint", "protocol", "entries":
{block key: {median_ms, p10_ms, p90_ms, n, cv, ...}}}``. Files are written atomically (temp file +
rename) so an interrupted profile never leaves a half-written table, and profiling resumes from them.
Sums are vectorised through the space's slot scheme (``SearchSpace.slots``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwnat._io import read_json, write_atomic
from hwnat.errors import BadInputError
from hwnat.spaces import SearchSpace

SCHEMA_VERSION = 1
_CHUNK = 4096


@dataclass
class LatencyTable:
    """Block latencies of one space on one device.

    Attributes:
        space: search space name.
        device: device name.
        fingerprint: environment fingerprint of the device when profiled.
        protocol: the measurement protocol (plain data).
        entries: ``{block key: {"median_ms": ..., "p10_ms": ..., "p90_ms": ..., "n": ..., "cv": ...}}``.
    """

    space: str
    device: str
    fingerprint: dict = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)
    entries: dict[str, dict] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # ---- files ---------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"schema_version": self.schema_version, "space": self.space, "device": self.device,
                "fingerprint": self.fingerprint, "protocol": self.protocol, "entries": self.entries}

    def save(self, path: str | Path) -> Path:
        """Write atomically (a reader or a crash never sees a partial file)."""
        path = Path(path)
        write_atomic(path, json.dumps(self.to_dict(), indent=1, sort_keys=False).encode())
        return path

    @staticmethod
    def load(path: str | Path, space: str | None = None, device: str | None = None) -> LatencyTable:
        """Read and validate a table; with ``space``/``device`` given, refuse a table for another one.

        Raises:
            BadInputError: missing, truncated or corrupt file, wrong schema version, a missing field, a
                non-numeric entry, or a space/device mismatch (names the file and the field).
        """
        path = Path(path)
        data = read_json(path, "latency table")
        if not isinstance(data, dict):
            raise BadInputError(f"{path}: expected a JSON object with schema_version, space, device, entries")
        ver = data.get("schema_version")
        if ver != SCHEMA_VERSION:
            raise BadInputError(f"{path}: field schema_version = {ver!r}; this hwnat reads version "
                                f"{SCHEMA_VERSION}")
        for k in ("space", "device"):
            if not isinstance(data.get(k), str):
                raise BadInputError(f"{path}: field {k!r} missing or not a string")
        if space is not None and data["space"].replace("_", "-") != space.replace("_", "-"):
            raise BadInputError(f"{path}: table is for space {data['space']!r}, not {space!r}")
        if device is not None and data["device"] != device:
            raise BadInputError(f"{path}: table is for device {data['device']!r}, not {device!r}")
        entries = data.get("entries")
        if not isinstance(entries, dict):
            raise BadInputError(f"{path}: field 'entries' missing or not an object")
        for key, e in entries.items():
            if not isinstance(e, dict):
                raise BadInputError(f"{path}: entries[{key!r}] is not an object")
            v = e.get("median_ms")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise BadInputError(f"{path}: entries[{key!r}].median_ms = {v!r}; expected a number >= 0")
        return LatencyTable(data["space"], data["device"], data.get("fingerprint") or {},
                            data.get("protocol") or {}, entries, ver)

    # ---- lookups -------------------------------------------------------------------------------
    def slot_vector(self, space: SearchSpace, field_name: str = "median_ms") -> np.ndarray:
        """Latency (ms) of every slot of ``space``; NaN where the table lacks the block, 0 for free slots.

        Read from ``entries`` on every call (one dict access per distinct block of the space), so an entry
        edited in place, added or removed is always seen; nothing is cached on the table.
        """
        keys, index = space.slot_keys()
        vals = np.empty(len(keys) + 1)
        vals[-1] = 0.0  # index -1: a free slot
        for i, k in enumerate(keys):
            e = self.entries.get(k)
            vals[i] = float(e[field_name]) if e is not None else np.nan
        return vals[index]

    def sum_many(self, space: SearchSpace, genomes: np.ndarray, field_name: str = "median_ms") -> np.ndarray:
        """Vectorised table sum (ms) of many genomes ``(n, g)``.

        Raises:
            BadInputError: an architecture needs a block the table lacks (names one key and how many).
        """
        vec = self.slot_vector(space, field_name)
        genomes = np.asarray(genomes)
        # chunks keep the (rows x slots) index matrix in cache: ~3x faster than one big gather
        out = np.concatenate([vec[space.slots(genomes[i:i + _CHUNK])].sum(axis=1)
                              for i in range(0, len(genomes), _CHUNK)]) if len(genomes) else np.zeros(0)
        if np.isnan(out).any():
            ids = space.slots(genomes[np.isnan(out)])
            missing = sorted({space.slot_blocks()[i].key for i in np.unique(ids[np.isnan(vec[ids])])})
            raise BadInputError(
                f"latency table for {self.space} on {self.device} lacks {len(missing)} block(s) these "
                f"architectures need, e.g. {missing[0]}; profile them with `hwnat profile` (e.g. add the "
                "architectures' resolution with --resolution)")
        return out

    def stage_sums(self, space: SearchSpace, genomes: np.ndarray, field_name: str = "median_ms") -> np.ndarray:
        """Per-slot-column latencies ``(n, m)`` (ms): the table sum split by position in the network."""
        return self.slot_vector(space, field_name)[space.slots(genomes)]

    def sum(self, space: SearchSpace, arch) -> float:
        """Table latency (ms) of one architecture."""
        return float(self.sum_many(space, space.encode(arch)[None, :])[0])


def default_table_path(device: str, space: str) -> Path:
    """``latency_tables/<device>/<space>.json`` under the current directory."""
    return Path("latency_tables") / device / f"{space}.json"


def find_table(device: str, space: str) -> Path | None:
    """A table for (device, space): the current directory's ``latency_tables/`` first, then the tables
    shipped with the package. None when there is none."""
    import hwnat

    pkg = Path(hwnat.__file__).resolve().parent
    for root in (Path("latency_tables"), pkg.parent / "latency_tables", pkg / "_data" / "latency_tables"):
        p = root / device / f"{space}.json"
        if p.is_file():
            return p
    return None
