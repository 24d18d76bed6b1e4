"""The archive of evaluated architectures and the search state file (both plain data, written atomically).

Every row of the archive is one architecture: canonical string, genome, the iteration that added it,
accuracy (percent) and how it was obtained, and every hardware column (latency per device and, with
``--confidence``, its upper bound; MFLOPs; millions of parameters). ``state.json`` holds the settings, the
archive, candidates selected but not yet evaluated, and the per-iteration history, so that the same command
resumes after Ctrl-C or ``kill -9`` without losing anything evaluated.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from hwnat._io import write_atomic
from hwnat.errors import BadInputError

FORMAT = "hwnat-search-state"
SCHEMA_VERSION = 1


class Archive:
    """Evaluated architectures, one dict per row, unique by canonical string."""

    def __init__(self, rows: list[dict] | None = None):
        self.rows: list[dict] = list(rows or [])
        self._index = {r["arch"]: i for i, r in enumerate(self.rows)}

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, arch: str) -> bool:
        return arch in self._index

    def add(self, row: dict) -> None:
        if row["arch"] in self._index:
            self.rows[self._index[row["arch"]]] = row
        else:
            self._index[row["arch"]] = len(self.rows)
            self.rows.append(row)

    def genomes(self) -> np.ndarray:
        return np.asarray([r["genome"] for r in self.rows], dtype=np.int64)

    def column(self, name: str) -> np.ndarray:
        return np.asarray([r[name] for r in self.rows], dtype=np.float64)

    def archs(self) -> list[str]:
        return [r["arch"] for r in self.rows]

    def to_csv(self, path: Path, columns: list[str]) -> None:
        """Write the rows (without genomes) with ``columns`` in that order, atomically."""
        write_csv(path, self.rows, columns)


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_fmt(r.get(c, "")) for c in columns])
    write_atomic(Path(path), buf.getvalue().encode())


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def save_state(path: Path, state: dict) -> None:
    """Write ``state.json`` atomically (a crash leaves the previous complete state)."""
    write_atomic(Path(path), json.dumps({"format": FORMAT, "schema_version": SCHEMA_VERSION, **state},
                                        indent=1, default=_plain).encode())


def _plain(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not plain data: {type(o).__name__}")


def load_state(path: Path) -> dict | None:
    """The state in ``path``, or None when there is none.

    Raises:
        BadInputError: a corrupt, truncated or foreign state file (names it).
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{path}: cannot read search state: {e}") from None
    except json.JSONDecodeError as e:
        raise BadInputError(f"{path}: corrupt search state (not valid JSON at line {e.lineno} column "
                            f"{e.colno}); remove it to start over or choose another --out") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise BadInputError(f"{path}: not an hwnat search state (field 'format' should be {FORMAT!r})")
    if d.get("schema_version") != SCHEMA_VERSION:
        raise BadInputError(f"{path}: field schema_version = {d.get('schema_version')!r}; this hwnat reads "
                            f"{SCHEMA_VERSION}")
    for k, t in (("settings", dict), ("archive", list), ("pending", list), ("history", list),
                 ("done_iteration", int)):
        if not isinstance(d.get(k), t):
            raise BadInputError(f"{path}: field {k!r} missing or not a {t.__name__}; corrupt search state")
    for i, r in enumerate(d["archive"]):
        if not isinstance(r, dict) or not isinstance(r.get("arch"), str) or not isinstance(r.get("genome"), list):
            raise BadInputError(f"{path}: archive[{i}] is malformed; corrupt search state")
    return d
