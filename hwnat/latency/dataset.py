"""Latency datasets (DESIGN.md: CSV with an ``arch`` column and one column of milliseconds per device):
adding one measured value, with the file rewritten atomically (its permissions kept)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from hwnat._io import write_atomic
from hwnat.errors import BadInputError


def add_to_dataset(path: Path, arch: str, column: str, value_ms: float, *, replace: bool = False) -> str:
    """Put ``value_ms`` in row ``arch``, column ``column`` of a latency dataset CSV; returns ``"added"``
    (new row), ``"filled"`` (empty cell) or ``"replaced"``.

    The file (``arch`` + one column of milliseconds per device, DESIGN.md) is created with a header when
    absent; a missing column is added (empty for other rows). The whole file is rewritten to a temporary
    file next to it and renamed over it, so a crash never leaves half a file.

    Raises:
        BadInputError: unreadable file, no ``arch`` column, ragged rows, a duplicated arch row, or a
            value already there without ``replace``.
    """
    path = Path(path)
    header, rows = ["arch"], []
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
            table = list(csv.reader(io.StringIO(text)))
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise BadInputError(f"{path}: cannot read the dataset: {e}") from None
        table = [r for r in table if r]
        if table:
            header, rows = table[0], table[1:]
            if "arch" not in header:
                raise BadInputError(f"{path}: not a latency dataset: the header {header} has no 'arch' column")
            if len(set(header)) != len(header):
                raise BadInputError(f"{path}: the header {header} repeats a column")
            for i, r in enumerate(rows, 2):
                if len(r) != len(header):
                    raise BadInputError(f"{path}: row {i} has {len(r)} fields, the header has {len(header)}")
    if column not in header:
        header = [*header, column]
        rows = [[*r, ""] for r in rows]
    ai, ci = header.index("arch"), header.index(column)
    hits = [r for r in rows if r[ai] == arch]
    if len(hits) > 1:
        raise BadInputError(f"{path}: the architecture appears in {len(hits)} rows; fix the dataset first")
    cell = f"{value_ms:.6g}"
    if hits:
        row = hits[0]
        if row[ci].strip() and not replace:
            raise BadInputError(f"{path}: this architecture already has {column} = {row[ci]} ms; pass "
                                "--replace to overwrite it")
        action = "replaced" if row[ci].strip() else "filled"
        row[ci] = cell
    else:
        row = [""] * len(header)
        row[ai], row[ci] = arch, cell
        rows.append(row)
        action = "added"
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    write_atomic(path, buf.getvalue())
    return action
